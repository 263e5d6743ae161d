"""While a round closes against a deliberately slow aggregator (5 s per aggregate
request), the coordinator keeps answering: nothing under its lock waits on the network.

Everything runs in process over httpx's ASGI transport: the real coordinator service
and app, two real aggregator apps, and two real clients (``run_client``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from tests.in_process_fleet import in_process_fleet
from tests.run_descriptions import published
from tests.signed_clients import enroll

from veilfl.auth.identity import Identity
from veilfl.client.http_client import RetryPolicy, run_client
from veilfl.crypto.keys import generate_keypair
from veilfl.ml.datasets import synthetic_dataset
from veilfl.ml.learner import mnist_learner
from veilfl.ml.partition import partition_iid
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.transport.signing import for_round

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
SLOW_S = 5.0
PROMPT_S = 1.0


class _Hosts(httpx.AsyncBaseTransport):
    """Routes requests by host to in-process apps; aggregator 2 takes ``SLOW_S`` to
    answer each aggregate request."""

    def __init__(self, apps: dict[str, httpx.ASGITransport]) -> None:
        self._apps = apps

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host == "aggregator-2" and request.url.path.endswith("/aggregate"):
            await asyncio.sleep(SLOW_S)
        return await self._apps[host].handle_async_request(request)


async def test_status_tasks_and_uploads_are_answered_promptly_while_a_round_closes(
    tmp_path: Path,
) -> None:
    coordinator_identity = Identity.generate()
    keys = [generate_keypair() for _ in range(2)]
    config = SecureAggregationConfig(threshold=2, num_aggregators=2, max_samples_per_client=100)
    aggregators = published(keys, ["http://aggregator-1", "http://aggregator-2"])
    learner = mnist_learner("simple-cnn", seed=0)
    settings = RunSpec(
        model_name="simple-cnn",
        # Round 2 samples everyone, the probe included, which never trains: it closes at
        # its deadline with the two others (the aggregators sum over at least 2).
        rounds=RoundConfig(
            num_rounds=2,
            fraction=1.0,
            min_clients=2,
            min_available_clients=2,
            round_timeout_s=3 * SLOW_S,
            poll_interval_s=0.05,
        ),
        plan=LocalTrainingPlan(max_batches=2),
        secure=SecureSettings(config=config, aggregators=aggregators),
    )
    apps: dict[str, httpx.ASGITransport] = {}
    hosts = _Hosts(apps)
    fleet = in_process_fleet(
        settings,
        keys=keys,
        start=learner.initial_weights(seed=0),
        apps=apps,
        transport=hosts,
        spool=tmp_path,
        identity=coordinator_identity,
    )
    apps["test"] = apps["coordinator"]  # enroll()'s host
    pins = {a.index: a.fingerprint for a in aggregators}
    service, link, run_id = fleet.service, fleet.link, fleet.run_id
    core = service.core
    data = synthetic_dataset(num_examples=100, seed=0)
    probe_latencies: list[float] = []

    async def probe() -> None:
        """Once the round is closing, time a status, an enrollment, a task and a late
        receipt; each must come back well within the slow aggregator's 5 s."""
        async with httpx.AsyncClient(transport=hosts, base_url="http://coordinator") as http:
            while (await http.get("/v1/status")).json()["phase"] != "aggregating":
                await asyncio.sleep(0.02)
            started = time.perf_counter()
            assert (await http.get("/v1/status")).json()["phase"] == "aggregating"
            probe_latencies.append(time.perf_counter() - started)
            started = time.perf_counter()
            client_id, signed = await enroll(hosts, run_id, name="probe")
            probe_latencies.append(time.perf_counter() - started)
            async with signed:
                started = time.perf_counter()
                task = await signed.get(f"/v1/clients/{client_id}/task")
                probe_latencies.append(time.perf_counter() - started)
                assert task.json()["kind"] == "wait"
                started = time.perf_counter()
                late = await signed.post(
                    "/v1/rounds/1/receipts",
                    json={"client_id": client_id, "base_version": 0, "aggregators": [1, 2]},
                    extensions=for_round(1),
                )
                probe_latencies.append(time.perf_counter() - started)
                assert late.status_code == 409, late.text  # the round closed: said at once
            still = (await http.get("/v1/status")).json()
            assert still["phase"] == "aggregating" and still["model_version"] == 0

    await service.start(tick_interval_s=0.02)
    try:
        started = time.perf_counter()
        await asyncio.gather(
            probe(),
            *(
                run_client(
                    "http://coordinator",
                    mnist_learner("simple-cnn", seed=i),
                    data.subset(part),
                    retry=RetryPolicy(initial_backoff_s=0.01),
                    transport=hosts,
                    policy=ClientPolicy(aggregator_fingerprints=pins),
                )
                for i, part in enumerate(partition_iid(len(data), 2, seed=0))
            ),
        )
        elapsed = time.perf_counter() - started
    finally:
        await service.stop()
        await link.close()
    assert len(probe_latencies) == 4
    assert max(probe_latencies) < PROMPT_S, probe_latencies
    assert core.done and core.model_version == 2
    assert elapsed >= 2 * SLOW_S  # each round really waited for the slow aggregator
