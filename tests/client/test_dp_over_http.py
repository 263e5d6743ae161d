"""DP-FedAvg through the HTTP edge: plans travel with tasks, epsilon is recorded."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from tests.signed_clients import open_access
from tests.tiny_coordinator import service_for

from veilfl.client.http_client import RetryPolicy, run_client
from veilfl.ml.datasets import synthetic_dataset
from veilfl.ml.learner import mnist_learner
from veilfl.ml.partition import partition_iid
from veilfl.privacy.accountant import epsilon_for
from veilfl.privacy.dp_config import DpConfig
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.server.app import create_app

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("placement", ["central", "local"])
async def test_clients_follow_the_round_plan_and_epsilon_is_recorded(placement: str) -> None:
    learner = mnist_learner("simple-cnn", seed=0)
    dp = DpConfig(placement=placement, noise_multiplier=1.5, clip_norm=0.5)  # type: ignore[arg-type]
    settings = RunSpec(
        model_name="simple-cnn",
        rounds=RoundConfig(num_rounds=2, clients_per_round=2, poll_interval_s=0.01),
        plan=LocalTrainingPlan(max_batches=2),
        dp=dp,
        population=2,
    )
    service = service_for(settings, learner.initial_weights(seed=0))
    core = service.core
    app = create_app(
        service, metrics=lambda: list(core.history), access=open_access(service.run_info.run_id)
    )
    await service.start(tick_interval_s=0.01)
    data = synthetic_dataset(num_examples=100, seed=0)
    try:
        await asyncio.gather(
            *(
                run_client(
                    "http://test",
                    mnist_learner("simple-cnn", seed=i),
                    data.subset(part),
                    retry=RetryPolicy(initial_backoff_s=0.01),
                    transport=httpx.ASGITransport(app=app),
                    policy=ClientPolicy(allow_plaintext=True, dp_placements=frozenset({placement})),
                )
                for i, part in enumerate(partition_iid(len(data), 2, seed=0))
            )
        )
    finally:
        await service.stop()
    expected = [
        epsilon_for(noise_multiplier=1.5, sample_rate=1.0, rounds=r, delta=1e-5) for r in (1, 2)
    ]
    assert [m.epsilon for m in core.history] == pytest.approx(expected)
    # Both observers, with the accounting, in /v1/metrics and /v1/status.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        rows = (await http.get("/v1/metrics")).json()
        status = (await http.get("/v1/status")).json()
    assert [row["epsilon"] for row in rows] == pytest.approx(expected)
    assert all(row["accounting"] == "rdp" and row["delta"] == 1e-5 for row in rows)
    coordinator = [row["epsilon_coordinator"] for row in rows]
    if placement == "central":  # the coordinator sees the noiseless sum
        assert coordinator == [None, None]
        assert status["privacy"]["epsilon_coordinator"] is None
    else:  # every client took part in every round: no amplification was lost
        assert coordinator == pytest.approx(expected)
    assert status["privacy"]["epsilon_public"] == pytest.approx(expected[-1])
    assert status["privacy"]["accounting"] == "rdp"
