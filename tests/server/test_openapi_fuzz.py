"""Property-based API testing (Schemathesis) of the coordinator and aggregator OpenAPI
specs: no request, however malformed, gets a 5xx, and a rejected request changes no
state."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import schemathesis
from hypothesis import HealthCheck, settings
from tests.signed_clients import open_access

from veilfl.aggregator.access import AggregatorAccess
from veilfl.aggregator.service import AggregatorService, create_aggregator_app
from veilfl.auth.identity import Identity
from veilfl.crypto.keys import generate_keypair
from veilfl.protocol.buffered import BufferConfig, BufferedMachine
from veilfl.protocol.buffered_coordinator import BufferedCoordinator
from veilfl.protocol.coordinator import PlaintextAggregation, SyncCoordinator
from veilfl.protocol.messages import LocalTrainingPlan, RunInfo
from veilfl.protocol.sync_round import RoundConfig, SyncRoundMachine
from veilfl.secagg.config import EXTRA_COORDINATES, SecureAggregationConfig
from veilfl.server.app import create_app
from veilfl.server.service import CoordinatorService
from veilfl.strategy.buffered import FedBuff
from veilfl.strategy.fedavg import FedAvg
from veilfl.tensors import spec_of

START = {"w": np.zeros((3, 2), np.float32)}
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def _sync_core() -> SyncCoordinator:
    return SyncCoordinator(
        # No round ever opens, so the background ticker cannot change the state while
        # a request is judged: every change seen comes from the request itself.
        machine=SyncRoundMachine(
            RoundConfig(num_rounds=2, clients_per_round=1, min_available_clients=10**9),
            rng=random.Random(0),
        ),
        spec=spec_of(START),
        initial_weights=START,
        aggregation=PlaintextAggregation(spec_of(START)),
        strategy=FedAvg(),
    )


def _buffered_core() -> BufferedCoordinator:
    return BufferedCoordinator(
        machine=BufferedMachine(BufferConfig(buffer_size=2, max_staleness=2, max_versions=3)),
        spec=spec_of(START),
        initial_weights=START,
        aggregation=PlaintextAggregation(spec_of(START)),
        strategy=FedBuff(),
    )


def _coordinator_app(core: Any, mode: str) -> Any:
    service = CoordinatorService(
        core,
        run_info=RunInfo(
            run_id="r", model_name="m", num_rounds=2, plan=LocalTrainingPlan(), mode=mode
        ),
        max_update_bytes=1 << 20,
    )
    return create_app(service, metrics=lambda: list(core.history), access=open_access("r"))


SYNC_CORE = _sync_core()
BUFFERED_CORE = _buffered_core()
SYNC = schemathesis.openapi.from_asgi("/openapi.json", _coordinator_app(SYNC_CORE, "sync"))
BUFFERED = schemathesis.openapi.from_asgi(
    "/openapi.json", _coordinator_app(BUFFERED_CORE, "fedbuff")
)


def _check(case: Any, state: Any) -> None:
    before = state()
    response = case.call()
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if 400 <= response.status_code < 500:
        assert state() == before, "a rejected request changed the state"
        assert "message" in response.json()


@SYNC.parametrize()
@FUZZ
def test_coordinator_with_rounds_never_fails_and_rejections_change_nothing(case: Any) -> None:
    _check(case, SYNC_CORE.status)


@BUFFERED.parametrize()
@FUZZ
def test_coordinator_with_buffers_never_fails_and_rejections_change_nothing(case: Any) -> None:
    _check(case, BUFFERED_CORE.status)


KEY = generate_keypair()
_AGGREGATOR = AggregatorService(
    index=1, keypair=KEY, spool=Path(tempfile.mkdtemp()), min_participants=2
)
AGGREGATOR = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_aggregator_app(
        _AGGREGATOR,
        coordinator_url=None,
        max_share_bytes=1 << 16,
        access=AggregatorAccess(index=1),
        run={
            "run_id": "r",
            "coordinator_key": Identity.generate().public_key_text,
            "secure": {
                "config": SecureAggregationConfig().to_json(),
                "vector_length": 6 + EXTRA_COORDINATES,
                "aggregators": [{"index": 1, "fingerprint": KEY.fingerprint}],
            },
        },
    ),
)


@AGGREGATOR.parametrize()
@FUZZ
def test_aggregator_never_fails_and_rejections_change_nothing(case: Any) -> None:
    _check(case, _AGGREGATOR.status)


def test_the_fuzzers_cover_every_operation() -> None:
    for schema, minimum in ((SYNC, 8), (BUFFERED, 9), (AGGREGATOR, 3)):
        operations = list(schema.get_all_operations())
        assert len(operations) >= minimum
