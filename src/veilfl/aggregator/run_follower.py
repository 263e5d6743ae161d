"""An aggregator follows its coordinator from one run to the next.

A coordinator restarted on a new ``--run-dir`` starts a new run (a new id and, when
its key file is new, a new coordinator key). An aggregator left running would go on
checking admissions against the old run and refuse every share with 401. The
follower asks the coordinator for its public run description every few seconds, and
at once (at most once a second) when a share's admission does not verify; when the
run has changed it attaches to the new one (the aggregator's spool is cleared of the
old run's shares). A new run that does not use this aggregator is reported once and
not attached: its clients are refused, and stop with a message saying why.

Following ``until_done``, the follower also asks the coordinator's ``/v1/status``
and stops once the coordinator reports the run it serves done (``veilfl aggregator``
then exits, unless ``--stay``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable

import httpx

from veilfl.errors import VeilflError, WireFormatError
from veilfl.protocol.messages import RunInfo
from veilfl.protocol.run_description import RunDescription

__all__ = ["RunFollower"]

logger = logging.getLogger(__name__)


class RunFollower:
    """Keeps an aggregator attached to its coordinator's current run.

    Args:
        coordinator_url: The coordinator's base URL.
        attach: Attaches the aggregator to a run description; raises
            :class:`~veilfl.errors.VeilflError` if it cannot serve that run.
        run_id: The run the aggregator serves now.
        verify: How to verify the coordinator's TLS certificate.
        interval_s: Seconds between checks while following.
        transport: An httpx transport (tests).
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        coordinator_url: str,
        *,
        attach: Callable[[RunInfo], None],
        run_id: str,
        verify: ssl.SSLContext | bool = True,
        interval_s: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = coordinator_url
        self._attach = attach
        self.run_id = run_id
        self._verify = verify
        self._interval_s = interval_s
        self._transport = transport
        self._clock = clock
        self._refused: str | None = None
        self._last_check = -float("inf")
        self._lock = asyncio.Lock()

    async def check(self) -> bool:
        """Ask the coordinator for its run once; attach to it if it is new.

        Returns:
            Whether the aggregator now serves a different run than before.
        """
        async with self._lock:
            self._last_check = self._clock()
            try:
                async with httpx.AsyncClient(
                    base_url=self._url, timeout=10.0, verify=self._verify, transport=self._transport
                ) as http:
                    response = await http.get("/v1/run")
                if response.status_code != 200:
                    return False
                run = RunDescription.from_json(response.json()).info
                run_id = run.run_id
            except (httpx.HTTPError, ValueError, WireFormatError) as exc:
                logger.debug("the coordinator did not describe its run: %s", exc)
                return False
            if run_id in (self.run_id, self._refused):
                return False
            try:
                self._attach(run)
            except VeilflError as exc:
                self._refused = run_id
                logger.error(
                    "the coordinator now serves run %s, which this aggregator cannot serve "
                    "(%s); its clients' shares are refused",
                    run_id,
                    exc,
                )
                return False
            logger.info(
                "the coordinator started run %s; following it (was %s)",
                run_id,
                self.run_id or "none",
            )
            self.run_id = run_id
            return True

    async def check_soon(self) -> bool:
        """:meth:`check`, unless one ran less than a second ago (then False)."""
        if self._clock() - self._last_check < 1.0:
            return False
        return await self.check()

    async def run_done(self) -> bool:
        """Whether the coordinator reports the run this aggregator serves done (False
        when it cannot be asked)."""
        try:
            async with httpx.AsyncClient(
                base_url=self._url, timeout=10.0, verify=self._verify, transport=self._transport
            ) as http:
                response = await http.get("/v1/status")
            status = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError) as exc:
            logger.debug("the coordinator did not report its status: %s", exc)
            return False
        return (
            isinstance(status, dict)
            and status.get("done") is True
            and status.get("run_id", self.run_id) == self.run_id
        )

    async def follow(self, *, until_done: bool = False) -> None:
        """Check every ``interval_s`` seconds (every half second, at once, while no run
        is attached yet), until cancelled or, ``until_done``, until the coordinator
        reports the run done."""
        while True:
            if self.run_id:
                await asyncio.sleep(self._interval_s)
            if not await self.check() and not self.run_id:
                await asyncio.sleep(min(0.5, self._interval_s))
                continue
            if until_done and self.run_id and await self.run_done():
                logger.info("the coordinator reports run %s done", self.run_id)
                return
