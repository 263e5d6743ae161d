"""How every veilfl process logs: one format (text or JSON lines) for veilfl's own
loggers and uvicorn's, on stderr, with third-party debug chatter kept out.

* ``text``: ``12:00:01 INFO    [client 0] veilfl.client: joined as c-1 (plaintext FedAvg)``.
* ``json``: one object per line with ``time`` (ISO 8601, UTC), ``level``, ``logger``,
  ``message``, ``role`` (when the process has one), any structured ``fields`` a log
  call passed (``extra={"fields": {...}}``), uvicorn's access-log parts (``client``,
  ``method``, ``path``, ``status``) and ``exception`` for a traceback.

``debug`` turns on veilfl's own debug lines only; ``debug-all`` also lets through the
debug lines of libraries (matplotlib's font search, PIL, asyncio, httpx ...).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "JsonFormatter",
    "configure_logging",
    "uvicorn_log_options",
]

LOG_FORMATS = ("text", "json")
"""The values of ``--log-format``."""

LOG_LEVELS = ("debug-all", "debug", "info", "warning", "error")
"""The values of ``--log-level``."""

_QUIET_AT_INFO = ("httpx", "httpcore", "torch")
"""Libraries that log routine chatter at INFO (every HTTP request; torch's cache
statistics at exit): shown at ``debug-all`` only."""

_TEXT_FORMAT = "%(asctime)s %(levelname)-7s {prefix}%(name)s: %(message)s"
_ACCESS_PARTS = ("client", "method", "path", "http_version", "status")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line.

    Args:
        role: Who is logging (``"client 0"``, ``"aggregator 2"``), added as ``role``.
    """

    def __init__(self, role: str = "") -> None:
        super().__init__()
        self._role = role

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line (never raises on odd arguments)."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._role:
            entry["role"] = self._role
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({str(k): v for k, v in fields.items()})
        if (
            record.name == "uvicorn.access"
            and isinstance(record.args, tuple)
            and len(record.args) == len(_ACCESS_PARTS)
        ):
            entry.update(dict(zip(_ACCESS_PARTS, record.args, strict=True)))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time, so a live progress bar that
    redirects stderr keeps log lines above itself."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: str, *, fmt: str = "text", role: str = "") -> None:
    """Log to stderr at ``level`` in ``fmt``; replaces any earlier configuration.

    Args:
        level: One of :data:`LOG_LEVELS`. ``debug`` is veilfl's own debug lines with
            libraries at INFO; ``debug-all`` is everything.
        fmt: ``text`` or ``json``.
        role: Who is logging, shown in every line (``"client 0"``).
    """
    everything = level == "debug-all"
    own_level = logging.DEBUG if everything else getattr(logging, level.upper())
    handler = _StderrHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter(role))
    else:
        prefix = f"[{role}] " if role else ""
        handler.setFormatter(
            logging.Formatter(_TEXT_FORMAT.format(prefix=prefix), datefmt="%H:%M:%S")
        )
    root = logging.getLogger()
    for old in list(root.handlers):  # libraries (absl, via dp-accounting) may have added one
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(own_level if everything else max(own_level, logging.INFO))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # undo uvicorn's own setup
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
        logger.disabled = False
    for name in ("veilfl", "uvicorn", "uvicorn.error"):
        logging.getLogger(name).setLevel(own_level)
    logging.getLogger("uvicorn.access").setLevel(
        logging.INFO if own_level <= logging.DEBUG else logging.WARNING
    )
    for name in _QUIET_AT_INFO:
        logging.getLogger(name).setLevel(logging.DEBUG if everything else logging.WARNING)


def uvicorn_log_options(level: str) -> dict[str, Any]:
    """Options for ``uvicorn.Config`` that keep uvicorn's own logging setup out of the
    way, so its error and access lines go through :func:`configure_logging`'s handler
    (access lines are shown at ``debug`` and below)."""
    own_level = logging.DEBUG if level == "debug-all" else getattr(logging, level.upper())
    return {"log_config": None, "log_level": None, "access_log": own_level <= logging.DEBUG}
