"""The aggregator's HTTP API, in process: admitted uploads, the coordinator's aggregate
requests, and every kind of refused request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.run_descriptions import secure_run

from veilfl.aggregator.access import AggregatorAccess
from veilfl.aggregator.service import AggregatorService, create_aggregator_app
from veilfl.auth.admission import ADMISSION_HEADER, RoundAdmission, issue_admission
from veilfl.auth.identity import Identity
from veilfl.auth.rate_limit import RateLimit
from veilfl.auth.signed_request import COORDINATOR_SIGNER, aggregator_audience
from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.envelope import decode_share
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.keys import generate_keypair
from veilfl.errors import ConfigurationError
from veilfl.protocol.messages import RunInfo
from veilfl.secagg.client_shares import seal_update
from veilfl.secagg.config import EXTRA_COORDINATES, SecureAggregationConfig
from veilfl.transport.signing import SigningAuth, for_round

pytestmark = pytest.mark.timeout(60)
KEYS = [generate_keypair() for _ in range(3)]
CONFIG = SecureAggregationConfig(threshold=2, num_aggregators=3, max_clients=8)
D = 5
RUN = "run-1"
COORDINATOR = Identity.generate()
AUDIENCE = aggregator_audience(1, RUN)
COORDINATOR_AUTH = SigningAuth(COORDINATOR, AUDIENCE, signer_id=COORDINATOR_SIGNER)


def _run() -> RunInfo:
    return secure_run(
        RUN,
        config=CONFIG,
        keys=KEYS,
        vector_length=D + EXTRA_COORDINATES,
        coordinator_key=COORDINATOR.public_key_text,
    )


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, AggregatorService]]:
    service = AggregatorService(index=1, keypair=KEYS[0], spool=tmp_path, min_participants=2)
    app = create_aggregator_app(
        service,
        coordinator_url=None,
        max_share_bytes=1 << 20,
        access=AggregatorAccess(index=1, rate_limit=RateLimit(per_second=5, burst=5)),
        run=_run(),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://agg"
    ) as client:
        yield client, service


def _envelope(client_id: str, *, round_id: int = 1) -> bytes:
    sealed = seal_update(
        np.full(D, 0.1, np.float32),
        num_samples=5,
        loss=1.0,
        config=CONFIG,
        public_keys=[k.public_key for k in KEYS],
        run_id=RUN,
        round_id=round_id,
        client_id=client_id,
        rng=CsprngStream(),
    )
    return sealed[0].envelope


def _admission(client: Identity, round_id: int = 1, *, signer: Identity = COORDINATOR) -> str:
    return issue_admission(
        signer,
        RoundAdmission(
            run_id=RUN, round_id=round_id, client_id=client.client_id, client_key=client.public_key
        ),
    )


async def _upload(
    http: httpx.AsyncClient,
    client: Identity,
    *,
    round_id: int = 1,
    body: bytes | None = None,
    admission: str | None = None,
    auth: httpx.Auth | None = None,
) -> httpx.Response:
    return await http.post(
        f"/v1/rounds/{round_id}/shares",
        content=_envelope(client.client_id, round_id=round_id) if body is None else body,
        headers={ADMISSION_HEADER: admission or _admission(client, round_id)},
        auth=auth or SigningAuth(client, AUDIENCE),
        extensions=for_round(round_id),
    )


async def _aggregate(
    http: httpx.AsyncClient, participants: list[str], auth: httpx.Auth = COORDINATOR_AUTH
) -> httpx.Response:
    return await http.post(
        "/v1/rounds/1/aggregate",
        json={"participants": participants},
        auth=auth,
        extensions=for_round(1),
    )


async def test_admitted_shares_in_aggregate_out(
    api: tuple[httpx.AsyncClient, AggregatorService],
) -> None:
    http, service = api
    clients = [Identity.generate() for _ in range(3)]
    for client in clients:
        response = await _upload(http, client)
        assert response.status_code == 202, response.text
    assert service.status()["rounds"] == {"1": 3}
    response = await _aggregate(http, [c.client_id for c in clients[:2]])
    assert response.status_code == 200, response.text
    share = decode_share(response.content, expected_length=D + EXTRA_COORDINATES, field=MERSENNE_31)
    assert share.index == 1


ALICE, MALLORY = Identity.generate(), Identity.generate()


@pytest.mark.parametrize(
    ("upload", "status", "words"),
    [
        ({"body": b""}, 400, "empty"),
        ({"body": b"\x00" * 100}, 400, "does not open"),
        ({"body": _envelope(MALLORY.client_id)}, 400, "does not open"),
        ({"admission": "nonsense"}, 401, "malformed"),
        ({"admission": _admission(ALICE, signer=MALLORY)}, 401, "not signed by"),
        ({"admission": _admission(ALICE, round_id=2)}, 403, "for round 2"),
        ({"admission": _admission(MALLORY)}, 401, "not enrolled"),
        ({"auth": SigningAuth(MALLORY, AUDIENCE, signer_id=ALICE.client_id)}, 401, "not match"),
        ({"auth": SigningAuth(ALICE, aggregator_audience(2, RUN))}, 401, "not match"),
    ],
)
async def test_bad_or_unadmitted_uploads_are_4xx_and_change_nothing(
    api: tuple[httpx.AsyncClient, AggregatorService],
    upload: dict[str, object],
    status: int,
    words: str,
) -> None:
    http, service = api
    response = await _upload(http, ALICE, **upload)  # type: ignore[arg-type]
    assert response.status_code == status, response.text
    assert words in response.json()["message"]
    assert service.status()["rounds"] in ({}, {"1": 0})


async def test_an_unsigned_upload_is_refused(
    api: tuple[httpx.AsyncClient, AggregatorService],
) -> None:
    http, service = api
    response = await http.post(
        "/v1/rounds/1/shares",
        content=_envelope(ALICE.client_id),
        headers={ADMISSION_HEADER: _admission(ALICE)},
    )
    assert response.status_code == 401 and "must be signed" in response.json()["message"]
    assert service.status()["rounds"] == {}


async def test_a_client_admitted_to_the_open_round_cannot_open_a_later_one(
    api: tuple[httpx.AsyncClient, AggregatorService],
) -> None:
    http, service = api
    assert (await _upload(http, ALICE)).status_code == 202
    # A valid share for round 2 would make the aggregator drop round 1; without the
    # coordinator's admission to round 2 it is refused before anything changes.
    response = await _upload(http, ALICE, round_id=2, admission=_admission(ALICE, round_id=1))
    assert response.status_code == 403
    assert service.status()["rounds"] == {"1": 1}


async def test_a_replayed_upload_is_refused(
    api: tuple[httpx.AsyncClient, AggregatorService],
) -> None:
    http, _ = api
    first = await _upload(http, ALICE)
    assert first.status_code == 202
    replay = await http.send(first.request)
    assert replay.status_code == 401 and "replay" in replay.json()["message"]


async def test_only_the_coordinator_may_ask_for_an_aggregate(
    api: tuple[httpx.AsyncClient, AggregatorService],
) -> None:
    http, _ = api
    clients = [Identity.generate() for _ in range(2)]
    for client in clients:
        assert (await _upload(http, client)).status_code == 202
    ids = [c.client_id for c in clients]
    unsigned = await http.post("/v1/rounds/1/aggregate", json={"participants": ids})
    assert unsigned.status_code == 401
    as_client = await _aggregate(http, ids, auth=SigningAuth(clients[0], AUDIENCE))
    assert as_client.status_code == 401
    impostor = await _aggregate(
        http, ids, auth=SigningAuth(MALLORY, AUDIENCE, signer_id=COORDINATOR_SIGNER)
    )
    assert impostor.status_code == 401
    # None of them used up the one participant list the aggregator answers.
    assert (await _aggregate(http, ids)).status_code == 200


async def test_aggregating_one_client_or_an_unknown_one_is_refused(
    api: tuple[httpx.AsyncClient, AggregatorService],
) -> None:
    http, _ = api
    await _upload(http, ALICE)
    alone = await _aggregate(http, [ALICE.client_id])
    assert alone.status_code == 409 and "at least 2" in alone.json()["message"]
    unknown = await _aggregate(http, [ALICE.client_id, "zed"])
    assert unknown.status_code == 409 and "holds no share" in unknown.json()["message"]


async def test_a_client_sending_too_fast_gets_429_with_retry_after(
    api: tuple[httpx.AsyncClient, AggregatorService],
) -> None:
    http, _ = api
    answers = [(await _upload(http, ALICE)).status_code for _ in range(7)]
    assert answers[:5] == [202] * 5  # the first, then duplicates acknowledged
    limited = await _upload(http, ALICE)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1


def test_attaching_to_a_run_that_publishes_another_key_is_refused(tmp_path: Path) -> None:
    service = AggregatorService(index=2, keypair=KEYS[0], spool=tmp_path)
    with pytest.raises(ConfigurationError, match="does not publish this aggregator's key"):
        service.attach(_run())
