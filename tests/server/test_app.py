"""The coordinator's HTTP API, driven in-process through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
from tests.signed_clients import enroll, open_access, signed_client
from tests.tiny_coordinator import sync_core, sync_service

from veilfl.protocol.messages import UpdateHeader
from veilfl.protocol.metrics import RoundMetrics
from veilfl.reporting import render_metrics
from veilfl.server import metrics_plot
from veilfl.server.app import create_app
from veilfl.server.service import CoordinatorService
from veilfl.tensors import Weights
from veilfl.transport.signing import for_round
from veilfl.wire.tensor_codec import decode_weights, encode_weights

pytestmark = pytest.mark.timeout(60)


def _weights(value: float) -> Weights:
    return {"w": np.full((3, 2), value, dtype=np.float32), "b": np.full(2, value, np.float32)}


class Api:
    """An in-process coordinator: an unsigned client, the transport and the service."""

    def __init__(
        self, client: httpx.AsyncClient, transport: httpx.ASGITransport, service: CoordinatorService
    ) -> None:
        self.client = client
        self.transport = transport
        self.service = service
        self.enrolled: list[httpx.AsyncClient] = []

    async def enroll(self, name: str = "") -> tuple[str, httpx.AsyncClient]:
        client_id, signed = await enroll(self.transport, "r1", name=name)
        self.enrolled.append(signed)
        return client_id, signed


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    start = _weights(0.0)
    core = sync_core(start, num_rounds=1, clients_per_round=2, min_clients=2, poll_interval_s=0.01)
    service = sync_service(core)
    app = create_app(service, metrics=lambda: list(core.history), access=open_access("r1"))
    await service.start(tick_interval_s=0.01)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        api = Api(client, transport, service)
        yield api
        for signed in api.enrolled:
            await signed.aclose()
    await service.stop()


async def _join_two(api: Api) -> list[tuple[str, httpx.AsyncClient]]:
    return [await api.enroll(name) for name in ("a", "b")]


def _update(client_id: str, weights: Weights, *, round_id: int = 1, version: int = 0) -> bytes:
    header = UpdateHeader(
        client_id=client_id, round_id=round_id, base_version=version, num_samples=4, loss=1.0
    )
    return encode_weights(weights, metadata=header.to_metadata())


async def test_a_round_over_http_produces_the_averaged_model(api: Api) -> None:
    clients = await _join_two(api)
    for index, (client_id, client) in enumerate(clients):
        task = (await client.get(f"/v1/clients/{client_id}/task")).json()
        assert task["kind"] == "train"
        assert task["admission"] is None  # plaintext runs need no aggregator admission
        model = await client.get("/v1/model")
        assert model.headers["X-Model-Version"] == "0"
        response = await client.post(
            "/v1/rounds/1/updates",
            content=_update(client_id, _weights(float(index + 1))),
            extensions=for_round(1),
        )
        assert response.status_code == 202, response.text
    await asyncio.wait_for(api.service.finished.wait(), timeout=5)
    first_id, first = clients[0]
    final, _ = decode_weights((await first.get("/v1/model")).content)
    np.testing.assert_allclose(final["w"], 1.5)
    assert (await first.get(f"/v1/clients/{first_id}/task")).json()["kind"] == "done"
    metrics = (await api.client.get("/v1/metrics")).json()
    assert [m["round_id"] for m in metrics] == [1]


async def test_the_plot_is_drawn_on_demand_and_again_only_when_the_rounds_changed(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[int] = []

    def counting_render(history: tuple[RoundMetrics, ...], *, title: str) -> bytes:
        drawn.append(len(history))
        return render_metrics(history, title=title)

    monkeypatch.setattr(metrics_plot, "render_metrics", counting_render)
    before = await api.client.get("/v1/metrics.png")
    assert before.status_code == 200 and before.headers["content-type"] == "image/png"
    assert before.content.startswith(b"\x89PNG")
    assert drawn == [0]  # nothing drawn until asked for
    clients = await _join_two(api)
    for index, (client_id, client) in enumerate(clients):
        await client.get(f"/v1/clients/{client_id}/task")
        await client.post(
            "/v1/rounds/1/updates",
            content=_update(client_id, _weights(float(index + 1))),
            extensions=for_round(1),
        )
    await asyncio.wait_for(api.service.finished.wait(), timeout=5)
    assert drawn == [0]  # a completed round draws nothing by itself
    after = await api.client.get("/v1/metrics.png")
    again = await api.client.get("/v1/metrics.png")
    assert after.content != before.content and again.content == after.content
    assert drawn == [0, 1]


@pytest.mark.parametrize(
    ("body_for", "status", "words"),
    [
        (lambda cid: b"not safetensors at all", 400, "header"),
        (lambda cid: b"", 400, "empty"),
        (lambda cid: _update("stranger", _weights(1.0)), 403, "says it is from stranger"),
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
    api: Api,
    body_for: object,
    status: int,
    words: str,
) -> None:
    (client_id, client), _ = await _join_two(api)
    await client.get(f"/v1/clients/{client_id}/task")
    before = (await api.client.get("/v1/status")).json()
    response = await client.post(
        "/v1/rounds/1/updates",
        content=body_for(client_id),  # type: ignore[operator]
        extensions=for_round(1),
    )
    assert response.status_code == status
    assert words in response.json()["message"].lower()
    assert (await api.client.get("/v1/status")).json() == before
    # The round is intact: the same client can still upload a good update.
    good = await client.post(
        "/v1/rounds/1/updates", content=_update(client_id, _weights(1.0)), extensions=for_round(1)
    )
    assert good.status_code == 202


async def test_a_client_that_never_enrolled_gets_401_and_changes_nothing(api: Api) -> None:
    identity, stranger = signed_client(api.transport, "r1")
    before = (await api.client.get("/v1/status")).json()
    async with stranger:
        response = await stranger.get(f"/v1/clients/{identity.client_id}/task")
    assert response.status_code == 401
    assert "not enrolled" in response.json()["message"]
    assert (await api.client.get("/v1/status")).json() == before


async def test_malformed_join_body_is_a_422_with_a_message(api: Api) -> None:
    response = await api.client.post("/v1/clients", json={"name": 5})
    assert response.status_code == 422
    assert "name" in response.json()["message"]


async def test_openapi_spec_lists_every_endpoint(api: Api) -> None:
    client = api.client
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/v1/clients", "/v1/model", "/v1/rounds/{round_id}/updates", "/v1/status"):
        assert path in paths
