"""The aggregator's HTTP API, in process: uploads, aggregation, and bad requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from veilfl.aggregator.service import AggregatorService, create_aggregator_app
from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.envelope import decode_share
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.keys import generate_keypair
from veilfl.errors import ConfigurationError
from veilfl.secagg.client_shares import seal_update
from veilfl.secagg.config import EXTRA_COORDINATES, SecureAggregationConfig

pytestmark = pytest.mark.timeout(60)
KEYS = [generate_keypair() for _ in range(3)]
CONFIG = SecureAggregationConfig(threshold=2, num_aggregators=3, max_clients=8)
D = 5


def _run() -> dict[str, object]:
    return {
        "run_id": "run-1",
        "secure": {
            "config": CONFIG.to_json(),
            "vector_length": D + EXTRA_COORDINATES,
            "aggregators": [{"index": j + 1, "fingerprint": KEYS[j].fingerprint} for j in range(3)],
        },
    }


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, AggregatorService]]:
    service = AggregatorService(index=1, keypair=KEYS[0], spool=tmp_path, min_participants=2)
    service.attach(_run())
    app = create_aggregator_app(service, coordinator_url=None, max_share_bytes=1 << 20)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://agg"
    ) as client:
        yield client, service


def _envelope(client: str, *, round_id: int = 1) -> bytes:
    sealed = seal_update(
        np.full(D, 0.1, np.float32),
        num_samples=5,
        loss=1.0,
        config=CONFIG,
        public_keys=[k.public_key for k in KEYS],
        run_id="run-1",
        round_id=round_id,
        client_id=client,
        rng=CsprngStream(),
    )
    return sealed[0].envelope


async def test_shares_in_aggregate_out(
    api: tuple[httpx.AsyncClient, AggregatorService],
) -> None:
    http, service = api
    for client in ("a", "b", "c"):
        response = await http.post(
            "/v1/rounds/1/shares", content=_envelope(client), headers={"X-Veilfl-Client": client}
        )
        assert response.status_code == 202, response.text
    assert service.status()["rounds"] == {"1": 3}
    response = await http.post("/v1/rounds/1/aggregate", json={"participants": ["a", "b"]})
    assert response.status_code == 200
    share = decode_share(response.content, expected_length=D + EXTRA_COORDINATES, field=MERSENNE_31)
    assert share.index == 1


@pytest.mark.parametrize(
    ("headers", "body", "status", "words"),
    [
        ({"X-Veilfl-Client": "a"}, b"", 400, "empty"),
        ({"X-Veilfl-Client": "a"}, b"\x00" * 100, 400, "does not open"),
        ({"X-Veilfl-Client": "mallory"}, None, 400, "does not open"),
        ({}, None, 422, "x-veilfl-client"),
    ],
)
async def test_bad_uploads_are_4xx_and_change_nothing(
    api: tuple[httpx.AsyncClient, AggregatorService],
    headers: dict[str, str],
    body: bytes | None,
    status: int,
    words: str,
) -> None:
    http, service = api
    response = await http.post(
        "/v1/rounds/1/shares", content=_envelope("a") if body is None else body, headers=headers
    )
    assert response.status_code == status
    assert words in response.json()["message"].lower()
    assert service.status()["rounds"] in ({}, {"1": 0})


async def test_aggregating_one_client_or_an_unknown_one_is_refused(
    api: tuple[httpx.AsyncClient, AggregatorService],
) -> None:
    http, _ = api
    await http.post("/v1/rounds/1/shares", content=_envelope("a"), headers={"X-Veilfl-Client": "a"})
    alone = await http.post("/v1/rounds/1/aggregate", json={"participants": ["a"]})
    assert alone.status_code == 409 and "at least 2" in alone.json()["message"]
    unknown = await http.post("/v1/rounds/1/aggregate", json={"participants": ["a", "zed"]})
    assert unknown.status_code == 409 and "holds no share" in unknown.json()["message"]


def test_attaching_to_a_run_that_publishes_another_key_is_refused(tmp_path: Path) -> None:
    service = AggregatorService(index=2, keypair=KEYS[0], spool=tmp_path)
    with pytest.raises(ConfigurationError, match="does not publish this aggregator's key"):
        service.attach(_run())
