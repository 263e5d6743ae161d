"""Receipts cannot lie (issue 10, attack 4), over HTTP in process: the real coordinator
app and service, three real aggregator apps, two honest clients (``run_client``) and
two liars that send receipts for shares they never uploaded. A receipt naming an
aggregator the run does not have is refused with a 4xx; the false receipts cost only
their senders' exclusion, logged once, and the round completes with the honest
clients long before its deadline."""

from __future__ import annotations

import asyncio
import logging
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

pytestmark = pytest.mark.timeout(120)
ROUND_TIMEOUT_S = 60.0


class _Hosts(httpx.AsyncBaseTransport):
    """Routes requests by host to in-process apps."""

    def __init__(self, apps: dict[str, httpx.ASGITransport]) -> None:
        self._apps = apps

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._apps[request.url.host].handle_async_request(request)


async def test_false_receipts_cost_only_their_senders_exclusion(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    coordinator_identity = Identity.generate()
    keys = [generate_keypair() for _ in range(3)]
    config = SecureAggregationConfig(threshold=2, num_aggregators=3, max_samples_per_client=100)
    aggregators = published(keys, [f"http://aggregator-{j}" for j in (1, 2, 3)])
    learner = mnist_learner("simple-cnn", seed=0)
    settings = RunSpec(
        model_name="simple-cnn",
        rounds=RoundConfig(
            num_rounds=1,
            clients_per_round=4,  # the two liars are sampled too
            min_clients=2,
            min_available_clients=4,
            round_timeout_s=ROUND_TIMEOUT_S,
            poll_interval_s=0.1,
        ),
        plan=LocalTrainingPlan(max_batches=1, batch_size=8),
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
    service, link, run_id = fleet.service, fleet.link, fleet.run_id
    core = service.core
    liars: list[str] = []
    refused_statuses: list[int] = []

    async def liar() -> None:
        client_id, signed = await enroll(hosts, run_id, name="liar")
        liars.append(client_id)
        async with signed:
            while (task := (await signed.get(f"/v1/clients/{client_id}/task")).json())[
                "kind"
            ] != "train":
                await asyncio.sleep(0.1)
            round_id = task["round_id"]

            def receipt(indices: list[int]) -> dict[str, object]:
                return {"client_id": client_id, "base_version": 0, "aggregators": indices}

            outside = await signed.post(
                f"/v1/rounds/{round_id}/receipts",
                json=receipt([4, 5]),
                extensions=for_round(round_id),
            )
            refused_statuses.append(outside.status_code)
            claimed = await signed.post(  # shares it never uploaded
                f"/v1/rounds/{round_id}/receipts",
                json=receipt([1, 2, 3]),
                extensions=for_round(round_id),
            )
            assert claimed.status_code == 202, claimed.text

    data = synthetic_dataset(num_examples=40, seed=0)
    pins = {a.index: a.fingerprint for a in aggregators}
    caplog.set_level(logging.WARNING, logger="veilfl.server.service")
    await service.start(tick_interval_s=0.05)
    try:
        started = time.perf_counter()
        honest = await asyncio.gather(
            liar(),
            liar(),
            *(
                run_client(
                    "http://coordinator",
                    mnist_learner("simple-cnn", seed=i),
                    data.subset(part),
                    retry=RetryPolicy(initial_backoff_s=0.05),
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
    assert len(refused_statuses) == 2
    assert all(400 <= status < 500 for status in refused_statuses), refused_statuses
    assert [summary.rounds_trained for summary in honest[2:]] == [1, 1]
    assert core.done and core.model_version == 1
    assert core.history[-1].num_clients == 2  # the honest two
    assert sorted(core.history[-1].excluded) == sorted(liars)
    assert elapsed < ROUND_TIMEOUT_S / 2
    exclusions = [r.getMessage() for r in caplog.records if "excluded" in r.getMessage()]
    assert len(exclusions) == 1, exclusions
    assert all(liar_id in exclusions[0] for liar_id in liars)
