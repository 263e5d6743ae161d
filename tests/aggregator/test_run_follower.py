"""An aggregator left running follows its coordinator into a new run, and ends when
the coordinator reports its run done (unless told to stay)."""

from __future__ import annotations

import asyncio
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
        self.done = False
        self.asked: dict[str, int] = {}
        self._waiting: list[tuple[str, int, asyncio.Event]] = []
        self.serve("run-a")

    async def asked_for(self, path: str, times: int) -> None:
        """Return once ``path`` has been asked for ``times`` times in all."""
        event = asyncio.Event()
        self._waiting.append((path, times, event))
        self._wake()
        await asyncio.wait_for(event.wait(), timeout=10)

    def _wake(self) -> None:
        for path, times, event in self._waiting:
            if self.asked.get(path, 0) >= times:
                event.set()

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
        self.asked[request.url.path] = self.asked.get(request.url.path, 0) + 1
        self._wake()
        if request.url.path == "/v1/status":
            return httpx.Response(200, json={"run_id": self.run["run_id"], "done": self.done})
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


def _following_app(
    tmp_path: Path, coordinator: Coordinator, on_run_done: Any, *, interval_s: float = 0.01
) -> Any:
    return create_aggregator_app(
        AggregatorService(
            index=1,
            keypair=KEYS[0],
            spool=tmp_path,
            min_participants=2,
            peer_fingerprints=[key.fingerprint for key in KEYS],
        ),
        coordinator_url="http://coordinator",
        max_share_bytes=1 << 20,
        access=AggregatorAccess(index=1, rate_limit=None),
        follow_interval_s=interval_s,
        coordinator_transport=coordinator,
        on_run_done=on_run_done,
    )


async def test_the_aggregator_ends_once_the_coordinator_reports_its_run_done(
    tmp_path: Path,
) -> None:
    coordinator = Coordinator()
    ended = asyncio.Event()
    app = _following_app(tmp_path, coordinator, ended.set)
    async with app.router.lifespan_context(app):
        await coordinator.asked_for("/v1/status", 3)  # checks of a run still going
        assert not ended.is_set()
        coordinator.done = True
        await asyncio.wait_for(ended.wait(), timeout=10)


async def test_a_done_run_that_is_not_the_aggregators_does_not_end_it() -> None:
    coordinator = Coordinator()
    run_a = str(coordinator.run["run_id"])
    follower = RunFollower(
        "http://coordinator", attach=lambda run: None, run_id=run_a, transport=coordinator
    )
    assert await follower.run_done() is False
    coordinator.done = True
    assert await follower.run_done() is True
    follower.run_id = "run-b"  # an aggregator that serves another run
    assert await follower.run_done() is False


async def test_an_aggregator_told_to_stay_serves_on_after_the_run(tmp_path: Path) -> None:
    coordinator = Coordinator()
    coordinator.done = True
    app = _following_app(tmp_path, coordinator, None)
    async with app.router.lifespan_context(app):
        await coordinator.asked_for("/v1/run", 3)  # following the done run
        run_b = coordinator.serve("run-b")  # the coordinator's next run
        await coordinator.asked_for("/v1/run", 5)
    assert run_b in (tmp_path / "run.json").read_text()  # it followed
