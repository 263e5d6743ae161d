"""``veilfl aggregator`` stops serving when its coordinator reports the run done, and
serves on with ``--stay`` (the app side is in tests/aggregator/test_run_follower.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from veilfl.aggregator import service as aggregator_service
from veilfl.cli.main import main


@dataclass
class _Seen:
    """What the command wired up, and whether its server stopped when the run ended."""

    on_run_done: Callable[[], None] | None = None
    stopped_at_run_end: bool = False


def _serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *flags: str) -> _Seen:
    """Run ``veilfl aggregator`` with a server that "serves" by ending the run at once."""
    seen = _Seen()
    assert main(["keys", "--out", str(tmp_path), "--count", "1"]) == 0

    def create_app(service: object, **kwargs: Any) -> object:
        seen.on_run_done = kwargs["on_run_done"]
        return object()

    class Server:
        def __init__(self, config: uvicorn.Config) -> None:
            self.should_exit = False
            self.started = True

        async def serve(self) -> None:
            if seen.on_run_done is not None:
                seen.on_run_done()  # the follower saw the run done
            seen.stopped_at_run_end = self.should_exit

    monkeypatch.setattr(aggregator_service, "create_aggregator_app", create_app)
    monkeypatch.setattr(uvicorn, "Server", Server)
    argv = ["aggregator", "--index", "1", "--key", str(tmp_path / "aggregator-1.key")]
    argv += ["--coordinator", "http://127.0.0.1:1", "--insecure", *flags]
    argv += ["--trust-coordinator-peer-keys"]  # no peers in this test
    assert main(argv) == 0
    return seen


def test_the_aggregator_stops_serving_when_the_run_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _serve(tmp_path, monkeypatch)
    assert seen.on_run_done is not None and seen.stopped_at_run_end


def test_an_aggregator_told_to_stay_serves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _serve(tmp_path, monkeypatch, "--stay")
    assert seen.on_run_done is None and not seen.stopped_at_run_end
