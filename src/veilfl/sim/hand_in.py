"""How a simulated client hands in its update, for both simulators.

Privatize under DP (clip, local noise), then either seal Shamir shares for the
in-process aggregators and hand the coordinator a receipt, or send the update in
plaintext (optionally through the wire codec, to count its cost).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from veilfl.crypto.csprng import CsprngStream
from veilfl.ml.learner import LocalUpdate
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan, privatize
from veilfl.protocol.messages import UpdateHeader
from veilfl.secagg.client_shares import seal_update
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.sim.in_process_aggregators import InProcessAggregators
from veilfl.tensors import TensorSpec, Weights, flatten, unflatten
from veilfl.wire.tensor_codec import decode_weights, encode_weights

__all__ = ["HandIn", "PhaseTimings"]


@dataclass
class PhaseTimings:
    """Seconds spent per phase over a whole simulation.

    ``protection`` is the clients' DP and secure-aggregation work (clip, noise, encode,
    share, seal); ``aggregation`` includes the aggregators' and the coordinator's work.
    """

    training: float = 0.0
    protection: float = 0.0
    transfer: float = 0.0
    aggregation: float = 0.0
    evaluation: float = 0.0


class _Core(Protocol):
    def submit_plaintext_update(
        self, header: UpdateHeader, delta: Weights, *, now: float
    ) -> bool: ...

    def record_share_upload(self, header: UpdateHeader, *, now: float) -> bool: ...


@dataclass
class HandIn:
    """A simulated client's way to the coordinator (and the aggregators).

    Attributes:
        spec: The model's tensors.
        secure: Secure-aggregation parameters, or None for plaintext.
        aggregators: The in-process aggregators (secure only).
        through_wire: Encode and decode plaintext updates with the wire codec.
        timings: Where the time goes.
    """

    spec: TensorSpec
    secure: SecureAggregationConfig | None = None
    aggregators: InProcessAggregators | None = None
    through_wire: bool = False
    timings: PhaseTimings = field(default_factory=PhaseTimings)
    csprng: CsprngStream = field(default_factory=CsprngStream)

    def deliver(
        self,
        core: _Core,
        *,
        client_id: str,
        round_id: int,
        base_version: int,
        update: LocalUpdate,
        privacy: ClientPrivacyPlan | None,
        now: float,
        weight: float | None = None,
    ) -> bool:
        """Hand in one update; return whether the coordinator counted it (False for a
        duplicate, or when too few aggregators took the shares)."""
        flat = flatten(update.delta, self.spec)
        within_bound = False
        started = time.perf_counter()
        if privacy is not None:
            private = privatize(flat, plan=privacy, rng=self.csprng)
            flat, within_bound = private.vector.astype(np.float32), private.within_bound
        if self.aggregators is not None:
            assert self.secure is not None
            sealed = seal_update(
                flat,
                num_samples=update.num_samples,
                loss=update.mean_loss,
                config=self.secure,
                public_keys=self.aggregators.public_keys,
                run_id="simulation",
                round_id=round_id,
                client_id=client_id,
                rng=self.csprng,
                privacy=privacy,
                within_bound=within_bound,
                weight=weight,
            )
            self.timings.protection += time.perf_counter() - started
            started = time.perf_counter()
            acknowledged = self.aggregators.upload(round_id, client_id, sealed)
            self.timings.transfer += time.perf_counter() - started
            if len(acknowledged) < self.secure.threshold:
                return False
            receipt = UpdateHeader(
                client_id=client_id,
                round_id=round_id,
                base_version=base_version,
                aggregators=acknowledged,
            )
            started = time.perf_counter()
            counted = core.record_share_upload(receipt, now=now)
            self.timings.aggregation += time.perf_counter() - started
            return counted
        self.timings.protection += time.perf_counter() - started
        header = UpdateHeader(
            client_id=client_id,
            round_id=round_id,
            base_version=base_version,
            num_samples=update.num_samples,
            loss=update.mean_loss,
        )
        delta = update.delta if privacy is None else unflatten(flat, self.spec)
        if self.through_wire:
            started = time.perf_counter()
            body = encode_weights(delta, metadata=header.to_metadata())
            delta, _ = decode_weights(body, spec=self.spec)
            self.timings.transfer += time.perf_counter() - started
        started = time.perf_counter()
        counted = core.submit_plaintext_update(header, delta, now=now)
        self.timings.aggregation += time.perf_counter() - started
        return counted
