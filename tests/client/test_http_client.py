"""The client loop against an in-process coordinator, including flaky transport."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from tests.signed_clients import open_access
from tests.tiny_coordinator import service_for

from veilfl.client.http_client import RetryPolicy, run_client
from veilfl.errors import TransportError
from veilfl.ml.datasets import synthetic_dataset
from veilfl.ml.learner import mnist_learner
from veilfl.ml.local_data import hold_out
from veilfl.ml.partition import partition_iid
from veilfl.ml.weights import set_weights
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.server.app import create_app
from veilfl.server.service import CoordinatorService

pytestmark = pytest.mark.timeout(120)
FAST = RetryPolicy(max_attempts=8, initial_backoff_s=0.01, max_backoff_s=0.05)


def _service(rounds: int, clients: int = 2) -> CoordinatorService:
    learner = mnist_learner("simple-cnn", seed=0)
    settings = RunSpec(
        model_name="simple-cnn",
        rounds=RoundConfig(num_rounds=rounds, clients_per_round=clients, poll_interval_s=0.01),
        plan=LocalTrainingPlan(max_batches=2),
    )
    return service_for(settings, learner.initial_weights(seed=0))


class _Flaky(httpx.AsyncBaseTransport):
    """Fails every other request with a connection error or a 503."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls % 3 == 1:
            raise httpx.ConnectError("simulated outage", request=request)
        if self.calls % 3 == 2:
            return httpx.Response(503, json={"message": "busy"})
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize("flaky", [False, True])
async def test_two_clients_complete_every_round(flaky: bool) -> None:
    service = _service(rounds=2)
    app = create_app(service, metrics=lambda: [], access=open_access(service.run_info.run_id))
    await service.start(tick_interval_s=0.01)
    data = synthetic_dataset(num_examples=200, seed=0)
    parts = partition_iid(len(data), 2, seed=0)
    try:
        transports = []
        for _ in parts:
            transport: httpx.AsyncBaseTransport = httpx.ASGITransport(app=app)
            if flaky:
                transport = _Flaky(transport)
            transports.append(transport)
        summaries = await asyncio.gather(
            *(
                run_client(
                    "http://test",
                    mnist_learner("simple-cnn", seed=i),
                    data.subset(part),
                    retry=FAST,
                    transport=transport,
                    policy=ClientPolicy(allow_plaintext=True),
                )
                for i, (part, transport) in enumerate(zip(parts, transports, strict=True))
            )
        )
        # The clients may see "done" a moment before the service has recorded the last
        # round and set ``finished``: wait for it (a lost round never sets it).
        await asyncio.wait_for(service.finished.wait(), timeout=30)
    finally:
        await service.stop()
    assert [s.rounds_trained for s in summaries] == [2, 2]
    assert service.finished.is_set()


async def test_unreachable_coordinator_gives_up_with_a_clear_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(TransportError, match="did not answer GET /v1/run after 3"):
        await run_client(
            "http://test",
            mnist_learner(),
            synthetic_dataset(num_examples=10, seed=0),
            retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.001),
            transport=httpx.MockTransport(refuse),
        )


class _NotYetUp(httpx.AsyncBaseTransport):
    """Refuses connections until ``down_for`` requests have been tried."""

    def __init__(self, inner: httpx.AsyncBaseTransport, down_for: int) -> None:
        self.inner = inner
        self.down_for = down_for
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls <= self.down_for:
            raise httpx.ConnectError("connection refused", request=request)
        return await self.inner.handle_async_request(request)


async def test_a_client_started_before_its_coordinator_waits_for_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    service = _service(rounds=1, clients=1)
    app = create_app(service, metrics=lambda: [], access=open_access(service.run_info.run_id))
    await service.start(tick_interval_s=0.01)
    late = _NotYetUp(httpx.ASGITransport(app=app), down_for=3 * FAST.max_attempts)
    try:
        summary = await run_client(
            "http://test",
            mnist_learner("simple-cnn", seed=0),
            synthetic_dataset(num_examples=50, seed=0),
            retry=FAST,  # gives up after 8 attempts; the wait is by time instead
            transport=late,
            policy=ClientPolicy(allow_plaintext=True),
            connect_timeout_s=60.0,
        )
    finally:
        await service.stop()
    assert summary.rounds_trained == 1
    waiting = [r for r in caplog.records if "waiting for http://test" in r.getMessage()]
    assert len(waiting) == 1  # progress now and then, not a line per attempt
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_coordinator_that_never_answers_ends_the_wait_naming_the_flag() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(TransportError, match=r"within 1 s .*--connect-timeout"):
        await run_client(
            "http://test",
            mnist_learner(),
            synthetic_dataset(num_examples=10, seed=0),
            retry=FAST,
            transport=httpx.MockTransport(refuse),
            connect_timeout_s=1.0,
        )


async def test_clients_with_an_evaluation_split_report_the_model_they_received() -> None:
    # Arrange: two clients over HTTP hold out 20 and 40 of their examples.
    service = _service(rounds=1)
    app = create_app(service, metrics=lambda: [], access=open_access(service.run_info.run_id))
    data = synthetic_dataset(num_examples=200, seed=0)
    clients = [
        hold_out(data.subset(part), fraction=fraction, seed=i)
        for i, (part, fraction) in enumerate(
            zip(partition_iid(len(data), 2, seed=0), (0.2, 0.4), strict=True)
        )
    ]
    learner = mnist_learner("simple-cnn", seed=0)
    await service.start(tick_interval_s=0.01)
    # Act
    try:
        await asyncio.gather(
            *(
                run_client(
                    "http://test",
                    learner,
                    local,
                    retry=FAST,
                    transport=httpx.ASGITransport(app=app),
                    policy=ClientPolicy(allow_plaintext=True),
                )
                for local in clients
            )
        )
        await asyncio.wait_for(service.finished.wait(), timeout=30)
    finally:
        await service.stop()
    # Assert: the round reports the example-weighted evaluation of the initial model.
    model = learner.new_model()
    set_weights(model, learner.initial_weights(seed=0))
    counts, correct = [], []
    for local in clients:
        assert local.evaluation is not None
        result = learner.evaluate_fn(model, local.evaluation)
        counts.append(len(local.evaluation))
        correct.append(round(result.accuracy * len(local.evaluation)))
    (metrics,) = service.core.history
    assert metrics.federated_examples == sum(counts) == 60
    assert metrics.federated_accuracy == pytest.approx(sum(correct) / sum(counts))
