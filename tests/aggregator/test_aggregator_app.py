"""The aggregator's HTTP API, in process: admitted uploads, the coordinator's aggregate
requests, and every kind of refused request."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.contributions import seal
from tests.run_descriptions import secure_run

from veilfl.aggregator.access import AggregatorAccess
from veilfl.aggregator.service import AggregatorService, create_aggregator_app
from veilfl.auth.admission import ADMISSION_HEADER, RoundAdmission, issue_admission
from veilfl.auth.identity import Identity
from veilfl.auth.rate_limit import RateLimit
from veilfl.auth.signed_request import COORDINATOR_SIGNER, aggregator_audience
from veilfl.crypto.envelope import decode_share
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.keys import generate_keypair
from veilfl.errors import ConfigurationError
from veilfl.privacy.dp_config import DpConfig
from veilfl.protocol.messages import DpRunInfo, RunInfo
from veilfl.secagg.aggregator_policy import AggregatorPolicy
from veilfl.secagg.commitment import Commitment, CommitmentCertificate
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout
from veilfl.transport.signing import SigningAuth, for_round

pytestmark = pytest.mark.timeout(60)
KEYS = [generate_keypair() for _ in range(3)]
PINS = [key.fingerprint for key in KEYS]
CONFIG = SecureAggregationConfig(threshold=2, num_aggregators=3, max_samples_per_client=10)
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
        model_size=D,
        coordinator_key=COORDINATOR.public_key_text,
    )


@asynccontextmanager
async def _served(
    spool: Path, run: RunInfo
) -> AsyncIterator[tuple[httpx.AsyncClient, AggregatorService]]:
    """Aggregator 1 (operator minimum 2) serving ``run``, and a client of its API."""
    service = AggregatorService(
        index=1, keypair=KEYS[0], spool=spool, min_participants=2, peer_fingerprints=PINS
    )
    app = create_aggregator_app(
        service,
        coordinator_url=None,
        max_share_bytes=1 << 20,
        access=AggregatorAccess(index=1, rate_limit=RateLimit(per_second=5, burst=5)),
        run=run,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://agg"
    ) as client:
        yield client, service


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, AggregatorService]]:
    async with _served(tmp_path, _run()) as served:
        yield served


def _envelope(client_id: str, *, round_id: int = 1) -> bytes:
    sealed = seal(
        CONFIG, KEYS, run_id=RUN, round_id=round_id, client_id=client_id, update=np.full(D, 0.1)
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


async def _commit(
    http: httpx.AsyncClient, participants: list[str], auth: httpx.Auth = COORDINATOR_AUTH
) -> httpx.Response:
    return await http.post(
        "/v1/rounds/1/commit",
        json={"participants": participants},
        auth=auth,
        extensions=for_round(1),
    )


def _certificate(
    participants: list[str], *, signers: tuple[int, ...] = (1, 2, 3)
) -> dict[str, object]:
    """A certificate for ``participants`` signed by ``signers`` (the test holds every
    aggregator's key; aggregator 1 under test has not committed itself)."""
    commitment = Commitment.of(RUN, 1, participants)
    signatures = {j: KEYS[j - 1].sign(commitment.message()) for j in signers}
    return CommitmentCertificate(commitment, signatures).to_json()


async def _aggregate(
    http: httpx.AsyncClient,
    participants: list[str],
    auth: httpx.Auth = COORDINATOR_AUTH,
    *,
    signers: tuple[int, ...] = (1, 2, 3),
) -> httpx.Response:
    return await http.post(
        "/v1/rounds/1/aggregate",
        json={
            "participants": participants,
            "certificate": _certificate(participants, signers=signers),
        },
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
    length = ContributionLayout(D, CONFIG).measurement_length
    share = decode_share(response.content, expected_length=length, field=MERSENNE_31)
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
    unsigned = await http.post(
        "/v1/rounds/1/aggregate", json={"participants": ids, "certificate": _certificate(ids)}
    )
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
    alone = await _commit(http, [ALICE.client_id])
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
    # Its operator pinned its own key as aggregator 2; the run publishes another there.
    pins = [KEYS[1].fingerprint, KEYS[0].fingerprint, KEYS[2].fingerprint]
    service = AggregatorService(index=2, keypair=KEYS[0], spool=tmp_path, peer_fingerprints=pins)
    with pytest.raises(ConfigurationError, match="does not publish this aggregator's key"):
        service.attach(_run())


async def test_a_sum_is_released_only_against_a_quorum_certificate(
    api: tuple[httpx.AsyncClient, AggregatorService],
) -> None:
    http, _ = api
    clients = [Identity.generate() for _ in range(3)]
    for client in clients:
        assert (await _upload(http, client)).status_code == 202
    ids = [c.client_id for c in clients]
    # m = 3, t = 2: the quorum is ceil((3 + 2) / 2) = 3; a majority of two is not enough.
    short = await _aggregate(http, ids, signers=(2, 3))
    assert short.status_code == 409 and "3 of the 3" in short.json()["message"]
    # A certificate for another list than the one asked for does not parse as this one's.
    other = await http.post(
        "/v1/rounds/1/aggregate",
        json={"participants": ids, "certificate": _certificate(ids[:2], signers=(2, 3))},
        auth=COORDINATOR_AUTH,
        extensions=for_round(1),
    )
    assert other.status_code == 400 and "another participant list" in other.json()["message"]
    # Its own commitment plus both peers' is the quorum.
    committed = await _commit(http, ids)
    assert committed.status_code == 200
    commitment = Commitment.of(RUN, 1, ids)
    own = {1: base64.b64decode(committed.json()["signature"])}
    one_peer = CommitmentCertificate(commitment, {**own, 2: KEYS[1].sign(commitment.message())})
    assert (
        await http.post(
            "/v1/rounds/1/aggregate",
            json={"participants": ids, "certificate": one_peer.to_json()},
            auth=COORDINATOR_AUTH,
            extensions=for_round(1),
        )
    ).status_code == 409
    signatures = {**own, **{j: KEYS[j - 1].sign(commitment.message()) for j in (2, 3)}}
    response = await http.post(
        "/v1/rounds/1/aggregate",
        json={
            "participants": ids,
            "certificate": CommitmentCertificate(commitment, signatures).to_json(),
        },
        auth=COORDINATOR_AUTH,
        extensions=for_round(1),
    )
    assert response.status_code == 200, response.text


async def test_an_aggregator_commits_to_one_participant_list_per_round(
    api: tuple[httpx.AsyncClient, AggregatorService],
) -> None:
    http, _ = api
    clients = [Identity.generate() for _ in range(3)]
    for client in clients:
        assert (await _upload(http, client)).status_code == 202
    ids = [c.client_id for c in clients]
    first = await _commit(http, ids)
    assert first.status_code == 200
    again = await _commit(http, ids)
    assert again.json()["signature"] == first.json()["signature"]
    second = await _commit(http, ids[:2])
    assert second.status_code == 409 and "another participant list" in second.json()["message"]
    # Nor does it sum the other list, whatever the coordinator says the others signed.
    assert (await _aggregate(http, ids[:2])).status_code == 409
    as_client = await _commit(http, ids, auth=SigningAuth(clients[0], AUDIENCE))
    assert as_client.status_code == 401


async def test_a_dp_run_s_sum_over_fewer_clients_than_a_release_needs_is_refused(
    tmp_path: Path,
) -> None:
    """The operator allows sums over 2, but the run's DP release needs 3 contributions
    (--dp-min-clients): the aggregator refuses to commit to 2, so the release is withheld."""
    dp = DpConfig(placement="central", noise_multiplier=1.0, clip_norm=1.0, min_clients=3)
    clients = [Identity.generate() for _ in range(3)]
    run = replace(_run(), dp=DpRunInfo(config=dp, sample_rate=0.5))
    async with _served(tmp_path, run) as (http, _):
        for client in clients:
            assert (await _upload(http, client)).status_code == 202
        ids = [c.client_id for c in clients]
        short = await _commit(http, ids[:2])
        assert short.status_code == 409 and "at least 3" in short.json()["message"]
        assert (await _commit(http, ids)).status_code == 200


async def test_verifier_shares_answer_one_query_per_round(
    api: tuple[httpx.AsyncClient, AggregatorService],
) -> None:
    http, _ = api
    clients = [Identity.generate() for _ in range(2)]
    for client in clients:
        assert (await _upload(http, client)).status_code == 202
    ids = [c.client_id for c in clients]

    async def verify(seed: bytes) -> httpx.Response:
        return await http.post(
            "/v1/rounds/1/verify",
            json={"clients": ids, "query_seed": seed.hex()},
            auth=COORDINATOR_AUTH,
            extensions=for_round(1),
        )

    answered = await verify(b"\x01" * 32)
    assert answered.status_code == 200, answered.text
    assert set(answered.json()["answers"]) == set(ids)
    assert (await verify(b"\x01" * 32)).status_code == 200
    second = await verify(b"\x02" * 32)
    assert second.status_code == 409 and "another query" in second.json()["message"]


async def test_the_policy_is_served_signed_with_the_aggregators_key(
    api: tuple[httpx.AsyncClient, AggregatorService],
) -> None:
    http, _ = api
    response = await http.get("/v1/policy")
    assert response.status_code == 200
    policy = AggregatorPolicy.from_json(response.json())
    assert policy.min_participants == 2 and policy.index == 1
    assert policy.verified_by(KEYS[0].signing_public_bytes)
    forged = AggregatorPolicy.from_json({**response.json(), "min_participants": 1})
    assert not forged.verified_by(KEYS[0].signing_public_bytes)
