"""The coordinator learns every aggregator's signed minimum cohort at start-up, over
HTTP (real aggregator apps, in process): it gives no training task until it has them
all, waits for an aggregator that is not up yet, refuses a run that does not fit (one
line, both flags) or a policy its published key did not sign, and raises an unset
``--min-clients`` to the largest minimum."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import numpy as np
import pytest
from tests.run_descriptions import published
from tests.tiny_coordinator import MemoryCommands

from veilfl.aggregator.access import AggregatorAccess
from veilfl.aggregator.service import AggregatorService, create_aggregator_app
from veilfl.auth.identity import Identity
from veilfl.crypto.keys import AggregatorKeyPair, generate_keypair
from veilfl.errors import ConfigurationError
from veilfl.protocol.assembly import build_coordinator, describe_run
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.messages import LocalTrainingPlan, RunInfo, TaskKind
from veilfl.protocol.settings import CoordinatorSettings, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.server.aggregator_check import open_when_aggregators_fit
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


def _settings(*, per_round: int, min_clients: int = 1) -> CoordinatorSettings:
    return CoordinatorSettings(
        model_name="tiny",
        rounds=RoundConfig(num_rounds=1, clients_per_round=per_round, min_clients=min_clients),
        plan=LocalTrainingPlan(),
        secure=SecureSettings(config=CONFIG, aggregators=published(KEYS, URLS)),
    )


COORDINATOR_KEY = Identity.generate().public_key_text


def _run(keys: list[AggregatorKeyPair]) -> RunInfo:
    settings = replace(
        _settings(per_round=2),
        secure=SecureSettings(config=CONFIG, aggregators=published(keys, URLS)),
    )
    return describe_run(settings, run_id="r", coordinator_key=COORDINATOR_KEY, spec=spec_of(START))


def _core(settings: CoordinatorSettings) -> Coordinator:
    return build_coordinator(settings, initial_weights=START, run_id="r").coordinator


def _closed_service(settings: CoordinatorSettings) -> CoordinatorService:
    core = _core(settings)
    return CoordinatorService(
        core,
        run_info=describe_run(settings, run_id="r", coordinator_key="", spec=core.spec),
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


async def test_no_task_until_every_policy_is_known_then_min_clients_takes_the_largest(
    tmp_path: Path,
) -> None:
    hosts = _Hosts()
    for index in (1, 2):
        _aggregator(hosts, tmp_path, index, 2, KEYS[index - 1])
    settings = _settings(per_round=3)
    service = _closed_service(settings)
    await service.join("c1")
    assert (await service.task_for("c1")).kind is TaskKind.WAIT
    rebuilt: list[tuple[CoordinatorSettings, Coordinator]] = []

    def rebuild(fitted: CoordinatorSettings) -> Coordinator:
        core = _core(fitted)
        core.join("c1", now=0.0)
        rebuilt.append((fitted, core))
        return core

    opening = asyncio.create_task(
        open_when_aggregators_fit(
            service,
            settings,
            rebuild=rebuild,
            min_clients_given=False,
            transport=hosts,
            retry_interval_s=0.01,
        )
    )
    while hosts.refused < 2:  # aggregator 3 is not up: it is asked again
        await asyncio.sleep(0.01)
    assert not service.opened and (await service.task_for("c1")).kind is TaskKind.WAIT
    _aggregator(hosts, tmp_path, 3, 3, KEYS[2])  # it comes up, with a minimum of 3
    fitted = await asyncio.wait_for(opening, 10)
    assert service.opened and (await service.status())["opened"]
    assert fitted.rounds.min_clients == 3 and [f for f, _ in rebuilt] == [fitted]
    assert service.core is rebuilt[0][1]


async def test_a_run_below_an_aggregator_s_minimum_is_refused_and_stays_closed(
    tmp_path: Path,
) -> None:
    hosts = _Hosts()
    for index in (1, 2, 3):
        _aggregator(hosts, tmp_path, index, 2, KEYS[index - 1])
    settings = _settings(per_round=1)
    service = _closed_service(settings)
    with pytest.raises(ConfigurationError) as caught:
        await open_when_aggregators_fit(
            service, settings, rebuild=_core, min_clients_given=False, transport=hosts
        )
    assert str(caught.value) == (
        "--clients-per-round 1 is below aggregator 1's --min-participants 2; raise "
        "--clients-per-round or lower --min-participants."
    )
    assert not service.opened


async def test_an_aggregator_serving_another_key_s_policy_is_refused(tmp_path: Path) -> None:
    hosts = _Hosts()
    for index in (1, 3):
        _aggregator(hosts, tmp_path, index, 2, KEYS[index - 1])
    _aggregator(hosts, tmp_path, 2, 2, generate_keypair())  # not the published key
    settings = _settings(per_round=2, min_clients=2)
    service = _closed_service(settings)
    with pytest.raises(ConfigurationError, match="check the key file given with --aggregator"):
        await open_when_aggregators_fit(
            service, settings, rebuild=_core, min_clients_given=True, transport=hosts
        )
    assert not service.opened
