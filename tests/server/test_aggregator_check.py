"""The coordinator's start-up checks over HTTP (real aggregator apps, in process): it
learns every aggregator's signed minimum cohort before it creates the run, waits for an
aggregator that is not up yet, refuses a run that does not fit (one line, both flags)
or a policy its published key did not sign, and raises an unset ``--min-clients`` to
the largest minimum; then it gives no training task until every aggregator signed its
consent to the very run id, and stops, with the aggregator's reason, when one refuses."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.run_descriptions import published, run_info
from tests.tiny_coordinator import MemoryCommands, described

from veilfl.aggregator.access import AggregatorAccess
from veilfl.aggregator.service import AggregatorService, create_aggregator_app
from veilfl.auth.identity import Identity
from veilfl.crypto.keys import AggregatorKeyPair, generate_keypair
from veilfl.errors import ConfigurationError
from veilfl.privacy.dp_config import DpConfig
from veilfl.protocol.assembly import build_coordinator
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.messages import LocalTrainingPlan, RunInfo, TaskKind
from veilfl.protocol.run_description import RunDescription
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.server.aggregator_check import fit_to_aggregators, open_when_aggregators_consent
from veilfl.server.service import CoordinatorService
from veilfl.tensors import spec_of

pytestmark = pytest.mark.timeout(60)

KEYS = [generate_keypair() for _ in range(3)]
URLS = [f"http://aggregator-{j}" for j in (1, 2, 3)]
CONFIG = SecureAggregationConfig(threshold=2, num_aggregators=3)
START = {"w": np.zeros(4, dtype=np.float32)}


@dataclass
class _Hosts(httpx.AsyncBaseTransport):
    """Routes by host to in-process apps; a host without an app is not up (yet)."""

    apps: dict[str, httpx.ASGITransport] = field(default_factory=dict)
    refused: int = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        app = self.apps.get(request.url.host)
        if app is None:
            self.refused += 1
            raise httpx.ConnectError("connection refused", request=request)
        return await app.handle_async_request(request)


def _settings(*, per_round: int, min_clients: int = 1) -> RunSpec:
    return RunSpec(
        model_name="tiny",
        rounds=RoundConfig(num_rounds=1, clients_per_round=per_round, min_clients=min_clients),
        plan=LocalTrainingPlan(),
        secure=SecureSettings(config=CONFIG, aggregators=published(KEYS, URLS)),
    )


COORDINATOR_KEY = Identity.generate().public_key_text


def _run(keys: list[AggregatorKeyPair]) -> RunInfo:  # an aggregator serves it
    settings = replace(
        _settings(per_round=3, min_clients=3),  # the largest minimum these tests give
        secure=SecureSettings(config=CONFIG, aggregators=published(keys, URLS)),
    )
    return run_info(
        settings, run_id="r", coordinator_key=COORDINATOR_KEY, model_size=spec_of(START).total_size
    )


def _core(settings: RunSpec) -> Coordinator:
    return build_coordinator(settings, initial_weights=START, run_id="r").coordinator


def _closed_service(description: RunDescription) -> CoordinatorService:
    core = build_coordinator(
        description.spec, initial_weights=START, run_id=description.run_id
    ).coordinator
    return CoordinatorService(
        core,
        description=description,
        performer=MemoryCommands(None),
        max_update_bytes=1 << 20,
        opened=False,
    )


def _aggregator(
    hosts: _Hosts, tmp_path: Path, index: int, minimum: int, key: AggregatorKeyPair
) -> None:
    keys = [key if j == index else k for j, k in enumerate(KEYS, start=1)]
    service = AggregatorService(
        index=index,
        keypair=key,
        spool=tmp_path / f"a{index}",
        min_participants=minimum,
        peer_fingerprints=[k.fingerprint for k in keys],
    )
    hosts.apps[f"aggregator-{index}"] = httpx.ASGITransport(
        app=create_aggregator_app(
            service,
            coordinator_url=None,
            max_share_bytes=1 << 20,
            access=AggregatorAccess(index=index, rate_limit=None),
            run=_run(keys),
        )
    )


async def test_policies_are_waited_for_then_min_clients_takes_the_largest(
    tmp_path: Path,
) -> None:
    hosts = _Hosts()
    for index in (1, 2):
        _aggregator(hosts, tmp_path, index, 2, KEYS[index - 1])
    fitting = asyncio.create_task(
        fit_to_aggregators(
            _settings(per_round=3),
            min_clients_given=False,
            transport=hosts,
            retry_interval_s=0.01,
        )
    )
    while hosts.refused < 2:  # aggregator 3 is not up: it is asked again
        await asyncio.sleep(0.01)
    assert not fitting.done()
    _aggregator(hosts, tmp_path, 3, 3, KEYS[2])  # it comes up, with a minimum of 3
    fitted = await asyncio.wait_for(fitting, 10)
    assert fitted.rounds.min_clients == 3


async def test_a_run_below_an_aggregator_s_minimum_is_refused(tmp_path: Path) -> None:
    hosts = _Hosts()
    for index in (1, 2, 3):
        _aggregator(hosts, tmp_path, index, 2, KEYS[index - 1])
    with pytest.raises(ConfigurationError) as caught:
        await fit_to_aggregators(_settings(per_round=1), min_clients_given=False, transport=hosts)
    assert str(caught.value) == (
        "--clients-per-round 1 is below aggregator 1's --min-participants 2; raise "
        "--clients-per-round or lower --min-participants."
    )


async def test_an_aggregator_serving_another_key_s_policy_is_refused(tmp_path: Path) -> None:
    hosts = _Hosts()
    for index in (1, 3):
        _aggregator(hosts, tmp_path, index, 2, KEYS[index - 1])
    _aggregator(hosts, tmp_path, 2, 2, generate_keypair())  # not the published key
    with pytest.raises(ConfigurationError, match="check the key file given with --aggregator"):
        await fit_to_aggregators(
            _settings(per_round=2, min_clients=2), min_clients_given=True, transport=hosts
        )


def _consenting_fleet(
    tmp_path: Path, *, pin: float | None = None, max_epsilon: float | None = None, **spec: object
) -> tuple[_Hosts, CoordinatorService, list[AggregatorService]]:
    """A closed coordinator service and three aggregator apps that have not attached."""
    hosts = _Hosts()
    settings = replace(_settings(per_round=2, min_clients=2), **spec)  # type: ignore[arg-type]
    description = described(settings, model_size=4)
    services = []
    for index, key in enumerate(KEYS, start=1):
        service = AggregatorService(
            index=index,
            keypair=key,
            spool=tmp_path / f"a{index}",
            min_noise_multiplier=pin,
            max_epsilon=max_epsilon,
            peer_fingerprints=[k.fingerprint for k in KEYS],
        )
        hosts.apps[f"aggregator-{index}"] = httpx.ASGITransport(
            app=create_aggregator_app(
                service,
                coordinator_url="http://coordinator",
                max_share_bytes=1 << 20,
                access=AggregatorAccess(index=index, rate_limit=None),
            )
        )
        services.append(service)
    return hosts, _closed_service(description), services


async def test_no_task_until_every_aggregator_consented_to_this_run_id(tmp_path: Path) -> None:
    hosts, service, aggregators = _consenting_fleet(tmp_path)
    await service.join("c1")
    opening = asyncio.create_task(
        open_when_aggregators_consent(service, transport=hosts, retry_interval_s=0.01)
    )
    aggregators[0].attach(service.run_info)  # as its run follower attaches it
    aggregators[1].attach(service.run_info)
    await asyncio.sleep(0.1)  # aggregator 3 has not consented: the run stays closed
    assert not opening.done() and (await service.task_for("c1")).kind is TaskKind.WAIT

    aggregators[2].attach(service.run_info)
    await asyncio.wait_for(opening, 10)

    assert service.opened
    keys = {j: k.signing_public_bytes for j, k in enumerate(KEYS, start=1)}
    served = RunDescription.from_json(service.description.to_json())
    assert served.consenting_aggregators(keys) == {1, 2, 3}


async def test_an_aggregator_that_refuses_the_run_stops_it_with_its_reason(
    tmp_path: Path,
) -> None:
    dp = DpConfig(placement="distributed", noise_multiplier=0.5, clip_norm=1.0, min_clients=2)
    hosts, service, aggregators = _consenting_fleet(tmp_path, pin=1.0, dp=dp)
    for aggregator in aggregators:
        with pytest.raises(ConfigurationError):
            aggregator.attach(service.run_info)  # z = 0.5 is below its operator's pin

    with pytest.raises(ConfigurationError) as caught:
        await open_when_aggregators_consent(service, transport=hosts, retry_interval_s=0.01)

    assert "refused run" in str(caught.value) and "--min-noise-multiplier" in str(caught.value)
    assert not service.opened


@pytest.mark.parametrize(
    "dp",
    [None, DpConfig(placement="central", noise_multiplier=5.0, clip_norm=1.0, min_clients=2)],
    ids=["no-dp", "central"],
)
async def test_an_aggregator_with_max_epsilon_refuses_a_run_it_cannot_bound(
    tmp_path: Path, dp: DpConfig | None
) -> None:
    """Without DP, or with noise the coordinator adds after it saw the sum, no epsilon
    holds against the coordinator: an operator who set --max-epsilon never consents."""
    _, service, aggregators = _consenting_fleet(tmp_path, max_epsilon=8.0, dp=dp)
    with pytest.raises(ConfigurationError, match="--max-epsilon"):
        aggregators[0].attach(service.run_info)
    strong = DpConfig(placement="distributed", noise_multiplier=5.0, clip_norm=1.0, min_clients=2)
    _, agreeable, others = _consenting_fleet(tmp_path / "strong", max_epsilon=8.0, dp=strong)
    others[0].attach(agreeable.run_info)  # z = 5 over one round: well within 8
