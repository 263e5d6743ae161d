"""How the HTTP client performs the hand-in pipeline's requests.

The pipeline itself (:func:`veilfl.protocol.hand_in.hand_in`) is shared with the
simulators; this module only moves its requests over HTTP: shares to the aggregators
(concurrently, each signed and carrying the round's admission), receipts and plaintext
updates to the coordinator. CPU work between requests runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import httpx

from veilfl.auth.admission import ADMISSION_HEADER
from veilfl.auth.identity import Identity
from veilfl.auth.signed_request import aggregator_audience
from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import AuthenticationError, ConfigurationError, TransportError
from veilfl.ml.learner import LocalUpdate
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.hand_in import (
    CoordinatorAnswer,
    HandInAnswer,
    HandInContext,
    HandInFlow,
    HandInRequest,
    HandInResult,
    SendReceipt,
    SendShares,
    SharesTaken,
    hand_in,
)
from veilfl.protocol.messages import RunInfo
from veilfl.secagg.aggregator_policy import AggregatorPolicy
from veilfl.secagg.contribution import SealedShare
from veilfl.transport.aggregator_policies import fetch_aggregator_policies
from veilfl.transport.peer import Peer, RetryPolicy, error_message, raise_for_status
from veilfl.transport.signing import SigningAuth, for_round
from veilfl.wire.tensor_codec import encode_weights

__all__ = ["HttpDelivery", "check_run_before_enrolling"]

logger = logging.getLogger(__name__)
BINARY = "application/octet-stream"


async def check_run_before_enrolling(
    run: RunInfo,
    *,
    model_name: str | None,
    policy: ClientPolicy,
    verify: ssl.SSLContext | bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    source: str = "the coordinator's public run description",
) -> tuple[AggregatorPolicy, ...]:
    """Checks on the public run description that must pass before a client spends its
    enrollment token: the model it trains, and the client's security policy (secure
    aggregation, the pinned aggregators, the threshold, the DP floor, and the minimum
    cohort every aggregator promises in its signed policy).

    Returns:
        The aggregators' signed policies (empty when the policy needs none), which
        every hand-in checks again.

    Raises:
        ConfigurationError: if the run trains another model.
        PolicyRefusal: if the run asks for less than ``policy`` accepts.
        TransportError: if an aggregator's policy cannot be fetched.
    """
    if model_name is not None and run.model_name != model_name:
        flag = "--learner" if ":" in run.model_name else "--model"
        raise ConfigurationError(
            f"The coordinator's run trains the model {run.model_name}, not {model_name}; "
            f"start this client with {flag} {run.model_name}."
        )
    policy.check_run(run, source=source)
    aggregator_policies: tuple[AggregatorPolicy, ...] = ()
    if run.secure is not None and policy.needs_aggregator_policies(run):
        aggregator_policies = await fetch_aggregator_policies(
            run.secure.aggregators, verify=verify, transport=transport
        )
    policy.check_aggregators(run, aggregator_policies, source=source)
    return aggregator_policies


def _advance(flow: HandInFlow, answer: HandInAnswer | None) -> HandInRequest | HandInResult:
    """The flow's next request, or its result (StopIteration cannot leave a thread)."""
    try:
        return next(flow) if answer is None else flow.send(answer)
    except StopIteration as stop:
        result: HandInResult = stop.value
        return result


