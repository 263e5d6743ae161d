"""The coordinator's live dashboard: ``GET /dashboard`` and the JSON behind it.

``/dashboard`` is one self-contained HTML page (``static/dashboard.html``: its style,
script and charts are inline, hand-drawn SVG; nothing is loaded from anywhere else, so
it works without internet). It is read-only and polls ``GET /v1/dashboard?since=R``
every second or so, which answers the run's state now and only the round rows changed
after revision ``R`` (see :class:`~veilfl.server.run_observer.RunObserver`).

The page is served with a Content-Security-Policy that allows exactly its own inline
style and script (by hash) and requests to this origin: no other script, style, frame
or connection can run in it. It shows counts, times, the run's public description and
settings, and aggregators' public URLs and error messages; never a client id, a key
file or a token.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from functools import cache
from importlib import resources
from typing import Any

from fastapi import FastAPI, Query, Response

from veilfl.protocol.metrics import RoundMetrics
from veilfl.protocol.run_spec import RunSpec
from veilfl.server.run_observer import AggregatorHealth, RunObserver
from veilfl.server.service import CoordinatorService

__all__ = [
    "DashboardPage",
    "dashboard_page",
    "dashboard_snapshot",
    "describe_wait",
    "install_dashboard",
    "public_settings",
]

POLL_INTERVAL_S = 1.0
"""How often the page asks for news."""


class DashboardPage:
    """The page's HTML and the security headers it is served with.

    Args:
        html: The page.

    Raises:
        ValueError: if the page does not hold exactly one inline ``<style>`` and one
            inline ``<script>`` (the policy allows those two by hash, nothing else).
    """

    def __init__(self, html: str) -> None:
        styles = re.findall(r"<style>(.*?)</style>", html, flags=re.DOTALL)
        scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
        if len(styles) != 1 or len(scripts) != 1:
            raise ValueError("The dashboard page must hold one inline <style> and one <script>.")
        self.html = html
        self.headers = {
            "Content-Security-Policy": (
                "default-src 'none'; "
                f"style-src '{_sha256(styles[0])}'; "
                f"script-src '{_sha256(scripts[0])}'; "
                "connect-src 'self'; img-src data:; "
                "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
            ),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        }


def _sha256(source: str) -> str:
    digest = hashlib.sha256(source.encode()).digest()
    return "sha256-" + base64.b64encode(digest).decode()


@cache
def dashboard_page() -> DashboardPage:
    """The packaged page (read once)."""
    html = resources.files("veilfl.server").joinpath("static/dashboard.html").read_text("utf-8")
    return DashboardPage(html.replace("{{POLL_MS}}", str(int(POLL_INTERVAL_S * 1000))))


def public_settings(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``settings`` (a run's ``to_json``) flattened to ``a.b.c: value`` pairs.

    Lists of objects (the aggregators) are keyed by their ``index`` when they have one.
    """
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(public_settings(value, f"{name}."))
        elif (
            isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value)
        ):
            for position, item in enumerate(value, start=1):
                flat.update(public_settings(item, f"{name}.{item.get('index', position)}."))
        elif isinstance(value, list | tuple):
            flat[name] = ", ".join(str(v) for v in value)
        else:
            flat[name] = value
    return flat


