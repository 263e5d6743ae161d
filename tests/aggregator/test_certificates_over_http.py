"""Certificates over the aggregator's HTTP API (issue 19): the coordinator with t - 1
colluding aggregators cannot get two participant lists of a round summed by the honest
aggregators, and an aggregator that pinned its peers refuses a run that shows it fake
ones (with which the coordinator alone would forge every commitment)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from tests.contributions import seal
from tests.run_descriptions import secure_description, secure_run

from veilfl.aggregator.access import AggregatorAccess
from veilfl.aggregator.service import AggregatorService, create_aggregator_app
from veilfl.auth.admission import ADMISSION_HEADER, RoundAdmission, issue_admission
from veilfl.auth.identity import Identity
from veilfl.auth.signed_request import COORDINATOR_SIGNER, aggregator_audience
from veilfl.crypto.keys import AggregatorKeyPair, generate_keypair
from veilfl.errors import ConfigurationError
from veilfl.protocol.messages import RunInfo
from veilfl.secagg.commitment import Commitment, CommitmentCertificate
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.transport.signing import SigningAuth, for_round

pytestmark = pytest.mark.timeout(120)
KEYS = [generate_keypair() for _ in range(5)]
RUN = "run-19"
D = 4
COORDINATOR = Identity.generate()
CLIENTS = {name: Identity.generate() for name in ("victim", "b", "c")}
FIRST = sorted(c.client_id for c in CLIENTS.values())
SECOND = sorted(c.client_id for n, c in CLIENTS.items() if n != "victim")


def _run(config: SecureAggregationConfig, keys: list[AggregatorKeyPair]) -> RunInfo:
    return secure_run(
        RUN, config=config, keys=keys, model_size=D, coordinator_key=COORDINATOR.public_key_text
    )


def _as_coordinator(index: int) -> SigningAuth:
    return SigningAuth(COORDINATOR, aggregator_audience(index, RUN), signer_id=COORDINATOR_SIGNER)


@asynccontextmanager
async def _aggregator(
    index: int, run: RunInfo, tmp: Any, **service: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """Aggregator ``index`` serving ``run`` over HTTP, and a client of its API."""
    app = create_aggregator_app(
        AggregatorService(index=index, keypair=KEYS[index - 1], spool=tmp / f"a{index}", **service),
        coordinator_url=None,
        max_share_bytes=1 << 20,
        access=AggregatorAccess(index=index, rate_limit=None),
        run=run,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=f"http://aggregator-{index}"
    ) as http:
        yield http


async def _upload_everyone(
    http: dict[int, httpx.AsyncClient], config: SecureAggregationConfig, keys: list[Any]
) -> None:
    for client in CLIENTS.values():
        admission = issue_admission(
            COORDINATOR,
            RoundAdmission(
                run_id=RUN, round_id=1, client_id=client.client_id, client_key=client.public_key
            ),
        )
        for share in seal(
            config,
            keys,
            run_id=RUN,
            round_id=1,
            client_id=client.client_id,
            update=np.full(D, 0.1),
        ):
            if share.aggregator_index not in http:
                continue  # a colluder's share: the coordinator's accomplice has it anyway
            sent = await http[share.aggregator_index].post(
                "/v1/rounds/1/shares",
                content=share.envelope,
                headers={ADMISSION_HEADER: admission},
                auth=SigningAuth(client, aggregator_audience(share.aggregator_index, RUN)),
                extensions=for_round(1),
            )
            assert sent.status_code == 202, sent.text


async def _commit(http: httpx.AsyncClient, index: int, participants: list[str]) -> bytes:
    answer = await http.post(
        "/v1/rounds/1/commit",
        json={"participants": participants},
        auth=_as_coordinator(index),
        extensions=for_round(1),
    )
    assert answer.status_code == 200, answer.text
    return base64.b64decode(answer.json()["signature"])


async def _aggregate(
    http: httpx.AsyncClient, index: int, participants: list[str], cert: CommitmentCertificate
) -> httpx.Response:
    return await http.post(
        "/v1/rounds/1/aggregate",
        json={"participants": participants, "certificate": cert.to_json()},
        auth=_as_coordinator(index),
        extensions=for_round(1),
    )


@pytest.mark.parametrize(("m", "t"), [(3, 2), (5, 3)])
async def test_the_coordinator_and_t_minus_1_colluders_get_no_second_list_over_http(
    m: int, t: int, tmp_path: Any
) -> None:
    config = SecureAggregationConfig(threshold=t, num_aggregators=m, max_samples_per_client=10)
    keys = KEYS[:m]
    pins = [k.fingerprint for k in keys]
    honest = list(range(1, m - t + 2))
    colluders = list(range(m - t + 2, m + 1))  # t - 1: they sign whatever is asked
    for split in range(1, len(honest)):
        folder = tmp_path / f"split-{split}"
        async with AsyncExitStack() as stack:
            http = {
                j: await stack.enter_async_context(
                    _aggregator(j, _run(config, keys), folder, peer_fingerprints=pins)
                )
                for j in honest
            }
            await _upload_everyone(http, config, keys)
            released = {}
            for participants, group in ((FIRST, honest[:split]), (SECOND, honest[split:])):
                commitment = Commitment.of(RUN, 1, participants)
                signatures = {j: await _commit(http[j], j, participants) for j in group}
                signatures |= {j: KEYS[j - 1].sign(commitment.message()) for j in colluders}
                cert = CommitmentCertificate(commitment, signatures)
                answers = [await _aggregate(http[j], j, participants, cert) for j in group]
                assert all(a.status_code in (200, 409) for a in answers)
                released[len(participants)] = [a.status_code == 200 for a in answers]
            assert not (any(released[len(FIRST)]) and any(released[len(SECOND)])), split


class _Coordinator(httpx.AsyncBaseTransport):
    """Describes a run whose aggregators 2..4 are keys of the coordinator's own."""

    def __init__(self, description: dict[str, Any]) -> None:
        self.run = description

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=self.run)


