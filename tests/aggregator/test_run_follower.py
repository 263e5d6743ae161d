"""An aggregator left running follows its coordinator into a new run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.contributions import seal
from tests.run_descriptions import secure_description

from veilfl.aggregator.access import AggregatorAccess
from veilfl.aggregator.run_follower import RunFollower
from veilfl.aggregator.service import AggregatorService, create_aggregator_app
from veilfl.auth.admission import ADMISSION_HEADER, RoundAdmission, issue_admission
from veilfl.auth.identity import Identity
from veilfl.auth.signed_request import aggregator_audience
from veilfl.crypto.keys import AggregatorKeyPair, generate_keypair
from veilfl.errors import ConfigurationError
from veilfl.protocol.messages import RunInfo
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.transport.signing import SigningAuth, for_round

pytestmark = pytest.mark.timeout(60)
KEYS = [generate_keypair() for _ in range(2)]
CONFIG = SecureAggregationConfig(threshold=2, num_aggregators=2, max_samples_per_client=10)
D = 4


class Coordinator(httpx.AsyncBaseTransport):
    """Describes whichever run it serves now; a new run has a new coordinator key."""

    def __init__(self) -> None:
        self.serve("run-a")

    def serve(self, name: str, *, keys: list[AggregatorKeyPair] | None = None) -> str:
        """Describe the run ``name`` (its id is the description's hash, returned)."""
        self.identity = Identity.generate()
        self.run: dict[str, Any] = secure_description(
            name,
            config=CONFIG,
            keys=keys or KEYS,
            model_size=D,
            coordinator_key=self.identity.public_key_text,
        ).to_json()
        return str(self.run["run_id"])

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=self.run)


async def _upload(app: Any, coordinator: Coordinator) -> httpx.Response:
    """One admitted client of the coordinator's current run sends its share to aggregator 1."""
    client = Identity.generate()
    run_id = str(coordinator.run["run_id"])
    admission = issue_admission(
        coordinator.identity,
        RoundAdmission(
            run_id=run_id, round_id=1, client_id=client.client_id, client_key=client.public_key
        ),
    )
    sealed = seal(
        CONFIG, KEYS, run_id=run_id, round_id=1, client_id=client.client_id, update=np.full(D, 0.1)
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://aggregator",
        auth=SigningAuth(client, aggregator_audience(1, run_id)),
    ) as http:
        return await http.post(
            "/v1/rounds/1/shares",
            content=sealed[0].envelope,
            headers={ADMISSION_HEADER: admission},
            extensions=for_round(1),
        )


async def test_a_share_of_the_coordinators_new_run_makes_the_aggregator_follow(
    tmp_path: Path,
) -> None:
    coordinator = Coordinator()
    service = AggregatorService(
        index=1,
        keypair=KEYS[0],
        spool=tmp_path,
        min_participants=2,
        peer_fingerprints=[key.fingerprint for key in KEYS],
    )
    app = create_aggregator_app(
        service,
        coordinator_url="http://coordinator",
        max_share_bytes=1 << 20,
        access=AggregatorAccess(index=1, rate_limit=None),
        follow_interval_s=3600.0,  # only the on-demand check acts in this test
        coordinator_transport=coordinator,
    )
    async with app.router.lifespan_context(app):
        assert (await _upload(app, coordinator)).status_code == 202
        old = coordinator.identity, dict(coordinator.run)
        run_b = coordinator.serve("run-b")  # the coordinator restarted on a new --run-dir
        assert (await _upload(app, coordinator)).status_code == 202
        assert (tmp_path / "run.json").read_text().count(run_b) == 1
        coordinator.identity, coordinator.run = old  # a straggler of the old run
        refused = await _upload(app, coordinator)
        assert refused.status_code == 401


async def test_a_new_run_without_this_aggregator_is_reported_once_and_not_attached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    coordinator = Coordinator()
    attached: list[str] = []

    def attach(run: RunInfo) -> None:
        assert run.secure is not None
        if KEYS[0].fingerprint not in {a.fingerprint for a in run.secure.aggregators}:
            raise ConfigurationError("The coordinator does not publish this aggregator's key.")
        attached.append(run.run_id)

    clock = [0.0]
    follower = RunFollower(
        "http://coordinator",
        attach=attach,
        run_id=str(coordinator.run["run_id"]),
        transport=coordinator,
        clock=lambda: clock[0],
    )
    assert await follower.check() is False  # same run
    run_c = coordinator.serve("run-c", keys=[generate_keypair(), generate_keypair()])
    assert await follower.check() is False
    assert await follower.check() is False
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and run_c in errors[0].getMessage()
    run_d = coordinator.serve("run-d")
    assert await follower.check_soon() is False  # checked less than a second ago
    clock[0] += 1.5
    assert await follower.check_soon() is True
    assert attached == [run_d] and follower.run_id == run_d