class HttpDelivery:
    """Hands updates in over HTTP (see the module docstring).

    Args:
        coordinator: The coordinator.
        run: The run's description.
        identity: The client's key, which signs every share upload.
        policy: What the client accepts; every hand-in is checked against it.
        aggregator_policies: The aggregators' signed policies, as fetched before enrolling.
        verify: How to verify the aggregators' TLS certificates.
        transport: An httpx transport for the aggregators (tests).

    Raises:
        PolicyRefusal: if the run asks for less than ``policy`` accepts.
    """

    def __init__(
        self,
        coordinator: Peer,
        run: RunInfo,
        *,
        identity: Identity,
        policy: ClientPolicy,
        aggregator_policies: tuple[AggregatorPolicy, ...] = (),
        verify: ssl.SSLContext | bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        policy.check_run(run)
        self._coordinator = coordinator
        self._run = run
        self._policy = policy
        self.aggregator_policies = aggregator_policies
        """The aggregators' signed policies, which every hand-in's context carries."""
        self._csprng = CsprngStream()
        self._clients: list[httpx.AsyncClient] = []
        self._aggregators: dict[int, Peer] = {}
        secure = run.secure
        if secure is None:
            self.description = "plaintext FedAvg"
            return
        if not policy.pinned:
            logger.warning(
                "aggregator keys are taken from the coordinator unverified; pass the "
                "aggregators' fingerprints to detect a substituted key"
            )
        retry = RetryPolicy(max_attempts=3, initial_backoff_s=0.2, timeout_s=60.0)
        for published in secure.aggregators:
            client = httpx.AsyncClient(
                base_url=published.url,
                timeout=retry.timeout_s,
                transport=transport,
                verify=verify,
                auth=SigningAuth(identity, aggregator_audience(published.index, run.run_id)),
            )
            self._clients.append(client)
            self._aggregators[published.index] = Peer(client, retry)
        self.description = (
            f"secure aggregation, {secure.config.threshold} of "
            f"{secure.config.num_aggregators} aggregators"
        )

    async def deliver(self, update: LocalUpdate, *, context: HandInContext) -> HandInResult:
        """Run the hand-in pipeline for one update."""
        flow = hand_in(
            update.delta,
            num_samples=update.num_samples,
            loss=update.mean_loss,
            evaluation=update.evaluation,
            context=context,
            rng=self._csprng,
            policy=self._policy,
        )
        step = await asyncio.to_thread(_advance, flow, None)
        while not isinstance(step, HandInResult):
            step = await asyncio.to_thread(_advance, flow, await self._perform(step))
        return step

    async def close(self) -> None:
        """Close the aggregator connections."""
        for client in self._clients:
            await client.aclose()

    # ----------------------------------------------------------------- private
    async def _perform(self, request: HandInRequest) -> HandInAnswer:
        if isinstance(request, SendShares):
            results = await asyncio.gather(
                *(self._send_share(request, share) for share in request.shares)
            )
            return SharesTaken(tuple(j for j in results if j is not None))
        if isinstance(request, SendReceipt):
            header = request.header
            response = await self._coordinator.request(
                "POST",
                f"/v1/rounds/{header.round_id}/receipts",
                json={
                    "client_id": header.client_id,
                    "base_version": header.base_version,
                    "aggregators": list(header.aggregators),
                },
                expect=(202,),
                extensions=for_round(header.round_id),
            )
        else:
            header = request.header
            body = await asyncio.to_thread(
                encode_weights, request.delta, metadata=header.to_metadata()
            )
            response = await self._coordinator.request(
                "POST",
                f"/v1/rounds/{header.round_id}/updates",
                content=body,
                headers={"Content-Type": BINARY},
                expect=(202,),
                extensions=for_round(header.round_id),
            )
        if response.status_code == 409:
            return CoordinatorAnswer(accepted=False, refusal=error_message(response))
        raise_for_status(response, "take the update", expected=202)
        return CoordinatorAnswer(accepted=True, duplicate=bool(response.json().get("duplicate")))

    async def _send_share(self, request: SendShares, share: SealedShare) -> int | None:
        peer = self._aggregators[share.aggregator_index]
        try:
            response = await peer.request(
                "POST",
                f"/v1/rounds/{request.round_id}/shares",
                content=share.envelope,
                headers={"Content-Type": BINARY, ADMISSION_HEADER: request.admission},
                expect=(202,),
                extensions=for_round(request.round_id),
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
                error_message(response)[:200],
            )
            return None
        return share.aggregator_index
