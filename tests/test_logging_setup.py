"""One log format for veilfl and uvicorn; library debug lines only when asked for."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from veilfl.logging_setup import configure_logging, uvicorn_log_options
from veilfl.protocol.metrics import RoundMetrics
from veilfl.reporting import format_round_fields, round_fields


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    names = ("veilfl", "uvicorn", "uvicorn.error", "uvicorn.access", "matplotlib", "httpx")
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def emit_all() -> None:
    logging.getLogger("veilfl.test").debug("own debug line")
    logging.getLogger("veilfl.test").info("own info line")
    logging.getLogger("matplotlib.font_manager").debug("findfont: score 10.05")
    logging.getLogger("asyncio").debug("Using selector: EpollSelector")
    logging.getLogger("httpx").info('HTTP Request: GET http://x "HTTP/1.1 200 OK"')


def test_debug_shows_own_debug_lines_but_not_libraries(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("debug")
    emit_all()
    err = capsys.readouterr().err
    assert "own debug line" in err and "own info line" in err
    assert "findfont" not in err and "EpollSelector" not in err and "HTTP Request" not in err


def test_debug_all_shows_library_debug_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("debug-all")
    emit_all()
    err = capsys.readouterr().err
    assert "findfont" in err and "EpollSelector" in err and "own debug line" in err


def test_info_hides_debug(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", role="client 3")
    emit_all()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("INFO    [client 3] veilfl.test: own info line")


def test_json_lines_carry_fields_role_and_uvicorn_access_parts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("debug", fmt="json", role="server")
    metrics = RoundMetrics(
        round_id=2, num_clients=3, train_loss=0.5, test_loss=None, test_accuracy=0.9, seconds=1.0
    )
    logging.getLogger("veilfl.server").info(
        "round complete: %s", format_round_fields(metrics), extra={"fields": round_fields(metrics)}
    )
    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/v1/run", "1.1", 200
    )
    logging.getLogger("uvicorn.error").info("Application startup complete.")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("veilfl.server").exception("failed")
    entries = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [e["logger"] for e in entries] == [
        "veilfl.server",
        "uvicorn.access",
        "uvicorn.error",
        "veilfl.server",
    ]
    assert all(e["role"] == "server" for e in entries)
    assert entries[0]["round"] == 2 and entries[0]["test_accuracy"] == 0.9
    assert entries[0]["test_loss"] is None
    assert entries[1]["method"] == "GET" and entries[1]["status"] == 200
    assert entries[1]["message"] == '127.0.0.1:5000 - "GET /v1/run HTTP/1.1" 200'
    assert "ValueError: boom" in entries[3]["exception"]


def test_round_fields_line_is_key_value() -> None:
    metrics = RoundMetrics(
        round_id=1,
        num_clients=2,
        train_loss=0.48789,
        test_loss=None,
        test_accuracy=0.93125,
        seconds=3.21,
        federated_loss=0.51234,
        federated_accuracy=0.875,
        federated_examples=480.0,
    )
    line = format_round_fields(metrics)
    pairs = dict(part.split("=") for part in line.split(" "))
    assert pairs == {
        "round": "1",
        "clients": "2",
        "train_loss": "0.4879",
        "test_loss": "-",
        "test_accuracy": "0.9313",
        "federated_loss": "0.5123",
        "federated_accuracy": "0.8750",
        "federated_examples": "480",
        "epsilon": "-",
        "epsilon_coordinator": "-",
        "accounting": "-",
        "delta": "-",
        "seconds": "3.2",
    }


def test_round_fields_name_both_observers_and_the_accounting() -> None:
    metrics = RoundMetrics(
        round_id=1,
        num_clients=2,
        train_loss=None,
        test_loss=None,
        test_accuracy=None,
        seconds=1.0,
        epsilon=1.23456,
        accounting="rdp",
        delta=1e-5,
    )
    pairs = dict(part.split("=") for part in format_round_fields(metrics).split(" "))
    assert (pairs["epsilon"], pairs["epsilon_coordinator"]) == ("1.235", "none")
    assert (pairs["accounting"], pairs["delta"]) == ("rdp", "1e-05")
    assert round_fields(metrics)["epsilon_coordinator"] is None


def test_uvicorn_leaves_logging_to_us_and_logs_access_only_at_debug() -> None:
    assert uvicorn_log_options("info") == {
        "log_config": None,
        "log_level": None,
        "access_log": False,
    }
    assert uvicorn_log_options("debug")["access_log"] is True
