"""Dealt noise over HTTP: the coordinator's link collects sealed deals from three real
aggregator apps, relays them with the aggregate request, and reconstructs a noised sum;
a deal it alters is refused, an aggregator restarted on its spool continues the same
noise state, and a second noise step for a released round is refused.

Everything runs in process over httpx's ASGI transport (no socket)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.contributions import seal
from tests.run_descriptions import pins, published, run_info, secure_run

from veilfl.aggregator.access import AggregatorAccess
from veilfl.aggregator.service import NOISE_STATE, AggregatorService, create_aggregator_app
from veilfl.auth.identity import Identity
from veilfl.crypto.keys import AggregatorKeyPair, generate_keypair
from veilfl.errors import ConfigurationError
from veilfl.privacy.dp_config import DpConfig
from veilfl.protocol.effects import (
    AggregateShareReported,
    AggregatorFailed,
    CollectAggregateShares,
    CollectCommitments,
    CollectNoiseDeals,
    CommitmentReported,
    Event,
    NoiseDealsReported,
)
from veilfl.protocol.messages import RunInfo
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.commitment import Commitment, CommitmentCertificate
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout
from veilfl.server.aggregator_link import HttpAggregatorLink
from veilfl.tensors import spec_of

RUN_ID = "noise-run"
CONFIG = SecureAggregationConfig(
    threshold=2, num_aggregators=3, norm_bound=10.0, max_samples_per_client=100
)
LAYOUT = ContributionLayout(3, CONFIG)
CLIENTS = {"a": 1.0, "b": 3.0}


class _Hosts(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.apps: dict[str, httpx.ASGITransport] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.apps[request.url.host].handle_async_request(request)


def _run(identity: Identity, keys: list[AggregatorKeyPair]) -> RunInfo:
    urls = [f"http://aggregator-{j}" for j in (1, 2, 3)]
    settings = RunSpec(
        model_name="tiny",
        rounds=RoundConfig(num_rounds=1, clients_per_round=2, min_clients=2),
        secure=SecureSettings(config=CONFIG, aggregators=published(keys, urls)),
        dp=DpConfig(placement="distributed", noise_multiplier=1.0, clip_norm=10.0, min_clients=2),
    )
    return run_info(
        settings,
        run_id=RUN_ID,
        coordinator_key=identity.public_key_text,
        model_size=spec_of({"w": np.zeros(3, np.float32)}).total_size,
    )


async def _start(
    hosts: _Hosts,
    index: int,
    key: AggregatorKeyPair,
    run: RunInfo,
    spool: Path,
) -> AggregatorService:
    service = AggregatorService(
        index=index, keypair=key, spool=spool, min_participants=2, peer_fingerprints=pins(run)
    )
    hosts.apps[f"aggregator-{index}"] = httpx.ASGITransport(
        app=create_aggregator_app(
            service,
            coordinator_url=None,
            max_share_bytes=1 << 24,
            access=AggregatorAccess(index=index, rate_limit=None),
            run=run,
        )
    )
    return service


async def test_deals_travel_sealed_and_signed_and_the_sum_comes_back_noised(
    tmp_path: Path,
) -> None:
    identity = Identity.generate()
    keys = [generate_keypair() for _ in range(3)]
    run = _run(identity, keys)
    hosts = _Hosts()
    services = {j: await _start(hosts, j, keys[j - 1], run, tmp_path / f"a{j}") for j in (1, 2, 3)}
    for client, value in CLIENTS.items():
        sealed = seal(
            CONFIG,
            keys,
            run_id=RUN_ID,
            round_id=1,
            client_id=client,
            update=np.full(3, value),
            weight=1.0,
            loss=0.0,
        )
        for share in sealed:
            await services[share.aggregator_index].receive(1, client, share.envelope)
    link = HttpAggregatorLink(
        {j: f"http://aggregator-{j}" for j in (1, 2, 3)},
        vector_length=LAYOUT.measurement_length,
        run_id=RUN_ID,
        identity=identity,
        transport=hosts,
    )
    participants = tuple(sorted(CLIENTS))
    try:
        commitments = await link.collect_commitments(CollectCommitments(1, participants, (1, 2, 3)))
        certificate = CommitmentCertificate(
            Commitment.of(RUN_ID, 1, participants),
            {e.aggregator: e.signature for e in commitments if isinstance(e, CommitmentReported)},
        )
        dealt = await link.collect_noise_deals(CollectNoiseDeals(1, 1, (1, 2, 3)))
        reports = {e.aggregator: e.deals for e in dealt if isinstance(e, NoiseDealsReported)}
        assert sorted(reports) == [1, 2, 3]
        assert all(sorted(d) == sorted({1, 2, 3} - {j}) for j, d in reports.items())
        for_each = {j: tuple(d[j] for d in reports.values() if j in d) for j in (1, 2, 3)}

        def ask(
            aggregators: tuple[int, ...], deals: dict[int, tuple[bytes, ...]], step: int = 1
        ) -> CollectAggregateShares:
            return CollectAggregateShares(
                1, participants, aggregators, certificate, noise_step=step, deals=deals
            )

        # The coordinator alters one deal: refused, nothing released.
        altered = dict(for_each)
        first = bytearray(altered[2][0])
        first[-1] ^= 1
        altered[2] = (bytes(first), *altered[2][1:])
        (refused,) = await link.collect_aggregate_shares(ask((2,), altered))
        assert isinstance(refused, AggregatorFailed) and refused.refused
        assert "signature" in refused.reason

        # Aggregator 1 restarts on its spool: its noise state (its own share) continues.
        assert (tmp_path / "a1" / NOISE_STATE).exists()
        await _start(hosts, 1, keys[0], run, tmp_path / "a1")
        answers: list[Event] = await link.collect_aggregate_shares(ask((1, 2), for_each))
        shares = [e.share for e in answers if isinstance(e, AggregateShareReported)]
        assert len(shares) == 2, answers
        noised = LAYOUT.decode_sum(CONFIG.scheme().reconstruct(shares))
        # Exact: 1 + 3 = 4 per coordinate (to a rounding step); the noise is about
        # z·B/scale·sqrt(m/h) ≈ 13 per coordinate.
        assert np.max(np.abs(noised.weighted_delta_sum - 4.0)) > 10 / LAYOUT.scale
        assert noised.total_weight == 2.0  # weight and loss carry no noise
        # Asked again: the same share; at another step for the same round: refused.
        (again,) = await link.collect_aggregate_shares(ask((1,), for_each))
        assert isinstance(again, AggregateShareReported)
        assert np.array_equal(again.share.values, shares[0].values)
        (twice,) = await link.collect_aggregate_shares(ask((1,), for_each, step=2))
        assert isinstance(twice, AggregatorFailed) and twice.refused
    finally:
        await link.close()


def test_an_operator_pin_refuses_runs_with_less_noise(tmp_path: Path) -> None:
    identity = Identity.generate()
    keys = [generate_keypair() for _ in range(3)]
    run = _run(identity, keys)  # z = 1, distributed
    plain = secure_run(RUN_ID, config=CONFIG, keys=keys, model_size=3)  # no DP at all

    def service(pin: float, folder: str) -> AggregatorService:
        return AggregatorService(
            index=1,
            keypair=keys[0],
            spool=tmp_path / folder,
            min_noise_multiplier=pin,
            peer_fingerprints=[k.fingerprint for k in keys],
        )

    with pytest.raises(ConfigurationError, match="noise multiplier 1;"):
        service(2.0, "a").attach(run)
    with pytest.raises(ConfigurationError, match="no distributed DP"):
        service(1.0, "b").attach(plain)
    service(1.0, "c").attach(run)
    assert not (tmp_path / "a" / "run.json").exists()  # a refused run claims nothing