async def test_a_pinned_aggregator_refuses_a_coordinator_showing_fake_peers(
    tmp_path: Any,
) -> None:
    # m = 4, t = 2, quorum 3. The coordinator shows aggregator 1 a run in which it owns
    # aggregators 2, 3 and 4: it could then sign any certificate itself.
    config = SecureAggregationConfig(threshold=2, num_aggregators=4, max_samples_per_client=10)
    fakes = [generate_keypair() for _ in range(3)]
    shown = _run(config, [KEYS[0], *fakes])
    pins = [k.fingerprint for k in KEYS[:4]]
    described = secure_description(
        "fake-peers", config=config, keys=[KEYS[0], *fakes], model_size=4
    )
    app = create_aggregator_app(
        AggregatorService(index=1, keypair=KEYS[0], spool=tmp_path, peer_fingerprints=pins),
        coordinator_url="http://coordinator",
        max_share_bytes=1 << 20,
        access=AggregatorAccess(index=1, rate_limit=None),
        coordinator_transport=_Coordinator(described.to_json()),
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as http,
    ):
        consent = await http.get("/v1/consent")  # what the coordinator would collect
    assert consent.status_code == 409
    assert "--peer-fingerprint names; refusing to serve" in consent.json()["message"]

    # What the pins prevent: trusting the coordinator's keys, aggregator 1 releases a
    # sum against commitments the coordinator forged with the fake peers' keys.
    async with _aggregator(
        1, shown, tmp_path / "trusting", trust_coordinator_peer_keys=True
    ) as http:
        await _upload_everyone({1: http}, config, [KEYS[0], *fakes])
        commitment = Commitment.of(RUN, 1, SECOND)
        forged = CommitmentCertificate(
            commitment, {j: fakes[j - 2].sign(commitment.message()) for j in (2, 3, 4)}
        )
        assert (await _aggregate(http, 1, SECOND, forged)).status_code == 200


def test_an_aggregator_without_pinned_peers_refuses_to_start(tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError) as refused:
        AggregatorService(index=1, keypair=KEYS[0], spool=tmp_path)
    message = str(refused.value)
    assert "\n" not in message
    for words in (
        "--peer-fingerprint",
        "`veilfl keys` prints them",
        "--trust-coordinator-peer-keys",
    ):
        assert words in message
    with pytest.raises(ConfigurationError, match="number 2 is not this aggregator's own"):
        AggregatorService(
            index=2,
            keypair=KEYS[0],
            spool=tmp_path,
            peer_fingerprints=[k.fingerprint for k in KEYS[:3]],
        )
