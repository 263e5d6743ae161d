"""The coordinator's ``/metrics``, scraped during runs in process: a plaintext round's
counters move as updates are refused and accepted and the round completes; a secure
round shows each aggregator's answers and failures, on the dashboard too."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.run_descriptions import published
from tests.signed_clients import enroll, open_access
from tests.tiny_coordinator import described, service_for

from veilfl.crypto.keys import generate_keypair
from veilfl.protocol.assembly import build_coordinator
from veilfl.protocol.effects import (
    AggregatorFailed,
    CollectHoldings,
    Command,
    Event,
    HoldingsReported,
    PersistRound,
    RoundPersisted,
)
from veilfl.protocol.messages import LocalTrainingPlan, UpdateHeader
from veilfl.protocol.metrics import FederatedEvaluation, RoundMetrics
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.server.app import create_app
from veilfl.server.service import CoordinatorService
from veilfl.tensors import Weights
from veilfl.transport.signing import for_round
from veilfl.wire.tensor_codec import encode_weights

pytestmark = pytest.mark.timeout(60)
ROUNDS = RoundConfig(
    num_rounds=2, clients_per_round=2, min_clients=2, round_timeout_s=60, poll_interval_s=0.01
)


def _weights(value: float) -> Weights:
    return {"w": np.full((3, 2), value, np.float32), "b": np.full(2, value, np.float32)}


def _update(
    client_id: str,
    *,
    round_id: int = 1,
    claimed_round: int | None = None,
    evaluation: FederatedEvaluation | None = None,
) -> bytes:
    header = UpdateHeader(
        client_id=client_id,
        round_id=claimed_round or round_id,
        base_version=round_id - 1,
        num_samples=4,
        loss=0.5,
        evaluation=evaluation,
    )
    return encode_weights(_weights(1.0), metadata=header.to_metadata())


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _app(
    service: CoordinatorService, history: Callable[[], Sequence[RoundMetrics]], run_id: str
) -> tuple[httpx.ASGITransport, httpx.AsyncClient]:
    app = create_app(service, metrics=history, access=open_access(run_id))
    transport = httpx.ASGITransport(app=app)
    return transport, httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_counters_move_as_updates_are_refused_and_accepted_and_a_round_completes() -> None:
    settings = RunSpec(model_name="tiny", rounds=ROUNDS, plan=LocalTrainingPlan())
    service = service_for(settings, _weights(0.0))
    transport, http = _app(service, lambda: service.core.history, "m1")
    await service.start(tick_interval_s=0.01)
    try:
        before = await _scrape(http)
        assert _get(before, "veilfl_updates_accepted_total", kind="update") == 0
        assert _get(before, "veilfl_rounds_completed_total") == 0
        assert _get(before, "veilfl_coordinator_phase", veilfl_coordinator_phase="collecting") == 1
        clients = [await enroll(transport, "m1", name=n) for n in ("a", "b")]
        for client_id, client in clients:
            await client.get(f"/v1/clients/{client_id}/task")
        first_id, first = clients[0]
        refused = await first.post(
            "/v1/rounds/1/updates",
            content=_update(first_id, claimed_round=7),
            extensions=for_round(1),
        )
        assert refused.status_code == 409
        during = await _scrape(http)
        assert (
            _get(during, "veilfl_updates_refused_total", kind="update", reason="RoundMismatchError")
            == 1
        )
        assert _get(during, "veilfl_updates_accepted_total", kind="update") == 0
        # Each client evaluated the model it received: (examples, mean loss, accuracy).
        evaluations = {"a": (10, 2.0, 0.5), "b": (30, 0.4, 0.9)}
        for (client_id, client), (examples, loss, accuracy) in zip(
            clients, evaluations.values(), strict=True
        ):
            evaluation = FederatedEvaluation.of_means(
                loss=loss, accuracy=accuracy, examples=examples
            )
            await client.post(
                "/v1/rounds/1/updates",
                content=_update(client_id, evaluation=evaluation),
                extensions=for_round(1),
            )
        for _ in range(200):
            after = await _scrape(http)
            if _get(after, "veilfl_rounds_completed_total") >= 1:
                break
            await asyncio.sleep(0.02)
        assert _get(after, "veilfl_rounds_completed_total") == 1
        assert _get(after, "veilfl_run_rounds_completed") == 1
        assert _get(after, "veilfl_updates_accepted_total", kind="update") == 2
        assert _get(after, "veilfl_model_version") == 1
        assert _get(after, "veilfl_round") == 2
        assert _get(after, "veilfl_clients_joined") == 2
        assert _get(after, "veilfl_train_loss") == pytest.approx(0.5)
        # Federated evaluation, weighted by the examples each client evaluated.
        counts = [e[0] for e in evaluations.values()]
        assert _get(after, "veilfl_federated_examples") == sum(counts)
        assert _get(after, "veilfl_federated_accuracy") == pytest.approx(
            sum(n * acc for n, _, acc in evaluations.values()) / sum(counts)
        )
        assert _get(after, "veilfl_federated_loss") == pytest.approx(
            sum(n * loss for n, loss, _ in evaluations.values()) / sum(counts)
        )
        route = "/v1/rounds/{round_id}/updates"
        timed = _get(
            after,
            "veilfl_http_request_duration_seconds_count",
            method="POST",
            route=route,
            status="202",
        )
        assert timed == 2
        assert (
            _get(
                after,
                "veilfl_http_requests_refused_total",
                route=route,
                reason="RoundMismatchError",
            )
            == 1
        )
        for _, client in clients:
            await client.aclose()
    finally:
        await http.aclose()
        await service.stop()


async def test_epsilon_and_the_latest_evaluation_come_from_the_history() -> None:
    settings = RunSpec(model_name="tiny", rounds=ROUNDS, plan=LocalTrainingPlan())
    service = service_for(settings, _weights(0.0))
    history = [
        RoundMetrics(1, 3, 1.2, 1.1, 0.6, seconds=1.0, epsilon=0.4),
        RoundMetrics(2, 3, 0.9, None, None, seconds=1.0, epsilon=0.7),
    ]
    _, http = _app(service, lambda: history, "m2")
    async with http:
        samples = await _scrape(http)
    assert _get(samples, "veilfl_epsilon") == pytest.approx(0.7)
    assert _get(samples, "veilfl_test_accuracy") == pytest.approx(0.6)  # round 2 not evaluated
    assert _get(samples, "veilfl_train_loss") == pytest.approx(0.9)
    assert _get(samples, "veilfl_run_rounds_completed") == 2


class _FlakyAggregators:
    """Aggregators 1 and 3 say what they hold and 2 is unreachable; asked anything
    after that, 3 refuses and 1 never answers (so aggregation waits on it)."""

    def __init__(self) -> None:
        self.clients: list[str] = []

    async def perform(self, command: Command) -> list[Event]:
        if isinstance(command, PersistRound):
            return [RoundPersisted(command.outcome.cohort.round_id)]
        r = command.round_id
        events: list[Event] = []
        for j in command.aggregators:
            if j == 2:
                events.append(AggregatorFailed(r, 2, "Aggregator 2 is unreachable."))
            elif isinstance(command, CollectHoldings):
                events.append(HoldingsReported(r, j, frozenset(self.clients)))
            elif j == 3:
                events.append(AggregatorFailed(r, 3, "Aggregator 3 refused.", refused=True))
        return events


async def test_a_secure_round_shows_each_aggregators_answers_and_failures() -> None:
    keys = [generate_keypair() for _ in range(3)]
    settings = RunSpec(
        model_name="tiny",
        rounds=ROUNDS,
        plan=LocalTrainingPlan(),
        secure=SecureSettings(
            config=SecureAggregationConfig(threshold=2, num_aggregators=3),
            aggregators=published(keys),
        ),
    )
    core = build_coordinator(settings, initial_weights=_weights(0.0), run_id="m3").coordinator
    performer = _FlakyAggregators()
    service = CoordinatorService(
        core,
        description=described(settings, model_size=core.spec.total_size),
        performer=performer,
        max_update_bytes=1 << 20,
    )
    transport, http = _app(service, lambda: core.history, "m3")
    await service.start(tick_interval_s=0.01)
    try:
        clients = [await enroll(transport, "m3", name=n) for n in ("a", "b")]
        performer.clients = [client_id for client_id, _ in clients]
        for client_id, client in clients:
            await client.get(f"/v1/clients/{client_id}/task")
            receipt = await client.post(
                "/v1/rounds/1/receipts",
                json={"client_id": client_id, "base_version": 0, "aggregators": [1, 2, 3]},
                extensions=for_round(1),
            )
            assert receipt.status_code == 202, receipt.text
        dashboard: dict[str, Any] = {}
        health: dict[int, dict[str, Any]] = {}
        for _ in range(250):
            dashboard = (await http.get("/v1/dashboard")).json()
            health = {a["index"]: a for a in dashboard["aggregators"]}
            if health[3]["refusals"] and health[1]["state"] == "waiting":
                break
            await asyncio.sleep(0.02)
        (row,) = dashboard["rounds"]
        assert row["state"] == "aggregating"
        assert health[1]["answers"] == 1 and health[1]["failures"] == 0
        assert health[2]["state"] == "failing"
        assert health[2]["last_failure"] == "Aggregator 2 is unreachable."
        assert health[3]["state"] == "failing" and health[3]["refusals"] >= 1
        assert health[2]["url"] == "http://aggregator-2"
        assert dashboard["waiting_for"].startswith("aggregator 1 to answer with its")
        samples = await _scrape(http)
        assert _get(samples, "veilfl_updates_accepted_total", kind="receipt") == 2
        assert _get(samples, "veilfl_aggregator_answers_total", aggregator="1") == 1
        assert _get(samples, "veilfl_aggregator_answers_total", aggregator="3") == 1
        assert (
            _get(samples, "veilfl_aggregator_failures_total", aggregator="2", kind="unreachable")
            >= 1
        )
        assert (
            _get(samples, "veilfl_aggregator_failures_total", aggregator="3", kind="refused") >= 1
        )
        assert (
            _get(samples, "veilfl_aggregator_failures_total", aggregator="1", kind="refused") == 0
        )
        phase = _get(samples, "veilfl_coordinator_phase", veilfl_coordinator_phase="aggregating")
        assert phase == 1
        for _, client in clients:
            await client.aclose()
    finally:
        await http.aclose()
        await service.stop()
