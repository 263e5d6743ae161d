"""An aggregator's ``GET /metrics``, in the Prometheus text format.

Besides the request metrics every edge has (:mod:`veilfl.transport.http_metrics`):

==================================================  =======================================
``veilfl_aggregator_shares_accepted_total``         sealed shares accepted (repeats included)
``veilfl_aggregator_shares_refused_total{reason}``  refused, by the error class of the 4xx
``veilfl_aggregator_coordinator_requests_total{request,outcome}``  the coordinator's
                                                    requests (``holdings``, ``verify``,
                                                    ``commit``, ``aggregate``): ``answered``,
                                                    or the refusal's error class
``veilfl_aggregator_attached``                      1 once the aggregator serves a run
``veilfl_aggregator_open_rounds``                   rounds whose shares it holds
``veilfl_aggregator_shares_held``                   shares summed in those rounds
``veilfl_aggregator_spool_files`` / ``_bytes``      what its spool folder holds on disk
==================================================  =======================================
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import FastAPI
from prometheus_client import Counter, Gauge

from veilfl.transport.http_metrics import HttpMetrics, RequestOutcome

if TYPE_CHECKING:
    from veilfl.aggregator.service import AggregatorService

__all__ = ["install_aggregator_metrics"]

SHARES_ROUTE = "/v1/rounds/{round_id}/shares"
COORDINATOR_ROUTES = {
    "/v1/rounds/{round_id}/holdings": "holdings",
    "/v1/rounds/{round_id}/verify": "verify",
    "/v1/rounds/{round_id}/commit": "commit",
    "/v1/rounds/{round_id}/aggregate": "aggregate",
}
"""The coordinator's requests to an aggregator, by route."""


def install_aggregator_metrics(app: FastAPI, service: AggregatorService) -> HttpMetrics:
    """Measure ``app``'s requests and serve the aggregator's ``GET /metrics``."""
    metrics = HttpMetrics()
    registry = metrics.registry
    accepted = Counter(
        "veilfl_aggregator_shares_accepted",
        "Sealed shares accepted (a repeat of an accepted share included).",
        registry=registry,
    )
    refused = Counter(
        "veilfl_aggregator_shares_refused",
        "Sealed shares refused, by the error class behind the 4xx answer.",
        ("reason",),
        registry=registry,
    )
    requests = Counter(
        "veilfl_aggregator_coordinator_requests",
        "The coordinator's requests (holdings, verify, commit, aggregate): answered, or "
        "the error class of the refusal.",
        ("request", "outcome"),
        registry=registry,
    )
    for request in COORDINATOR_ROUTES.values():
        requests.labels(request, "answered")

    def count(outcome: RequestOutcome) -> None:
        if outcome.status >= 500:
            return
        if outcome.route == SHARES_ROUTE and outcome.method == "POST":
            if outcome.refused:
                refused.labels(outcome.refusal_reason).inc()
            else:
                accepted.inc()
        elif outcome.route in COORDINATOR_ROUTES:
            label = outcome.refusal_reason if outcome.refused else "answered"
            requests.labels(COORDINATOR_ROUTES[outcome.route], label).inc()

    metrics.on_request(count)
    attached = Gauge(
        "veilfl_aggregator_attached", "1 once the aggregator serves a run.", registry=registry
    )
    open_rounds = Gauge(
        "veilfl_aggregator_open_rounds", "Rounds whose shares it holds.", registry=registry
    )
    held = Gauge(
        "veilfl_aggregator_shares_held",
        "Shares summed in the rounds it holds.",
        registry=registry,
    )
    spool_files = Gauge(
        "veilfl_aggregator_spool_files", "Files in the share spool folder.", registry=registry
    )
    spool_bytes = Gauge(
        "veilfl_aggregator_spool_bytes", "Bytes in the share spool folder.", registry=registry
    )

    async def refresh() -> None:
        status = service.status()
        rounds = status["rounds"]
        attached.set(1.0 if status["attached"] else 0.0)
        open_rounds.set(len(rounds))
        held.set(sum(rounds.values()))
        files, size = await asyncio.to_thread(service.spool_usage)
        spool_files.set(files)
        spool_bytes.set(size)

    metrics.before_scrape(refresh)
    metrics.install(app)
    return metrics
