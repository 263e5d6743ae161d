"""The client's async HTTP edge: join, ask for a task, fetch, train, upload, repeat.

All decisions about rounds live on the coordinator; this loop only moves bytes and
time. Network failures and 5xx answers are retried with exponential backoff and
jitter; a 409 (the round closed, or the model moved on) drops the stale update and
asks for a new task; the loop ends cleanly when the coordinator says the run is done.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import httpx

from veilfl.auth.identity import Identity
from veilfl.auth.signed_request import coordinator_audience
from veilfl.client.participation_record import ParticipationRecord
from veilfl.client.uploads import HttpDelivery, check_run_before_enrolling
from veilfl.errors import PolicyRefusal
from veilfl.ml.learner import Learner, LocalUpdate
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.hand_in import HandInContext, HandInResult
from veilfl.protocol.messages import RunInfo, Task, TaskKind
from veilfl.tensors import Weights
from veilfl.transport.peer import Peer, RetryPolicy, error_message, raise_for_status
from veilfl.transport.signing import SigningAuth
from veilfl.wire.tensor_codec import decode_weights

if TYPE_CHECKING:
    import torch

__all__ = ["ClientSummary", "RetryPolicy", "run_client"]

logger = logging.getLogger(__name__)
DataT = TypeVar("DataT")
BINARY = "application/octet-stream"


@dataclass(frozen=True)
class ClientSummary:
    """What a client did during the run."""

    client_id: str
    rounds_trained: int
    updates_refused: int


async def run_client(
    server_url: str,
    learner: Learner[DataT],
    data: DataT,
    *,
    name: str = "",
    identity: Identity | None = None,
    enrollment_token: str | None = None,
    verify: ssl.SSLContext | bool = True,
    retry: RetryPolicy | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    policy: ClientPolicy | None = None,
    model_name: str | None = None,
    device: str | torch.device | None = None,
    record: ParticipationRecord | None = None,
    connect_timeout_s: float | None = None,
) -> ClientSummary:
    """Take part in a run until the coordinator says it is done.

    Args:
        server_url: The coordinator's base URL, e.g. ``https://127.0.0.1:8080``.
        learner: How to build and train the model (its architecture must match the run's).
        data: This client's local data; it never leaves this process.
        name: A label the coordinator shows in its records.
        identity: This client's Ed25519 key; every request is signed with it (default:
            a fresh key, so the client is a new one each time it starts).
        enrollment_token: A one-time token from the operator, if the coordinator
            enrolls clients by token.
        verify: How to verify the servers' TLS certificates (an SSL context trusting
            the run's CA; see :func:`veilfl.tls.client_ssl_context`).
        retry: Retry and timeout policy.
        transport: An httpx transport (tests use ``httpx.ASGITransport``).
        policy: What this client accepts from the coordinator (default
            ``ClientPolicy()``: secure aggregation with a threshold of at least 2, and
            aggregators that each promise, signed, to sum at least 2 clients). Pin the
            aggregators with ``aggregator_fingerprints``; without them, the keys the
            coordinator publishes are trusted (and a warning says so). The policy is
            checked on the public run description before the client enrolls (so a
            refusal does not spend a one-time enrollment token), on the run returned
            at enrollment, and before every hand-in.
        model_name: The model this learner builds, as the run records it (a built-in
            name or a ``--learner`` spec); when given, a run of another model is
            refused before enrolling.
        device: Train there (``auto``, ``cpu``, ``cuda[:N]``); None keeps the
            learner's device. Updates leave as float32 arrays on the CPU either way.
        record: The rounds this client has handed in, per run (default: in memory).
            Under DP-FTRL a round beyond the run's K participations is refused.
        connect_timeout_s: Wait this long for the coordinator's first answer (it may
            start after the client), asking again with backoff; None: ``retry``'s
            attempts, as for every later request.

    Raises:
        TransportError: if the coordinator cannot be reached after all retries (or
            within ``connect_timeout_s``), or refuses the client outright.
        PolicyRefusal: if the run, or a task, asks for less than ``policy`` accepts;
            nothing was sent.
        ConfigurationError: if the run trains another model than ``model_name``, or
            ``device`` is not one torch has.
    """
    retrying = retry or RetryPolicy()
    policy = policy or ClientPolicy()
    identity = identity or Identity.generate()
    record = record or ParticipationRecord()
    if device is not None:
        learner = learner.on(device)
    async with httpx.AsyncClient(
        base_url=server_url, timeout=retrying.timeout_s, transport=transport, verify=verify
    ) as http:
        api = Peer(http, retrying)
        if connect_timeout_s is None:
            response = await api.request("GET", "/v1/run")
        else:
            response = await api.wait_for(
                "GET", "/v1/run", wait_s=connect_timeout_s, longer="raise --connect-timeout"
            )
        raise_for_status(response, "describe the run")
        described = RunInfo.from_json(response.json())
        aggregator_policies = await check_run_before_enrolling(
            described, model_name=model_name, policy=policy, verify=verify, transport=transport
        )
        http.auth = SigningAuth(identity, coordinator_audience(described.run_id))

        async def join() -> tuple[str, RunInfo]:
            client_id, run = await _join(api, identity, name=name, token=enrollment_token)
            policy.check_run(run, source="the run returned at enrollment")
            if run != described:
                raise PolicyRefusal(
                    f"Refused: the coordinator described run {described.run_id} publicly but "
                    f"returned a different run ({run.run_id}) at enrollment; this client "
                    "checked only the one described; nothing was sent."
                )
            return client_id, run

        client_id, run = await join()
        delivery = HttpDelivery(
            api,
            run,
            identity=identity,
            policy=policy,
            aggregator_policies=aggregator_policies,
            verify=verify,
            transport=transport,
        )
        logger.info("joined as %s (%s)", client_id, delivery.description)
        model = await asyncio.to_thread(learner.model_fn)
        trained = refused = 0
        try:
            while True:
                response = await api.request("GET", f"/v1/clients/{client_id}/task")
                if response.status_code == 404:
                    logger.warning("the coordinator no longer knows this client; joining again")
                    client_id, run = await join()
                    continue
                raise_for_status(response, "ask for a task")
                task = Task.from_json(response.json())
                if task.kind is TaskKind.DONE:
                    logger.info("run complete after %d rounds trained here", trained)
                    return ClientSummary(client_id, trained, refused)
                if task.kind is TaskKind.WAIT:
                    await asyncio.sleep(task.retry_after_s)
                    continue
                assert task.round_id is not None and task.model_version is not None
                round_id = task.round_id
                fetched = await _fetch_model(api, task.model_version, any_version=run.buffered)
                if fetched is None:
                    continue
                version, global_weights = fetched
                logger.info("round %d: training on model version %d", round_id, version)
                update = await asyncio.to_thread(
                    learner.local_update, model, global_weights, data, run.plan
                )
                if run.buffered:
                    result = await _hand_in_buffered(
                        api,
                        delivery,
                        run,
                        task,
                        client_id=client_id,
                        version=version,
                        update=update,
                    )
                else:
                    context = HandInContext(
                        client_id=client_id,
                        run=run,
                        round_id=round_id,
                        base_version=version,
                        admission=task.admission,
                        privacy=task.privacy,
                        aggregator_policies=delivery.aggregator_policies,
                        earlier_rounds=record.count(run.run_id),
                    )
                    try:
                        result = await delivery.deliver(update, context=context)
                    except PolicyRefusal:
                        raise  # refused before anything was sent
                    except BaseException:
                        record.add(run.run_id, round_id)  # shares may have left
                        raise
                    record.add(run.run_id, round_id)
                if not result.taken:
                    refused += 1
                    logger.warning(
                        "round %d: the update was not taken: %s", round_id, result.reason
                    )
                    continue
                trained += 1
                logger.info(
                    "round %d: uploaded (%d samples, loss %.4f%s)",
                    round_id,
                    update.num_samples,
                    update.mean_loss,
                    "" if update.epsilon is None else f", own epsilon {update.epsilon:.3f}",
                )
        finally:
            await delivery.close()


async def _join(
    api: Peer, identity: Identity, *, name: str, token: str | None
) -> tuple[str, RunInfo]:
    """Enroll (or join again) with this client's key, signed by that key."""
    request = {"name": name, "public_key": identity.public_key_text, "enrollment_token": token}
    response = await api.request("POST", "/v1/clients", json=request, expect=(201,))
    raise_for_status(response, "enroll this client", expected=201)
    body = response.json()
    return str(body["client_id"]), RunInfo.from_json(body["run"])


