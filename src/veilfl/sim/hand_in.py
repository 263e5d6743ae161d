"""How a simulated client hands in its update: the shared hand-in pipeline
(:func:`veilfl.protocol.hand_in.hand_in`), driven by function calls."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import ProtocolError
from veilfl.ml.learner import LocalUpdate
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.hand_in import (
    CoordinatorAnswer,
    HandInAnswer,
    HandInContext,
    HandInRequest,
    HandInResult,
    SendReceipt,
    SendShares,
    SendUpdate,
    SharesTaken,
    hand_in,
)
from veilfl.sim.in_process_aggregators import InProcessAggregators
from veilfl.tensors import TensorSpec
from veilfl.wire.tensor_codec import decode_weights, encode_weights

__all__ = ["PhaseTimings", "SimulatedHandIn"]


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


@dataclass
class SimulatedHandIn:
    """A simulated client's way to the coordinator (and the aggregators).

    Attributes:
        core: The coordinator core.
        spec: The model's tensors.
        aggregators: The in-process aggregators (secure only).
        through_wire: Encode and decode plaintext updates with the wire codec.
        timings: Where the time goes.
        policy: What the simulated clients accept (the simulators pass the policy
            that accepts their own configuration, :meth:`ClientPolicy.accepting`).
    """

    core: Coordinator
    spec: TensorSpec
    aggregators: InProcessAggregators | None = None
    through_wire: bool = False
    timings: PhaseTimings = field(default_factory=PhaseTimings)
    csprng: CsprngStream = field(default_factory=CsprngStream)
    policy: ClientPolicy = field(default_factory=ClientPolicy)

    def deliver(self, update: LocalUpdate, *, context: HandInContext, now: float) -> HandInResult:
        """Hand in one update through the shared pipeline."""
        flow = hand_in(
            update.delta,
            num_samples=update.num_samples,
            loss=update.mean_loss,
            evaluation=update.evaluation,
            context=context,
            rng=self.csprng,
            policy=self.policy,
        )
        started = time.perf_counter()
        request = next(flow)
        self.timings.protection += time.perf_counter() - started
        while True:
            answer = self._perform(request, now=now)
            started = time.perf_counter()
            try:
                request = flow.send(answer)
            except StopIteration as stop:
                result: HandInResult = stop.value
                return result
            finally:
                self.timings.protection += time.perf_counter() - started

    def _perform(self, request: HandInRequest, *, now: float) -> HandInAnswer:
        if isinstance(request, SendShares):
            assert self.aggregators is not None
            started = time.perf_counter()
            taken = self.aggregators.upload(request.round_id, request.client_id, request.shares)
            self.timings.transfer += time.perf_counter() - started
            return SharesTaken(taken)
        started = time.perf_counter()
        try:
            if isinstance(request, SendReceipt):
                accepted = self.core.record_receipt(request.header, now=now)
            else:
                assert isinstance(request, SendUpdate)
                delta = request.delta
                if self.through_wire:
                    wire_started = time.perf_counter()
                    body = encode_weights(delta, metadata=request.header.to_metadata())
                    delta, _ = decode_weights(body, spec=self.spec)
                    self.timings.transfer += time.perf_counter() - wire_started
                accepted = self.core.submit_plaintext_update(request.header, delta, now=now)
        except ProtocolError as exc:
            return CoordinatorAnswer(accepted=False, refusal=str(exc))
        finally:
            self.timings.aggregation += time.perf_counter() - started
        return CoordinatorAnswer(accepted=True, duplicate=not accepted)