def describe_wait(
    status: Mapping[str, Any],
    aggregators: Sequence[AggregatorHealth],
    *,
    now_s: float,
    settings: RunSpec | None,
) -> str:
    """What the coordinator is waiting for now, in a few words.

    Args:
        status: The service's live status (:meth:`CoordinatorService.live_status`).
        aggregators: The aggregators' health (who has a request outstanding).
        now_s: Seconds since the service started (the aggregators' clock).
        settings: The run's settings, if known (for the clients a round needs).
    """
    phase = status.get("coordinator_phase")
    if phase == "done":
        return "nothing: the run is complete"
    if phase == "persisting":
        return "the new model's checkpoint to be written (the model is served once it is)"
    if phase == "aggregating":
        asked = [a for a in aggregators if a.asked_s is not None]
        if asked:
            names = ", ".join(str(a.index) for a in asked)
            waited = max(now_s - (a.asked_s or now_s) for a in asked)
            noun = "aggregator" if len(asked) == 1 else "aggregators"
            return f"{noun} {names} to answer with {asked[0].asked_for} (asked {waited:.1f} s ago)"
        job = status.get("aggregation")
        return f"aggregation: {job}" if job else "the aggregate"
    if "buffer_size" in status:
        return (
            f"updates to fill buffer {status.get('round_id')}: "
            f"{status.get('pending', 0)} of {status['buffer_size']} in"
        )
    if status.get("phase") == "idle":
        needed = settings.rounds.clients_needed_to_start if settings is not None else None
        joined = status.get("joined", 0)
        return f"clients to join ({joined} joined" + (
            f", {needed} needed to start)" if needed else ")"
        )
    if status.get("phase") == "closing":
        return "the round to close"
    sampled, reported = int(status.get("sampled", 0)), int(status.get("reported", 0))
    words = f"updates from {sampled - reported} of {sampled} sampled clients ({reported} in"
    if settings is not None:
        words += f"; {settings.rounds.min_clients} close the round"
    closes = status.get("closes_in_s")
    if isinstance(closes, int | float):
        words += f", or its deadline in {closes:.0f} s"
    return words + ")"


async def dashboard_snapshot(
    service: CoordinatorService,
    *,
    history: Sequence[RoundMetrics],
    settings: RunSpec | None,
    since: int = 0,
) -> dict[str, Any]:
    """What ``GET /v1/dashboard`` answers: the run now, and rounds changed after
    revision ``since``."""
    observer: RunObserver = service.observer
    status = await service.live_status()
    observer.merge_history(history)
    if status.get("coordinator_phase") == "collecting" and status.get("phase") not in (
        "idle",
        None,
    ):
        observer.round_open(int(status["round_id"]))
    now_s = observer.now_s()
    aggregators = observer.aggregators()
    counts = observer.counts()
    refused: dict[str, int] = {}
    for (_, reason), count in counts.updates_refused.items():
        refused[reason] = refused.get(reason, 0) + count
    run = service.run_info.to_json()
    # The revision is read before the rows: a change in between is sent twice, never lost.
    snapshot: dict[str, Any] = _json_safe(
        {
            "instance": observer.instance,
            "revision": observer.revision,
            "now_s": now_s,
            "run": run,
            "settings": public_settings(settings.to_json() if settings is not None else run),
            "status": status,
            "waiting_for": describe_wait(status, aggregators, now_s=now_s, settings=settings),
            "rounds": [asdict(row) for row in observer.rounds(since=since)],
            "aggregators": [asdict(a) for a in aggregators],
            "totals": {
                "rounds_completed": counts.rounds_completed,
                "rounds_abandoned": counts.rounds_abandoned,
                "clients_excluded": counts.clients_excluded,
                "updates_accepted": sum(counts.updates_accepted.values()),
                "updates_refused": refused,
            },
        }
    )
    return snapshot


def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (a diverged loss) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def install_dashboard(
    app: FastAPI,
    service: CoordinatorService,
    *,
    history: Callable[[], Sequence[RoundMetrics]],
    settings: RunSpec | None = None,
) -> None:
    """Serve ``GET /dashboard`` (the page) and ``GET /v1/dashboard`` (its data).

    Args:
        app: The coordinator's app.
        service: The coordinator.
        history: Every completed round's metrics, with evaluations.
        settings: The run's settings (shown, and used to say what a round waits for);
            without them the page shows the public run description.
    """
    page = dashboard_page()

    @app.get("/dashboard", include_in_schema=False)
    async def dashboard() -> Response:
        return Response(content=page.html, media_type="text/html", headers=page.headers)

    @app.get("/v1/dashboard")
    async def dashboard_data(
        since: int = Query(default=0, ge=0, description="Rows changed after this revision."),
    ) -> dict[str, Any]:
        """The run as the dashboard shows it (status, rounds, aggregators, settings)."""
        return await dashboard_snapshot(service, history=history(), settings=settings, since=since)
