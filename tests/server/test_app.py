"""The coordinator's HTTP API, driven in-process through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest

from veilfl.protocol.coordinator import PlaintextAggregation, SyncCoordinator
from veilfl.protocol.messages import LocalTrainingPlan, RunInfo, UpdateHeader
from veilfl.protocol.sync_round import RoundConfig, SyncRoundMachine
from veilfl.server.app import create_app
from veilfl.server.service import CoordinatorService
from veilfl.strategy.fedavg import FedAvg
from veilfl.tensors import Weights, spec_of
from veilfl.wire.tensor_codec import decode_weights, encode_weights

pytestmark = pytest.mark.timeout(60)


def _weights(value: float) -> Weights:
    return {"w": np.full((3, 2), value, dtype=np.float32), "b": np.full(2, value, np.float32)}


@pytest.fixture
async def api() -> AsyncIterator[tuple[httpx.AsyncClient, CoordinatorService]]:
    start = _weights(0.0)
    core = SyncCoordinator(
        machine=SyncRoundMachine(
            RoundConfig(num_rounds=1, clients_per_round=2, min_clients=2, poll_interval_s=0.01),
            rng=random.Random(0),
        ),
        spec=spec_of(start),
        initial_weights=start,
        aggregation=PlaintextAggregation(spec_of(start)),
        strategy=FedAvg(),
    )
    service = CoordinatorService(
        core,
        run_info=RunInfo(run_id="r1", model_name="tiny", num_rounds=1, plan=LocalTrainingPlan()),
        max_update_bytes=1 << 20,
    )
    app = create_app(service, metrics=lambda: list(core.history))
    await service.start(tick_interval_s=0.01)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, service
    await service.stop()


async def _join_two(client: httpx.AsyncClient) -> list[str]:
    ids = []
    for name in ("a", "b"):
        response = await client.post("/v1/clients", json={"name": name})
        assert response.status_code == 201
        ids.append(response.json()["client_id"])
    return ids


def _update(client_id: str, weights: Weights, *, round_id: int = 1, version: int = 0) -> bytes:
    header = UpdateHeader(
        client_id=client_id, round_id=round_id, base_version=version, num_samples=4, loss=1.0
    )
    return encode_weights(weights, metadata=header.to_metadata())


async def test_a_round_over_http_produces_the_averaged_model(
    api: tuple[httpx.AsyncClient, CoordinatorService],
) -> None:
    client, service = api
    ids = await _join_two(client)
    for index, client_id in enumerate(ids):
        task = (await client.get(f"/v1/clients/{client_id}/task")).json()
        assert task["kind"] == "train"
        model = await client.get("/v1/model")
        assert model.headers["X-Model-Version"] == "0"
        response = await client.post(
            "/v1/rounds/1/updates", content=_update(client_id, _weights(float(index + 1)))
        )
        assert response.status_code == 202, response.text
    await asyncio.wait_for(service.finished.wait(), timeout=5)
    final, _ = decode_weights((await client.get("/v1/model")).content)
    np.testing.assert_allclose(final["w"], 1.5)
    assert (await client.get(f"/v1/clients/{ids[0]}/task")).json()["kind"] == "done"
    metrics = (await client.get("/v1/metrics")).json()
    assert [m["round_id"] for m in metrics] == [1]


@pytest.mark.parametrize(
    ("body_for", "status", "words"),
    [
        (lambda cid: b"not safetensors at all", 400, "header"),
        (lambda cid: b"", 400, "empty"),
        (lambda cid: _update("stranger", _weights(1.0)), 404, "has not joined"),
        (lambda cid: _update(cid, {"w": np.zeros((2, 3), np.float32)}), 422, "missing"),
        (
            lambda cid: _update(
                cid, {"w": np.zeros((2, 3), np.float32), "b": np.zeros(2, np.float32)}
            ),
            422,
            "shape",
        ),
        (lambda cid: _update(cid, _weights(1.0), round_id=7), 409, "round"),
        (lambda cid: _update(cid, _weights(1.0), version=3), 409, "version"),
    ],
)
async def test_bad_uploads_get_a_4xx_that_says_what_was_wrong_and_change_nothing(
    api: tuple[httpx.AsyncClient, CoordinatorService],
    body_for: object,
    status: int,
    words: str,
) -> None:
    client, _ = api
    ids = await _join_two(client)
    await client.get(f"/v1/clients/{ids[0]}/task")
    before = (await client.get("/v1/status")).json()
    response = await client.post("/v1/rounds/1/updates", content=body_for(ids[0]))  # type: ignore[operator]
    assert response.status_code == status
    assert words in response.json()["message"].lower()
    assert (await client.get("/v1/status")).json() == before
    # The round is intact: the same client can still upload a good update.
    good = await client.post("/v1/rounds/1/updates", content=_update(ids[0], _weights(1.0)))
    assert good.status_code == 202


async def test_unknown_client_asking_for_a_task_gets_404(
    api: tuple[httpx.AsyncClient, CoordinatorService],
) -> None:
    client, _ = api
    response = await client.get("/v1/clients/nobody/task")
    assert response.status_code == 404
    assert "join first" in response.json()["message"]


async def test_malformed_join_body_is_a_422_with_a_message(
    api: tuple[httpx.AsyncClient, CoordinatorService],
) -> None:
    client, _ = api
    response = await client.post("/v1/clients", json={"name": 5})
    assert response.status_code == 422
    assert "name" in response.json()["message"]


async def test_openapi_spec_lists_every_endpoint(
    api: tuple[httpx.AsyncClient, CoordinatorService],
) -> None:
    client, _ = api
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/v1/clients", "/v1/model", "/v1/rounds/{round_id}/updates", "/v1/status"):
        assert path in paths
