"""Prometheus metrics of an HTTP edge, and the ``/metrics`` endpoint that serves them.

The coordinator and every aggregator serve ``GET /metrics`` in the Prometheus text
format (``prometheus-client``). What every edge measures the same way lives here:

* ``veilfl_http_request_duration_seconds{method, route, status}``: a histogram of the
  time from a request's arrival to the start of its answer. ``route`` is the route's
  template (``/v1/rounds/{round_id}/updates``), never the raw path, so the label set
  stays small whatever clients send; a path no route matches is ``unmatched``.
* ``veilfl_http_requests_refused_total{route, reason}``: every 4xx answer, by the error
  class behind it (``RoundMismatchError``, ``AuthenticationError``,
  ``RequestValidationError``, ...), as noted by :mod:`veilfl.transport.http_errors`.

Each edge adds its own metrics to the same registry (:attr:`HttpMetrics.registry`),
listens to each answered request (:meth:`HttpMetrics.on_request`) and may refresh
gauges just before a scrape (:meth:`HttpMetrics.before_scrape`). Every app has its own
registry, never the process-wide default, so two services in one process (tests, the
demo) keep separate counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from veilfl.transport.http_errors import error_noted

__all__ = ["LATENCY_BUCKETS_S", "UNMATCHED_ROUTE", "HttpMetrics", "RequestOutcome"]

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Histogram buckets (seconds): polls answer in milliseconds, large uploads in seconds."""

UNMATCHED_ROUTE = "unmatched"
"""The ``route`` label of a request that no route matched."""


@dataclass(frozen=True)
class RequestOutcome:
    """One answered HTTP request, as the metrics see it.

    Attributes:
        method: The HTTP method.
        route: The matched route's template, or :data:`UNMATCHED_ROUTE`.
        status: The answer's status code (500 for an unhandled exception).
        reason: The error class behind a 4xx or 5xx answer, when a handler noted one.
        path_params: The route's path parameters, as sent (strings).
        seconds: Time from arrival to the start of the answer.
    """

    method: str
    route: str
    status: int
    reason: str | None
    path_params: Mapping[str, str]
    seconds: float

    @property
    def refused(self) -> bool:
        """Whether the request was refused (a 4xx answer)."""
        return 400 <= self.status < 500

    @property
    def refusal_reason(self) -> str:
        """The error class behind a refusal (``HTTP <status>`` where none was noted)."""
        return self.reason or f"HTTP {self.status}"

    def int_param(self, name: str) -> int | None:
        """Path parameter ``name`` as an int (None if absent or not a number)."""
        value = self.path_params.get(name)
        try:
            return None if value is None else int(value)
        except ValueError:
            return None


class HttpMetrics:
    """An edge's Prometheus registry, its request metrics and its ``/metrics`` endpoint.

    Args:
        clock: Monotonic clock in seconds (for request latency).
    """

    def __init__(self, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.registry = CollectorRegistry()
        self._clock = clock
        self._latency = Histogram(
            "veilfl_http_request_duration_seconds",
            "Time from a request's arrival to the start of its answer.",
            ("method", "route", "status"),
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._refused = Counter(
            "veilfl_http_requests_refused",
            "Requests answered with a 4xx, by route and the error class behind the answer.",
            ("route", "reason"),
            registry=self.registry,
        )
        self._listeners: list[Callable[[RequestOutcome], None]] = []
        self._refreshers: list[Callable[[], Awaitable[None]]] = []

    def on_request(self, listener: Callable[[RequestOutcome], None]) -> None:
        """Call ``listener`` (on the event loop; it must not block) after each request."""
        self._listeners.append(listener)

    def before_scrape(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Await ``refresh`` before each scrape (to update gauges read from elsewhere)."""
        self._refreshers.append(refresh)

    def observe(self, outcome: RequestOutcome) -> None:
        """Count one answered request."""
        self._latency.labels(outcome.method, outcome.route, str(outcome.status)).observe(
            outcome.seconds
        )
        if outcome.refused:
            self._refused.labels(outcome.route, outcome.refusal_reason).inc()
        for listener in self._listeners:
            try:
                listener(outcome)
            except Exception:  # counting must never fail a request
                logger.exception("a request-metrics listener failed")

    async def scrape(self) -> bytes:
        """Every metric of the registry, in the Prometheus text format."""
        for refresh in self._refreshers:
            await refresh()
        return generate_latest(self.registry)

    def install(self, app: FastAPI) -> None:
        """Time every request of ``app`` and serve ``GET /metrics`` (not in the OpenAPI
        schema: it is plain text for Prometheus, not part of the API)."""
        app.add_middleware(_MeasureRequests, metrics=self, clock=self._clock)

        async def prometheus_metrics() -> Response:
            return Response(content=await self.scrape(), media_type=CONTENT_TYPE_LATEST)

        app.add_api_route("/metrics", prometheus_metrics, methods=["GET"], include_in_schema=False)


def _outcome(scope: Scope, status: int, seconds: float) -> RequestOutcome:
    """What the metrics count of a request, once the router has matched it."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    params: Any = scope.get("path_params") or {}
    return RequestOutcome(
        method=str(scope.get("method", "")),
        route=template if isinstance(template, str) else UNMATCHED_ROUTE,
        status=status,
        reason=error_noted(scope),
        path_params={str(k): str(v) for k, v in params.items()},
        seconds=seconds,
    )


class _MeasureRequests:
    """ASGI middleware: time each HTTP request and hand its outcome to the metrics.

    A plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``): it adds no task
    per request and leaves streamed bodies alone.
    """

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics, clock: Callable[[], float]) -> None:
        self._app = app
        self._metrics = metrics
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        clock = self._clock
        started = clock()
        answered: list[tuple[int, float]] = []

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered.append((int(message["status"]), clock() - started))
            await send(message)

        try:
            await self._app(scope, receive, send_timed)
        finally:
            status, seconds = answered[0] if answered else (500, clock() - started)
            self._metrics.observe(_outcome(scope, status, seconds))