async def _fetch_model(api: Peer, version: int, *, any_version: bool) -> tuple[int, Weights] | None:
    """The served model; in a round, only if it is the round's version."""
    response = await api.request("GET", "/v1/model")
    raise_for_status(response, "download the model")
    served = int(response.headers.get("X-Model-Version", "-1"))
    if served != version and not any_version:
        logger.info("model moved on to version %d; asking for a new task", served)
        return None
    weights, _ = await asyncio.to_thread(decode_weights, response.content)
    return served, weights


async def _hand_in_buffered(
    api: Peer,
    delivery: HttpDelivery,
    run: RunInfo,
    task: Task,
    *,
    client_id: str,
    version: int,
    update: LocalUpdate,
    attempts: int = 3,
    max_place_wait_s: float = 600.0,
) -> HandInResult:
    """Get a ticket (buffer and staleness weight), then hand in; again if the buffer
    closed in between. While every place in the open buffer is held, the server keeps
    the ticket request waiting and then says when to ask again: the client keeps its
    update and queues again, for up to ``max_place_wait_s``."""
    result = HandInResult(taken=False, reason="no ticket was issued")
    for _ in range(attempts):
        response = await api.request(
            "POST", "/v1/tickets", json={"client_id": client_id, "trained_version": version}
        )
        waited_s = 0.0
        while _buffer_full(response) and waited_s < max_place_wait_s:
            # The server already waited for a place; keep the update and queue again.
            pause = min(_retry_after_s(response), max_place_wait_s - waited_s)
            logger.info("no place in the open buffer yet; asking again in %.0f s", pause)
            await asyncio.sleep(pause)
            waited_s += pause
            response = await api.request(
                "POST", "/v1/tickets", json={"client_id": client_id, "trained_version": version}
            )
        if response.status_code == 409:
            return HandInResult(taken=False, reason=error_message(response))
        raise_for_status(response, "issue a ticket")
        ticket = response.json()
        result = await delivery.deliver(
            update,
            context=HandInContext(
                client_id=client_id,
                run=run,
                round_id=int(ticket["buffer_id"]),
                base_version=version,
                weight=float(ticket["weight"]),
                admission=ticket.get("admission"),
                privacy=task.privacy,
                aggregator_policies=delivery.aggregator_policies,
            ),
        )
        if result.taken:
            return result
    return result


def _buffer_full(response: httpx.Response) -> bool:
    """Whether a ticket was refused only because no place in the open buffer is free."""
    if response.status_code != 409:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("error") == "BufferFullError"


def _retry_after_s(response: httpx.Response) -> float:
    """The answer's Retry-After in seconds (1 s if it names none), at most a minute."""
    try:
        return min(60.0, max(0.1, float(response.headers.get("Retry-After", "1"))))
    except ValueError:
        return 1.0
