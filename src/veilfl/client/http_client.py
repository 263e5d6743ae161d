"""The client's async HTTP edge: join, ask for a task, fetch, train, upload, repeat.

All decisions about rounds live on the coordinator; this loop only moves bytes and
time. Network failures and 5xx answers are retried with exponential backoff and
jitter; a 409 (the round closed, or the model moved on) drops the stale update and
asks for a new task; the loop ends cleanly when the coordinator says the run is done.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import httpx

from veilfl.auth.identity import Identity
from veilfl.auth.signed_request import coordinator_audience
from veilfl.client.participation_record import ParticipationRecord, model_digest
from veilfl.client.uploads import HttpDelivery, check_run_before_enrolling
from veilfl.errors import PolicyRefusal, WireFormatError
from veilfl.ml.learner import Learner, LocalUpdate
from veilfl.ml.local_data import LocalData, as_local_data
from veilfl.protocol.client_policy import ClientPolicy, check_participations, run_epsilon
from veilfl.protocol.hand_in import HandInContext, HandInResult
from veilfl.protocol.messages import RunInfo, Task, TaskKind
from veilfl.protocol.run_description import RunDescription
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
    data: DataT | LocalData[DataT],
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
        data: This client's local data; it never leaves this process. A
            :class:`~veilfl.ml.local_data.LocalData` with an evaluation split makes the
            client evaluate each model it receives on that split before it trains
            (federated evaluation: only the example count, summed loss and correct
            count are reported, inside the secure sum where the run is secure).
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
            aggregators that each promise, signed, to sum at least 2 clients). A secure
            run needs the aggregators pinned (``aggregator_fingerprints``) or an
            explicit ``trust_coordinator_keys``, and a quorum of them must have signed
            their consent to the very run described. The policy is checked on the
            public run description before the client enrolls (so a refusal does not
            spend a one-time enrollment token), on the run returned at enrollment, and
            before every hand-in.
        model_name: The model this learner builds, as the run records it (a built-in
            name or a ``--learner`` spec); when given, a run of another model is
            refused before enrolling.
        device: Train there (``auto``, ``cpu``, ``cuda[:N]``); None keeps the
            learner's device. Updates leave as float32 arrays on the CPU either way.
        record: What this client gave each coordinator: rounds, the models it trained
            on, each run's epsilon (default: in memory). Under DP-FTRL a round beyond
            K participations with the coordinator is refused; a model already trained
            on is declined; ``max_epsilon`` adds the coordinator's earlier runs.
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
    local = as_local_data(data)
    if device is not None:
        learner = learner.on(device)
    async with httpx.AsyncClient(
        base_url=server_url, timeout=retrying.timeout_s, transport=transport, verify=verify
    ) as http:
        api = Peer(http, retrying)
        description = await _described_run(
            api, wait_s=retrying.timeout_s * 10, connect_timeout_s=connect_timeout_s
        )
        described = description.info
        coordinator = described.coordinator_key
        spent_before = record.earlier_epsilon(coordinator, run_id=described.run_id)
        aggregator_policies = await check_run_before_enrolling(
            described, model_name=model_name, policy=policy, verify=verify, transport=transport
        )
        policy.check_description(
            description,
            earlier_epsilon=spent_before,
            source="the coordinator's public run description",
        )
        http.auth = SigningAuth(identity, coordinator_audience(described.run_id))
        epsilon = run_epsilon(described)

        async def join() -> tuple[str, RunInfo]:
            client_id, joined = await _join(api, identity, name=name, token=enrollment_token)
            if joined.run_id != described.run_id:
                raise PolicyRefusal(
                    f"Refused: the coordinator described run {described.run_id} publicly but "
                    f"returned a different run ({joined.run_id}) at enrollment; this client "
                    "checked only the one described; nothing was sent."
                )
            return client_id, described

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
                # Beyond DP-FTRL's K the hand-in would be refused: say so before training.
                check_participations(
                    run, earlier_rounds=record.count(coordinator), round_id=round_id
                )
                fetched = await _fetch_model(api, task.model_version, any_version=run.buffered)
                if fetched is None:
                    continue
                version, global_weights = fetched
                digest = model_digest(global_weights)
                if record.trained_on(coordinator, digest):
                    # Two certified sums over the same model differ by the updates of
                    # those in one list only: never hand in twice on one model.
                    logger.warning(
                        "round %d: declined: this client already handed in an update "
                        "trained on this very model (version %d) to this coordinator",
                        round_id,
                        version,
                    )
                    await asyncio.sleep(max(1.0, task.retry_after_s))
                    continue
                logger.info("round %d: training on model version %d", round_id, version)
                update = await asyncio.to_thread(
                    functools.partial(
                        learner.local_update,
                        model,
                        global_weights,
                        local.train,
                        run.plan,
                        evaluate_on=local.evaluation,
                    )
                )

                def note(round_id: int, digest: str = digest) -> None:
                    record.add(
                        coordinator, described.run_id, round_id, model=digest, epsilon=epsilon
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
                        earlier_rounds=lambda: record.count(coordinator),
                        note=note,
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
                        earlier_rounds=record.count(coordinator),
                    )
                    result = await _deliver_noted(delivery, update, context, note)
                if not result.taken:
                    refused += 1
                    logger.warning(
                        "round %d: the update was not taken: %s", round_id, result.reason
                    )
                    continue
                trained += 1
                logger.info(
                    "round %d: uploaded (%d samples, loss %.4f%s%s)",
                    round_id,
                    update.num_samples,
                    update.mean_loss,
                    "" if update.epsilon is None else f", own epsilon {update.epsilon:.3f}",
                    ""
                    if update.evaluation is None
                    else f", received model's accuracy {update.evaluation.accuracy:.4f} on "
                    f"{update.evaluation.examples:.0f} held-out examples",
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
    return str(body["client_id"]), _description(body["run"]).info


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
    earlier_rounds: Callable[[], int],
    note: Callable[[int], None],
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
        context = HandInContext(
            client_id=client_id,
            run=run,
            round_id=int(ticket["buffer_id"]),
            base_version=version,
            weight=float(ticket["weight"]),
            admission=ticket.get("admission"),
            privacy=task.privacy,
            aggregator_policies=delivery.aggregator_policies,
            earlier_rounds=earlier_rounds(),
        )
        result = await _deliver_noted(delivery, update, context, note)
        if result.taken:
            return result
    return result


async def _described_run(
    api: Peer, *, wait_s: float, connect_timeout_s: float | None
) -> RunDescription:
    """The coordinator's run description, once the run is open (a secure run opens when
    its aggregators' consents are in; the description is asked again every second until
    then, for at most ``wait_s``, and then taken as it is). The first request waits up
    to ``connect_timeout_s`` for a coordinator that is not up yet."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    said = False
    first = connect_timeout_s is not None
    while True:
        if first and connect_timeout_s is not None:
            response = await api.wait_for(
                "GET", "/v1/run", wait_s=connect_timeout_s, longer="raise --connect-timeout"
            )
            first = False
        else:
            response = await api.request("GET", "/v1/run")
        raise_for_status(response, "describe the run")
        data = response.json()
        if not isinstance(data, dict) or data.get("open", True) or loop.time() >= deadline:
            return _description(data)
        if not said:
            logger.info("the run is not open yet (its aggregators' consents are not in); waiting")
            said = True
        await asyncio.sleep(1.0)


async def _deliver_noted(
    delivery: HttpDelivery,
    update: LocalUpdate,
    context: HandInContext,
    note: Callable[[int], None],
) -> HandInResult:
    """Hand in, noting the round in the client's record once shares may have left (a
    refusal by the client's own policy sent nothing, and is not noted)."""
    try:
        result = await delivery.deliver(update, context=context)
    except PolicyRefusal:
        raise
    except BaseException:
        note(context.round_id)
        raise
    note(context.round_id)
    return result


def _description(data: object) -> RunDescription:
    """The served run description, its id recomputed from its spec.

    Raises:
        WireFormatError: if it does not parse, or states another id than its hash.
    """
    if not isinstance(data, dict):
        raise WireFormatError("The coordinator's run description is not a JSON object.")
    return RunDescription.from_json(data)


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
