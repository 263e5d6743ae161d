"""Many clients at once: every update counted exactly once, retries included.

(How fast the event loop answers under load is a benchmark, not a test:
``benchmarks/load_test.py`` measures latency percentiles side by side.)"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from tests.signed_clients import enroll, open_access
from tests.tiny_coordinator import sync_core, sync_service

from veilfl.protocol.messages import UpdateHeader
from veilfl.server.app import create_app
from veilfl.transport.signing import for_round
from veilfl.wire.tensor_codec import encode_weights

pytestmark = pytest.mark.timeout(120)
CLIENTS = 300


async def test_hundreds_of_concurrent_clients_each_counted_once() -> None:
    start = {"w": np.zeros(50_000, np.float32)}
    core = sync_core(
        start, num_rounds=1, clients_per_round=CLIENTS, min_clients=CLIENTS, poll_interval_s=0.05
    )
    service = sync_service(core, max_update_bytes=1 << 22)
    app = create_app(service, metrics=lambda: list(core.history), access=open_access("r"))
    await service.start(tick_interval_s=0.05)

    transport = httpx.ASGITransport(app=app)

    async def one_client(index: int) -> None:
        client_id, http = await enroll(transport, "r", name=str(index))
        try:
            await train_once(http, client_id)
        finally:
            await http.aclose()

    async def train_once(http: httpx.AsyncClient, client_id: str) -> None:
        while True:
            task = (await http.get(f"/v1/clients/{client_id}/task")).json()
            if task["kind"] == "train":
                break
            await asyncio.sleep(0.05)
        header = UpdateHeader(
            client_id=client_id, round_id=1, base_version=0, num_samples=1, loss=0.0
        )
        body = encode_weights({"w": np.ones(50_000, np.float32)}, metadata=header.to_metadata())
        for _ in range(2):  # a retried upload must not count twice
            response = await http.post(
                "/v1/rounds/1/updates", content=body, extensions=for_round(1)
            )
            assert response.status_code == 202

    try:
        await asyncio.gather(*(one_client(i) for i in range(CLIENTS)))
        await asyncio.wait_for(service.finished.wait(), timeout=30)
    finally:
        await service.stop()
    (metrics,) = core.history
    assert metrics.num_clients == CLIENTS
    np.testing.assert_allclose(core.global_model().weights["w"], 1.0)
