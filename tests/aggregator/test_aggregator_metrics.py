"""An aggregator's ``/metrics``, scraped while clients upload shares and the coordinator
asks what it holds (in process): shares accepted and refused by reason, the
coordinator's requests, and the spool on disk."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.contributions import seal
from tests.run_descriptions import published

from veilfl.aggregator.access import AggregatorAccess
from veilfl.aggregator.service import AggregatorService, create_aggregator_app
from veilfl.auth.admission import ADMISSION_HEADER, RoundAdmission, issue_admission
from veilfl.auth.identity import Identity
from veilfl.auth.signed_request import COORDINATOR_SIGNER, aggregator_audience
from veilfl.crypto.keys import generate_keypair
from veilfl.protocol.messages import LocalTrainingPlan, RunInfo, SecureRunInfo
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.transport.signing import SigningAuth, for_round

pytestmark = pytest.mark.timeout(60)
KEYS = [generate_keypair() for _ in range(3)]
CONFIG = SecureAggregationConfig(threshold=2, num_aggregators=3)
D = 5
RUN = "metrics-run"
COORDINATOR = Identity.generate()
AUDIENCE = aggregator_audience(1, RUN)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _envelope(client_id: str) -> bytes:
    sealed = seal(CONFIG, KEYS, run_id=RUN, round_id=1, client_id=client_id, update=np.full(D, 0.1))
    return sealed[0].envelope


async def _upload(http: httpx.AsyncClient, client: Identity, body: bytes | None = None) -> int:
    admission = issue_admission(
        COORDINATOR,
        RoundAdmission(
            run_id=RUN, round_id=1, client_id=client.client_id, client_key=client.public_key
        ),
    )
    response = await http.post(
        "/v1/rounds/1/shares",
        content=_envelope(client.client_id) if body is None else body,
        headers={ADMISSION_HEADER: admission},
        auth=SigningAuth(client, AUDIENCE),
        extensions=for_round(1),
    )
    return response.status_code


async def _holdings(http: httpx.AsyncClient, signer: Identity) -> int:
    response = await http.get(
        "/v1/rounds/1/holdings",
        auth=SigningAuth(signer, AUDIENCE, signer_id=COORDINATOR_SIGNER),
        extensions=for_round(1),
    )
    return response.status_code


async def _scrape(http: httpx.AsyncClient) -> Samples:
    response = await http.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_share_and_request_counters_and_the_spool_move_as_a_round_is_served(
    tmp_path: Path,
) -> None:
    service = AggregatorService(
        index=1,
        keypair=KEYS[0],
        spool=tmp_path,
        min_participants=2,
        peer_fingerprints=[key.fingerprint for key in KEYS],
    )
    run = RunInfo(
        run_id=RUN,
        model_name="tiny",
        num_rounds=1,
        plan=LocalTrainingPlan(),
        coordinator_key=COORDINATOR.public_key_text,
        secure=SecureRunInfo(config=CONFIG, aggregators=published(KEYS), model_size=D),
        min_cohort=2,
    )
    app = create_aggregator_app(
        service,
        coordinator_url=None,
        max_share_bytes=1 << 20,
        access=AggregatorAccess(index=1, rate_limit=None),
        run=run,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://agg"
    ) as http:
        before = await _scrape(http)
        assert _get(before, "veilfl_aggregator_attached") == 1
        assert _get(before, "veilfl_aggregator_shares_accepted_total") == 0
        assert _get(before, "veilfl_aggregator_shares_held") == 0
        spool_before = _get(before, "veilfl_aggregator_spool_bytes")
        clients = [Identity.generate() for _ in range(2)]
        assert [await _upload(http, c) for c in clients] == [202, 202]
        assert await _upload(http, Identity.generate(), body=b"") == 400
        assert await _upload(http, Identity.generate(), body=b"\x00" * 64) == 400
        during = await _scrape(http)
        assert _get(during, "veilfl_aggregator_shares_accepted_total") == 2
        assert _get(during, "veilfl_aggregator_shares_refused_total", reason="WireFormatError") == 1
        assert (
            sum(
                value
                for (name, _), value in during.items()
                if name == "veilfl_aggregator_shares_refused_total"
            )
            == 2
        )
        assert _get(during, "veilfl_aggregator_shares_held") == 2
        assert _get(during, "veilfl_aggregator_open_rounds") == 1
        assert _get(during, "veilfl_aggregator_spool_files") >= 2
        assert _get(during, "veilfl_aggregator_spool_bytes") > spool_before
        assert await _holdings(http, signer=Identity.generate()) == 401
        assert await _holdings(http, signer=COORDINATOR) == 200
        after = await _scrape(http)
        requests = "veilfl_aggregator_coordinator_requests_total"
        assert _get(after, requests, request="holdings", outcome="answered") == 1
        assert _get(after, requests, request="holdings", outcome="AuthenticationError") == 1
        assert _get(after, requests, request="aggregate", outcome="answered") == 0
        route = "/v1/rounds/{round_id}/shares"
        assert (
            _get(
                after,
                "veilfl_http_request_duration_seconds_count",
                method="POST",
                route=route,
                status="202",
            )
            == 2
        )
