"""Request metrics of an HTTP edge: latency by route template, refusals by error class,
and the ``/metrics`` endpoint, on a small app driven in process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from veilfl.errors import RoundMismatchError
from veilfl.transport.http_errors import install_error_handlers
from veilfl.transport.http_metrics import UNMATCHED_ROUTE, HttpMetrics, RequestOutcome

pytestmark = pytest.mark.timeout(60)
LATENCY = "veilfl_http_request_duration_seconds_count"
REFUSED = "veilfl_http_requests_refused_total"


def _app() -> tuple[FastAPI, HttpMetrics, list[RequestOutcome]]:
    app = FastAPI()
    install_error_handlers(app)
    metrics = HttpMetrics()
    seen: list[RequestOutcome] = []
    metrics.on_request(seen.append)
    metrics.install(app)

    @app.get("/v1/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        if item_id == "late":
            raise RoundMismatchError("Round 3 is closed; ask for a task again.")
        return {"item": item_id}

    @app.get("/v1/count")
    async def count(n: int) -> dict[str, int]:
        return {"n": n}

    @app.get("/v1/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    return app, metrics, seen


@pytest.fixture
async def edge() -> AsyncIterator[tuple[httpx.AsyncClient, HttpMetrics, list[RequestOutcome]]]:
    app, metrics, seen = _app()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
        yield client, metrics, seen


def _value(metrics: HttpMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_latency_is_labelled_by_route_template_not_by_raw_path(
    edge: tuple[httpx.AsyncClient, HttpMetrics, list[RequestOutcome]],
) -> None:
    client, metrics, seen = edge
    for item in ("a", "b", "c"):
        assert (await client.get(f"/v1/items/{item}")).status_code == 200
    assert _value(metrics, LATENCY, method="GET", route="/v1/items/{item_id}", status="200") == 3
    assert [o.path_params for o in seen] == [{"item_id": "a"}, {"item_id": "b"}, {"item_id": "c"}]
    assert all(o.seconds >= 0 and not o.refused for o in seen)


async def test_each_4xx_is_counted_by_the_error_class_behind_it(
    edge: tuple[httpx.AsyncClient, HttpMetrics, list[RequestOutcome]],
) -> None:
    client, metrics, seen = edge
    assert (await client.get("/v1/items/late")).status_code == 409
    assert (await client.get("/v1/count?n=many")).status_code == 422
    assert (await client.get("/v1/nowhere/at/all")).status_code == 404
    assert _value(metrics, REFUSED, route="/v1/items/{item_id}", reason="RoundMismatchError") == 1
    assert _value(metrics, REFUSED, route="/v1/count", reason="RequestValidationError") == 1
    assert _value(metrics, REFUSED, route=UNMATCHED_ROUTE, reason="HTTPError") == 1
    assert [o.refusal_reason for o in seen] == [
        "RoundMismatchError",
        "RequestValidationError",
        "HTTPError",
    ]


async def test_a_server_error_is_timed_as_500_and_not_counted_as_a_refusal(
    edge: tuple[httpx.AsyncClient, HttpMetrics, list[RequestOutcome]],
) -> None:
    client, metrics, _ = edge
    assert (await client.get("/v1/boom")).status_code == 500
    assert _value(metrics, LATENCY, method="GET", route="/v1/boom", status="500") == 1
    assert _value(metrics, REFUSED, route="/v1/boom", reason="HTTP 500") == 0


async def test_a_failing_listener_never_fails_the_request() -> None:
    app, metrics, _ = _app()

    def broken(outcome: RequestOutcome) -> None:
        raise ValueError("listener bug")

    metrics.on_request(broken)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://edge"
    ) as client:
        assert (await client.get("/v1/items/a")).status_code == 200
    assert _value(metrics, LATENCY, method="GET", route="/v1/items/{item_id}", status="200") == 1


async def test_metrics_endpoint_serves_the_prometheus_text_format_after_refreshing(
    edge: tuple[httpx.AsyncClient, HttpMetrics, list[RequestOutcome]],
) -> None:
    client, metrics, _ = edge
    refreshed: list[int] = []

    async def refresh() -> None:
        refreshed.append(1)

    metrics.before_scrape(refresh)
    await client.get("/v1/items/late")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert {"veilfl_http_request_duration_seconds", "veilfl_http_requests_refused"} <= set(families)
    assert refreshed == [1]
    assert "/metrics" not in (await client.get("/openapi.json")).text


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1), max_size=8))
def test_label_values_stay_few_whatever_paths_clients_send(items: list[str]) -> None:
    app, metrics, _ = _app()

    async def send_all() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
            for item in items:
                await client.get(f"/v1/items/{item}")
                await client.get(f"/v1/unknown/{item}")

    asyncio.run(send_all())
    routes = {
        sample.labels["route"]
        for family in metrics.registry.collect()
        for sample in family.samples
        if "route" in sample.labels
    }
    assert routes <= {"/v1/items/{item_id}", UNMATCHED_ROUTE}
    assert _value(metrics, LATENCY, method="GET", route=UNMATCHED_ROUTE, status="404") == len(items)
