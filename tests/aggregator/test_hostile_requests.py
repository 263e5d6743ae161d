"""Hostile requests at the aggregator's coordinator-only JSON endpoints (issue 19): a
body over the endpoint's declared limit is refused with 413 before it is read or parsed,
an unsigned body is refused before it is parsed, and a certificate whose round id is
``1e999`` is a 422, not a 500. Over HTTP, in process."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.run_descriptions import secure_run

from veilfl.aggregator import service as aggregator_service
from veilfl.aggregator.access import AggregatorAccess
from veilfl.aggregator.body_limits import CoordinatorBodyLimits
from veilfl.aggregator.service import AggregatorService, create_aggregator_app
from veilfl.auth.identity import Identity
from veilfl.auth.signed_request import COORDINATOR_SIGNER, aggregator_audience
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.keys import generate_keypair
from veilfl.privacy.tree import TreeNode
from veilfl.secagg.commitment import Commitment, CommitmentCertificate
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout
from veilfl.secagg.noise_envelope import seal_deal
from veilfl.secagg.tree_noise import NoiseDeal
from veilfl.transport.signing import SigningAuth, for_round

pytestmark = pytest.mark.timeout(60)
KEYS = [generate_keypair() for _ in range(3)]
CONFIG = SecureAggregationConfig(threshold=2, num_aggregators=3, max_samples_per_client=10)
RUN = "run-1"
COORDINATOR = Identity.generate()
COORDINATOR_AUTH = SigningAuth(
    COORDINATOR, aggregator_audience(1, RUN), signer_id=COORDINATOR_SIGNER
)
ENDPOINTS = {
    "verify": lambda limits: limits.participant_list,
    "commit": lambda limits: limits.participant_list,
    "aggregate": lambda limits: limits.aggregate,
    "noise-deals": lambda limits: limits.noise_deals,
}
CHUNK = 1 << 16


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, AggregatorService]]:
    service = AggregatorService(
        index=1,
        keypair=KEYS[0],
        spool=tmp_path,
        min_participants=2,
        peer_fingerprints=[k.fingerprint for k in KEYS],
    )
    app = create_aggregator_app(
        service,
        coordinator_url=None,
        max_share_bytes=1 << 20,
        access=AggregatorAccess(index=1, rate_limit=None),
        run=secure_run(
            RUN, config=CONFIG, keys=KEYS, model_size=5, coordinator_key=COORDINATOR.public_key_text
        ),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://agg"
    ) as client:
        yield client, service


@pytest.fixture
def no_parsing(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every body the endpoints parse (none, in these tests, unless signed)."""
    parsed: list[bytes] = []
    original = aggregator_service._parse_body

    def spy(model: type, body: bytes) -> object:
        parsed.append(body)
        return original(model, body)

    monkeypatch.setattr(aggregator_service, "_parse_body", spy)
    return parsed


class _Streamed:
    """A body of ``size`` bytes in 64 KiB chunks that counts what the server pulled."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        remaining = self.size
        while remaining > 0:
            chunk = b"[" * min(CHUNK, remaining)
            remaining -= len(chunk)
            self.pulled += len(chunk)
            yield chunk


@pytest.mark.parametrize("endpoint", sorted(ENDPOINTS))
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_body_over_the_declared_limit_is_413_unread_and_unparsed(
    api: tuple[httpx.AsyncClient, AggregatorService],
    no_parsing: list[bytes],
    endpoint: str,
    declared: bool,
) -> None:
    # Arrange: one byte more than the largest body an honest coordinator sends there.
    http, service = api
    limit = ENDPOINTS[endpoint](service.coordinator_body_limits())
    body = _Streamed(limit + 1 if declared else limit + 8 * CHUNK)
    headers = {"Content-Length": str(body.size)} if declared else {}
    # Act
    response = await http.post(
        f"/v1/rounds/1/{endpoint}", content=body, headers=headers, extensions=for_round(1)
    )
    # Assert: refused for its size (before any signature check); a declared length is
    # refused before a byte is read, a chunked body as soon as it passes the limit.
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "BodyTooLargeError"
    assert f"{limit:,} bytes" in response.json()["message"]
    if declared:
        assert body.pulled == 0
    else:
        assert limit < body.pulled <= limit + CHUNK
    assert no_parsing == []


async def test_an_unsigned_body_within_the_limit_is_refused_before_it_is_parsed(
    api: tuple[httpx.AsyncClient, AggregatorService], no_parsing: list[bytes]
) -> None:
    http, _ = api
    for endpoint in ENDPOINTS:
        response = await http.post(
            f"/v1/rounds/1/{endpoint}", content=b"[" * 10_000, extensions=for_round(1)
        )
        assert response.status_code == 401, response.text
    assert no_parsing == []


async def test_a_certificate_round_id_of_1e999_is_422_not_500(
    api: tuple[httpx.AsyncClient, AggregatorService], no_parsing: list[bytes]
) -> None:
    # Arrange: a well-formed, signed aggregate request except for the round id, a JSON
    # number too large for a float (it decodes to infinity).
    http, _ = api
    participants = ["a", "b"]
    commitment = Commitment.of(RUN, 1, participants)
    certificate = CommitmentCertificate(
        commitment, {2: KEYS[1].sign(commitment.message())}
    ).to_json()
    text = json.dumps({"participants": participants, "certificate": certificate})
    hostile = text.replace('"round_id": 1', '"round_id": 1e999')
    assert hostile != text
    # Act
    response = await http.post(
        "/v1/rounds/1/aggregate",
        content=hostile.encode(),
        headers={"Content-Type": "application/json"},
        auth=COORDINATOR_AUTH,
        extensions=for_round(1),
    )
    # Assert: parsed only once the coordinator's signature verified, then refused.
    assert response.status_code == 422, response.text
    assert "certificate.round_id" in response.json()["message"]
    assert len(no_parsing) == 1


def test_the_limits_admit_the_largest_honest_bodies() -> None:
    # The most participants the encoding sums, each with the longest client id; for an
    # aggregate also a certificate of 16 signatures and m - 1 real deals of full shares,
    # sealed to the largest KEM's key.
    layout = ContributionLayout(5, CONFIG)
    limits = CoordinatorBodyLimits.for_run(layout, max_participants=layout.max_summands())
    names = ["x" * 64] * layout.max_summands()
    listed = json.dumps({"participants": names, "query_seed": "0" * 64})
    assert len(listed) <= limits.participant_list
    deal = NoiseDeal(
        node=TreeNode(0, 1),
        dealer=2,
        recipient=1,
        values=np.full(layout.measurement_length, MERSENNE_31.modulus - 1, dtype=np.uint64),
    )
    sealed = seal_deal(
        deal,
        run_id=RUN,
        step=2**40,
        public_key=generate_keypair("mlkem768-x25519").public_key,
        sign=KEYS[1].sign,
    )
    body = {
        "participants": names,
        "certificate": {
            "round_id": 2**64 - 1,
            "digest": "0" * 64,
            "signatures": {str(j): base64.b64encode(bytes(64)).decode() for j in range(1, 17)},
        },
        "noise_step": 2**40,
        "deals": [base64.b64encode(sealed).decode()] * (CONFIG.num_aggregators - 1),
    }
    assert len(json.dumps(body)) <= limits.aggregate
