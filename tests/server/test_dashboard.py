"""The coordinator's dashboard: the page is self-contained and locked down, and its
JSON follows a plaintext round over HTTP (in process) without showing a client id."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any

import httpx
import numpy as np
import pytest
from tests.signed_clients import enroll, open_access
from tests.tiny_coordinator import service_for

from veilfl.protocol.messages import LocalTrainingPlan, UpdateHeader
from veilfl.protocol.metrics import RoundMetrics
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.server.app import create_app
from veilfl.server.dashboard import DashboardPage, dashboard_page, describe_wait, public_settings
from veilfl.server.run_observer import AggregatorHealth, AggregatorState
from veilfl.server.service import CoordinatorService
from veilfl.tensors import Weights
from veilfl.transport.signing import for_round
from veilfl.wire.tensor_codec import encode_weights

pytestmark = pytest.mark.timeout(60)
RUN = "dash-run"
SETTINGS = RunSpec(
    model_name="tiny",
    rounds=RoundConfig(
        num_rounds=1, clients_per_round=2, min_clients=2, round_timeout_s=60, poll_interval_s=0.01
    ),
    plan=LocalTrainingPlan(),
)


def _weights(value: float) -> Weights:
    return {"w": np.full((3, 2), value, np.float32), "b": np.full(2, value, np.float32)}


def _update(client_id: str, *, round_id: int = 1) -> bytes:
    header = UpdateHeader(
        client_id=client_id, round_id=round_id, base_version=0, num_samples=4, loss=0.5
    )
    return encode_weights(_weights(1.0), metadata=header.to_metadata())


class Coordinator:
    """An in-process coordinator app, its transport and service."""

    def __init__(self, service: CoordinatorService, transport: httpx.ASGITransport) -> None:
        self.service = service
        self.transport = transport
        self.http = httpx.AsyncClient(transport=transport, base_url="http://test")

    async def dashboard(self, since: int = 0) -> dict[str, Any]:
        response = await self.http.get(f"/v1/dashboard?since={since}")
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture
async def coordinator() -> AsyncIterator[Coordinator]:
    service = service_for(SETTINGS, _weights(0.0))
    app = create_app(
        service,
        metrics=lambda: list(service.core.history),
        access=open_access(RUN),
        settings=SETTINGS,
    )
    await service.start(tick_interval_s=0.01)
    coordinator = Coordinator(service, httpx.ASGITransport(app=app))
    yield coordinator
    await coordinator.http.aclose()
    await service.stop()


async def test_the_dashboard_follows_a_round_from_joining_to_done(
    coordinator: Coordinator,
) -> None:
    before = await coordinator.dashboard()
    assert before["status"]["coordinator_phase"] == "collecting"
    assert before["waiting_for"].startswith("clients to join (0 joined, 2 needed")
    assert before["rounds"] == []
    assert before["settings"]["rounds.min_clients"] == 2
    clients = [await enroll(coordinator.transport, RUN, name=n) for n in ("a", "b")]
    for client_id, client in clients:
        task = (await client.get(f"/v1/clients/{client_id}/task")).json()
        assert task["kind"] == "train"
    open_round = await coordinator.dashboard()
    assert [(r["round_id"], r["state"]) for r in open_round["rounds"]] == [(1, "open")]
    assert open_round["waiting_for"].startswith("updates from 2 of 2 sampled clients (0 in")
    (first_id, first), (second_id, _) = clients
    late = await first.post(
        "/v1/rounds/1/updates", content=_update(first_id, round_id=7), extensions=for_round(1)
    )
    assert late.status_code == 409
    for client_id, client in clients:
        response = await client.post(
            "/v1/rounds/1/updates", content=_update(client_id), extensions=for_round(1)
        )
        assert response.status_code == 202
    await asyncio.wait_for(coordinator.service.finished.wait(), timeout=10)
    after = await coordinator.dashboard(since=open_round["revision"])
    (row,) = after["rounds"]
    assert (row["round_id"], row["state"], row["participants"], row["sampled"]) == (
        1,
        "completed",
        2,
        2,
    )
    assert row["refused"] == {"RoundMismatchError": 1}
    assert row["train_loss"] == pytest.approx(0.5)
    assert row["opened_s"] <= row["closed_s"] <= row["aggregated_s"] <= row["completed_s"]
    assert after["totals"]["updates_accepted"] == 2
    assert after["totals"]["updates_refused"] == {"RoundMismatchError": 1}
    assert after["status"]["coordinator_phase"] == "done"
    assert after["waiting_for"] == "nothing: the run is complete"
    assert (await coordinator.dashboard(since=after["revision"]))["rounds"] == []
    shown = json.dumps(await coordinator.dashboard())
    assert first_id not in shown and second_id not in shown
    for _, client in clients:
        await client.aclose()


async def test_a_diverged_loss_is_shown_as_missing_not_a_broken_answer() -> None:
    service = service_for(SETTINGS, _weights(0.0))
    diverged = RoundMetrics(1, 2, math.inf, math.nan, 0.1, seconds=1.0)
    app = create_app(service, metrics=lambda: [diverged], access=open_access(RUN))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        response = await http.get("/v1/dashboard")
    assert response.status_code == 200
    (row,) = response.json()["rounds"]
    assert (row["train_loss"], row["test_loss"], row["test_accuracy"]) == (None, None, 0.1)


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.references += [v or "" for k, v in attrs if k in ("src", "href", "action")]


def _inline(page: str, tag: str) -> str:
    (body,) = re.findall(rf"<{tag}>(.*?)</{tag}>", page, flags=re.DOTALL)
    return str(body)


def _hash(source: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()


async def test_the_page_is_self_contained_and_allows_only_its_own_script_and_style(
    coordinator: Coordinator,
) -> None:
    response = await coordinator.http.get("/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    parsed = _Page()
    parsed.feed(page)
    assert all(ref.startswith("data:") for ref in parsed.references)
    assert {"iframe", "object", "embed", "form"}.isdisjoint(parsed.tags)
    external = set(re.findall(r"https?://[^\s\"'`]+", page))
    assert external == {"http://www.w3.org/2000/svg"}  # the SVG namespace, never fetched
    assert "innerHTML" not in page and "@import" not in page and "url(" not in page
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert f"script-src '{_hash(_inline(page, 'script'))}'" in policy
    assert f"style-src '{_hash(_inline(page, 'style'))}'" in policy
    assert "/dashboard" not in (await coordinator.http.get("/openapi.json")).json()["paths"]


def test_a_page_with_another_script_is_refused() -> None:
    page = dashboard_page().html
    with pytest.raises(ValueError, match="one inline"):
        DashboardPage(page.replace("</body>", "<script>alert(1)</script></body>"))


def _health(index: int, *, asked_s: float | None, asked_for: str | None) -> AggregatorHealth:
    return AggregatorHealth(
        index=index,
        url="",
        state=AggregatorState.WAITING if asked_s is not None else AggregatorState.OK,
        answers=1,
        failures=0,
        refusals=0,
        consecutive_failures=0,
        last_answer_s=None,
        last_latency_s=None,
        last_failure_s=None,
        last_failure=None,
        asked_s=asked_s,
        asked_for=asked_for,
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"coordinator_phase": "done"}, "nothing: the run is complete"),
        ({"coordinator_phase": "persisting"}, "the new model's checkpoint to be written"),
        (
            {"coordinator_phase": "aggregating", "aggregation": "collecting aggregate shares"},
            "aggregators 1, 3 to answer with its holdings of round 2 (asked 4.0 s ago)",
        ),
        (
            {"coordinator_phase": "collecting", "phase": "idle", "joined": 1},
            "clients to join (1 joined, 2 needed to start)",
        ),
        (
            {"coordinator_phase": "collecting", "phase": "open", "sampled": 3, "reported": 1},
            "updates from 2 of 3 sampled clients (1 in; 2 close the round, or its deadline in 7 s)",
        ),
        (
            {"coordinator_phase": "collecting", "round_id": 4, "pending": 2, "buffer_size": 5},
            "updates to fill buffer 4: 2 of 5 in",
        ),
    ],
)
def test_what_the_coordinator_waits_for_is_said_in_words(
    status: dict[str, Any], expected: str
) -> None:
    asked = "its holdings of round 2"
    aggregators = [
        _health(1, asked_s=6.0, asked_for=asked),
        _health(2, asked_s=None, asked_for=None),
        _health(3, asked_s=8.0, asked_for=asked),
    ]
    if status.get("aggregation") is None:
        aggregators = []
    words = describe_wait(
        {**status, "closes_in_s": 7.2}, aggregators, now_s=10.0, settings=SETTINGS
    )
    assert words.startswith(expected)


def test_settings_are_flattened_with_aggregators_keyed_by_index() -> None:
    flat = public_settings(
        {
            "model_name": "m",
            "rounds": {"num_rounds": 3},
            "secure": {"aggregators": [{"index": 2, "url": "https://a2"}]},
            "tags": [1, 2],
        }
    )
    assert flat == {
        "model_name": "m",
        "rounds.num_rounds": 3,
        "secure.aggregators.2.index": 2,
        "secure.aggregators.2.url": "https://a2",
        "tags": "1, 2",
    }


async def test_the_rounds_carry_the_federated_evaluation() -> None:
    service = service_for(SETTINGS, _weights(0.0))
    evaluated = RoundMetrics(
        1,
        2,
        0.5,
        None,
        None,
        seconds=1.0,
        federated_loss=0.25,
        federated_accuracy=0.75,
        federated_examples=40.0,
    )
    app = create_app(service, metrics=lambda: [evaluated], access=open_access(RUN))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as http:
        response = await http.get("/v1/dashboard")
        page = await http.get("/dashboard")
    (row,) = response.json()["rounds"]
    assert (row["federated_loss"], row["federated_accuracy"], row["federated_examples"]) == (
        0.25,
        0.75,
        40.0,
    )
    assert "federated accuracy" in page.text
