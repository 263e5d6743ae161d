"""The coordinator's ``GET /metrics``, in the Prometheus text format.

Besides the request metrics every edge has (:mod:`veilfl.transport.http_metrics`):

=============================================  ==================================================
``veilfl_rounds_completed_total``              rounds (buffers) served by this process
``veilfl_rounds_abandoned_total``              rounds abandoned and run again under a new id
``veilfl_clients_excluded_total``              clients left out of a round's sum
``veilfl_aggregation_stalls_total``            times aggregation could not go on for now
``veilfl_updates_accepted_total{kind}``        accepted updates, receipts and tickets
``veilfl_updates_refused_total{kind,reason}``  refused ones, by the error class of the 4xx
``veilfl_aggregator_answers_total{aggregator}``              answers from each aggregator
``veilfl_aggregator_failures_total{aggregator,kind}``        its failures: refused, unreachable
``veilfl_round`` / ``veilfl_model_version``    the open round and the served model version
``veilfl_clients_joined``                      clients that joined the run
``veilfl_coordinator_phase{veilfl_coordinator_phase}``       collecting, aggregating, ... (1 = now)
``veilfl_run_rounds_completed``                rounds the run has completed (across restarts)
``veilfl_epsilon``                             privacy spent so far (DP runs, at the run's delta)
``veilfl_train_loss`` / ``veilfl_test_loss``   of the latest round that has them
``veilfl_test_accuracy``                       of the latest evaluated round
``veilfl_federated_loss`` / ``_accuracy``      federated evaluation of the latest round with one
``veilfl_federated_examples``                  the examples that evaluation covered
=============================================  ==================================================

Counters are read from the service's :class:`~veilfl.server.run_observer.RunObserver`
at scrape time, so ``/metrics`` and the dashboard always agree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from fastapi import FastAPI
from prometheus_client import Enum, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from veilfl.protocol.coordinator import CoordinatorPhase
from veilfl.protocol.metrics import RoundMetrics
from veilfl.server.run_observer import RunObserver
from veilfl.server.service import CoordinatorService
from veilfl.transport.http_metrics import HttpMetrics, RequestOutcome

__all__ = ["UPDATE_ROUTES", "install_coordinator_metrics"]

UPDATE_ROUTES = {
    "/v1/rounds/{round_id}/updates": "update",
    "/v1/rounds/{round_id}/receipts": "receipt",
    "/v1/tickets": "ticket",
}
"""The routes that hand in an update (or its receipt, or ask where it goes), by kind."""


def install_coordinator_metrics(
    app: FastAPI, service: CoordinatorService, *, history: Callable[[], Sequence[RoundMetrics]]
) -> HttpMetrics:
    """Measure ``app``'s requests and serve the coordinator's ``GET /metrics``.

    Args:
        app: The coordinator's app.
        service: The coordinator.
        history: Every completed round's metrics (with evaluations).
    """
    metrics = HttpMetrics()
    observer = service.observer

    def count_update(outcome: RequestOutcome) -> None:
        kind = UPDATE_ROUTES.get(outcome.route)
        if kind is None or outcome.method != "POST" or outcome.status >= 500:
            return
        observer.update_answered(
            kind,
            round_id=outcome.int_param("round_id"),
            refused=outcome.refusal_reason if outcome.refused else None,
        )

    metrics.on_request(count_update)
    metrics.registry.register(_RunCollector(observer, history))
    registry = metrics.registry
    round_id = Gauge(
        "veilfl_round", "The open round (or buffer), or the next one.", registry=registry
    )
    version = Gauge("veilfl_model_version", "The served global model version.", registry=registry)
    joined = Gauge("veilfl_clients_joined", "Clients that joined the run.", registry=registry)
    phase = Enum(
        "veilfl_coordinator_phase",
        "What the coordinator is doing with the current round.",
        states=[p.value for p in CoordinatorPhase],
        registry=registry,
    )

    async def refresh() -> None:
        status = await service.live_status()
        round_id.set(float(status["round_id"]))
        version.set(float(status["model_version"]))
        joined.set(float(status.get("joined", 0)))
        phase.state(str(status["coordinator_phase"]))

    metrics.before_scrape(refresh)
    metrics.install(app)
    return metrics


class _RunCollector(Collector):
    """The observer's counters and the history's latest values, read at scrape time."""

    def __init__(self, observer: RunObserver, history: Callable[[], Sequence[RoundMetrics]]):
        self._observer = observer
        self._history = history

    def collect(self) -> Iterator[Metric]:
        counts = self._observer.counts()
        yield CounterMetricFamily(
            "veilfl_rounds_completed",
            "Rounds (or buffers) whose model this process served.",
            value=counts.rounds_completed,
        )
        yield CounterMetricFamily(
            "veilfl_rounds_abandoned",
            "Rounds abandoned (not aggregated in time) and run again under a new id.",
            value=counts.rounds_abandoned,
        )
        yield CounterMetricFamily(
            "veilfl_clients_excluded",
            "Clients left out of a round's sum (their shares were not held by enough aggregators).",
            value=counts.clients_excluded,
        )
        yield CounterMetricFamily(
            "veilfl_aggregation_stalls",
            "Times aggregation could not go on for now (it asks again).",
            value=counts.stalls,
        )
        accepted = CounterMetricFamily(
            "veilfl_updates_accepted",
            "Accepted update requests (repeats included): updates, receipts (secure "
            "aggregation) and tickets (buffered runs).",
            labels=("kind",),
        )
        for kind in UPDATE_ROUTES.values():
            accepted.add_metric((kind,), counts.updates_accepted.get(kind, 0))
        yield accepted
        refused = CounterMetricFamily(
            "veilfl_updates_refused",
            "Refused update requests, by kind and the error class behind the 4xx answer.",
            labels=("kind", "reason"),
        )
        for (kind, reason), count in sorted(counts.updates_refused.items()):
            refused.add_metric((kind, reason), count)
        yield refused
        answers = CounterMetricFamily(
            "veilfl_aggregator_answers",
            "Requests each aggregator answered.",
            labels=("aggregator",),
        )
        for index, count in sorted(counts.aggregator_answers.items()):
            answers.add_metric((str(index),), count)
        yield answers
        failures = CounterMetricFamily(
            "veilfl_aggregator_failures",
            "Requests to each aggregator that it refused or that did not reach it.",
            labels=("aggregator", "kind"),
        )
        for (index, kind), count in sorted(counts.aggregator_failures.items()):
            failures.add_metric((str(index), kind), count)
        yield failures
        yield from _history_gauges(self._history())


def _history_gauges(history: Sequence[RoundMetrics]) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "veilfl_run_rounds_completed",
        "Rounds (or buffers) the run has completed, across coordinator restarts.",
        value=len(history),
    )
    latest = {
        "veilfl_epsilon": (
            "Privacy spent so far (epsilon at the run's delta; DP runs only).",
            [m.epsilon for m in history],
        ),
        "veilfl_train_loss": (
            "Sample-weighted mean local training loss of the latest round reporting one.",
            [m.train_loss for m in history],
        ),
        "veilfl_test_loss": (
            "Server-side test loss of the latest evaluated round.",
            [m.test_loss for m in history],
        ),
        "veilfl_test_accuracy": (
            "Server-side test accuracy (0 to 1) of the latest evaluated round.",
            [m.test_accuracy for m in history],
        ),
        "veilfl_federated_loss": (
            "Federated evaluation: example-weighted mean loss, on the clients' own "
            "evaluation splits, of the model the latest round reporting one started from.",
            [m.federated_loss for m in history],
        ),
        "veilfl_federated_accuracy": (
            "Federated evaluation: example-weighted accuracy (0 to 1), on the clients' own "
            "evaluation splits, of the model the latest round reporting one started from.",
            [m.federated_accuracy for m in history],
        ),
        "veilfl_federated_examples": (
            "Examples the latest round's federated evaluation covered.",
            [m.federated_examples for m in history],
        ),
    }
    for name, (documentation, values) in latest.items():
        known = [v for v in values if v is not None]
        if known:
            yield GaugeMetricFamily(name, documentation, value=known[-1])
