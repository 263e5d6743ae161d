"""How a client hands in its update: in plaintext to the coordinator, or as sealed
Shamir shares to the aggregators plus a receipt to the coordinator."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Mapping
from typing import Any, Protocol

import httpx
import numpy as np

from veilfl.auth.admission import ADMISSION_HEADER
from veilfl.auth.identity import Identity
from veilfl.auth.signed_request import aggregator_audience
from veilfl.client.peer import Peer, RetryPolicy, error_message
from veilfl.client.signing import SigningAuth, for_round
from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import (
    AuthenticationError,
    ConfigurationError,
    ProtocolError,
    TransportError,
)
from veilfl.keyfiles import PublicKeyFile
from veilfl.ml.learner import LocalUpdate
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan, privatize
from veilfl.protocol.messages import UpdateHeader
from veilfl.secagg.client_shares import SealedShare, seal_update
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.tensors import flatten, spec_of, unflatten
from veilfl.wire.tensor_codec import encode_weights

__all__ = [
    "PlaintextUploader",
    "SecureUploader",
    "Uploader",
    "check_aggregator_fingerprints",
    "check_run_before_enrolling",
]

logger = logging.getLogger(__name__)
BINARY = "application/octet-stream"


class Uploader(Protocol):
    """Sends one round's update; returns the coordinator's answer (None: not sent)."""

    description: str

    async def send(
        self,
        *,
        client_id: str,
        round_id: int,
        base_version: int,
        update: LocalUpdate,
        privacy: ClientPrivacyPlan | None,
        weight: float | None = None,
        admission: str | None = None,
    ) -> httpx.Response | None:
        """Deliver the update (clipped and noised first, if the round's plan says so);
        ``weight`` is a buffered update's staleness weight, ``admission`` the
        coordinator's admission to the round (for the aggregators)."""
        ...

    async def close(self) -> None:
        """Release connections."""


def check_aggregator_fingerprints(
    run: Mapping[str, Any], expected: Mapping[int, str] | None
) -> list[PublicKeyFile]:
    """The aggregators' published keys in index order, each checked against its
    expected fingerprint (when ``expected`` is given).

    Raises:
        ConfigurationError: naming the first aggregator whose key differs.
    """
    secure = run.get("secure") or {}
    published = sorted(secure.get("aggregators", []), key=lambda a: int(a["index"]))
    keys = [PublicKeyFile.from_json(a) for a in published]
    if expected is not None:
        for entry, key in zip(published, keys, strict=True):
            wanted = expected.get(int(entry["index"]))
            if wanted != key.fingerprint:
                raise ConfigurationError(
                    f"Aggregator {entry['index']}'s published key has fingerprint "
                    f"{key.fingerprint}, not the expected {wanted}; refusing to send shares."
                )
    return keys


def check_run_before_enrolling(
    run: Mapping[str, Any],
    *,
    model_name: str | None,
    fingerprints: Mapping[int, str] | None,
) -> None:
    """Checks on the public run description that must pass before a client spends its
    enrollment token: the model it trains, and the aggregators' key fingerprints.

    Raises:
        ConfigurationError: if the run trains another model, pinned fingerprints are
            given for a run without secure aggregation, or a published key differs.
    """
    served = run.get("model_name")
    if model_name is not None and served is not None and served != model_name:
        flag = "--learner" if ":" in str(served) else "--model"
        raise ConfigurationError(
            f"The coordinator's run trains the model {served}, not {model_name}; start this "
            f"client with {flag} {served}."
        )
    if fingerprints and not run.get("secure"):
        raise ConfigurationError(
            "Aggregator fingerprints were given, but the coordinator's run does not use "
            "secure aggregation; check the coordinator URL, or drop --aggregator-fingerprint."
        )
    if run.get("secure"):
        check_aggregator_fingerprints(run, fingerprints)


class PlaintextUploader:
    """The update's tensors go to the coordinator as safetensors bytes."""

    description = "plaintext FedAvg"

    def __init__(self, coordinator: Peer) -> None:
        self._coordinator = coordinator
        self._csprng = CsprngStream()

    async def send(
        self,
        *,
        client_id: str,
        round_id: int,
        base_version: int,
        update: LocalUpdate,
        privacy: ClientPrivacyPlan | None,
        weight: float | None = None,
        admission: str | None = None,
    ) -> httpx.Response | None:
        """Upload the delta (privatized under local DP) with its sample count and loss
        (a buffered update's weight is recomputed by the coordinator)."""
        delta = update.delta
        if privacy is not None:
            spec = spec_of(delta)
            private = await asyncio.to_thread(
                privatize, flatten(delta, spec), plan=privacy, rng=self._csprng
            )
            delta = unflatten(private.vector.astype(np.float32), spec)
        header = UpdateHeader(
            client_id=client_id,
            round_id=round_id,
            base_version=base_version,
            num_samples=update.num_samples,
            loss=update.mean_loss,
        )
        body = await asyncio.to_thread(encode_weights, delta, metadata=header.to_metadata())
        return await self._coordinator.request(
            "POST",
            f"/v1/rounds/{round_id}/updates",
            content=body,
            headers={"Content-Type": BINARY},
            expect=(202,),
            extensions=for_round(round_id),
        )

    async def close(self) -> None:
        """Nothing to release."""


class SecureUploader:
    """Share j goes, HPKE-sealed, to aggregator j; the coordinator gets a receipt.

    Args:
        coordinator: The coordinator.
        run: The run description from the coordinator (with its ``secure`` block).
        identity: The client's key, which signs every share upload.
        expected_fingerprints: Aggregator index to expected key fingerprint.
        verify: How to verify the aggregators' TLS certificates.
        transport: An httpx transport for the aggregators (tests).
    """

    def __init__(
        self,
        coordinator: Peer,
        run: Mapping[str, Any],
        *,
        identity: Identity,
        expected_fingerprints: Mapping[int, str] | None,
        verify: ssl.SSLContext | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        secure = run["secure"]
        self._coordinator = coordinator
        self._run_id = str(run["run_id"])
        self._config = SecureAggregationConfig(**secure["config"])
        published = sorted(secure["aggregators"], key=lambda a: int(a["index"]))
        keys = check_aggregator_fingerprints(run, expected_fingerprints)
        if expected_fingerprints is None:
            logger.warning(
                "aggregator keys are taken from the coordinator unverified; pass the "
                "aggregators' fingerprints to detect a substituted key"
            )
        self._public_keys = [k.key for k in keys]
        retry = RetryPolicy(max_attempts=3, initial_backoff_s=0.2, timeout_s=60.0)
        self._clients = [
            httpx.AsyncClient(
                base_url=str(a["url"]),
                timeout=retry.timeout_s,
                transport=transport,
                verify=verify,
                auth=SigningAuth(identity, aggregator_audience(int(a["index"]), self._run_id)),
            )
            for a in published
        ]
        self._aggregators = [Peer(c, retry) for c in self._clients]
        self._csprng = CsprngStream()
        self.description = (
            f"secure aggregation, {self._config.threshold} of "
            f"{self._config.num_aggregators} aggregators"
        )

    async def send(
        self,
        *,
        client_id: str,
        round_id: int,
        base_version: int,
        update: LocalUpdate,
        privacy: ClientPrivacyPlan | None,
        weight: float | None = None,
        admission: str | None = None,
    ) -> httpx.Response | None:
        """Clip (and noise) under DP, seal and upload the shares (with the buffered
        update's staleness weight inside, if any) with the round's admission; report
        the aggregators that took them.

        Raises:
            ProtocolError: if the coordinator gave no admission to the round.
            AuthenticationError: if an aggregator refuses the client (401 or 403):
                retraining cannot help.
        """
        if not admission:
            raise ProtocolError(
                f"The coordinator gave no admission to round {round_id}; the aggregators "
                "would refuse the shares."
            )
        flat = flatten(update.delta, spec_of(update.delta))
        within_bound = False
        if privacy is not None:
            private = await asyncio.to_thread(privatize, flat, plan=privacy, rng=self._csprng)
            flat, within_bound = private.vector.astype(np.float32), private.within_bound
        sealed = await asyncio.to_thread(
            seal_update,
            flat,
            num_samples=update.num_samples,
            loss=update.mean_loss,
            config=self._config,
            public_keys=self._public_keys,
            run_id=self._run_id,
            round_id=round_id,
            client_id=client_id,
            rng=self._csprng,
            privacy=privacy,
            within_bound=within_bound,
            weight=weight,
        )
        results = await asyncio.gather(
            *(self._send_share(round_id, share, admission) for share in sealed)
        )
        acknowledged = [index for index in results if index is not None]
        if len(acknowledged) < self._config.threshold:
            return None
        return await self._coordinator.request(
            "POST",
            f"/v1/rounds/{round_id}/receipts",
            json={
                "client_id": client_id,
                "base_version": base_version,
                "aggregators": acknowledged,
            },
            expect=(202,),
            extensions=for_round(round_id),
        )

    async def _send_share(self, round_id: int, share: SealedShare, admission: str) -> int | None:
        peer = self._aggregators[share.aggregator_index - 1]
        try:
            response = await peer.request(
                "POST",
                f"/v1/rounds/{round_id}/shares",
                content=share.envelope,
                headers={"Content-Type": BINARY, ADMISSION_HEADER: admission},
                expect=(202,),
                extensions=for_round(round_id),
            )
        except TransportError as exc:
            logger.warning("aggregator %d unreachable: %s", share.aggregator_index, exc)
            return None
        if response.status_code in (401, 403):
            raise AuthenticationError(
                f"Aggregator {share.aggregator_index} at {peer.base_url} refused this client's "
                f"share (HTTP {response.status_code}: {error_message(response)}); it serves "
                "another run or another coordinator. Restart the aggregators against this "
                "coordinator, then this client."
            )
        if response.status_code != 202:
            logger.warning(
                "aggregator %d refused the share (HTTP %d): %s",
                share.aggregator_index,
                response.status_code,
                response.text[:200],
            )
            return None
        return share.aggregator_index

    async def close(self) -> None:
        """Close the aggregator connections."""
        for client in self._clients:
            await client.aclose()
