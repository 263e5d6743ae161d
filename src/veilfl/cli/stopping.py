"""Ending a command on SIGINT or SIGTERM with one line: what was saved, and how to
resume. No traceback."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

from veilfl.errors import VeilflError

__all__ = ["StopSignals", "forget_handled_interrupt", "stop_message"]


class StopSignals:
    """Turns SIGINT and SIGTERM into :class:`KeyboardInterrupt` and remembers which
    arrived.

    Inside an event loop the interrupt is raised from a loop callback, never from
    inside a task: uvicorn catches both signals itself, shuts down cleanly and raises
    the signal again from its serving task; raising there would leave a task whose
    exception is never retrieved (a traceback in the log).
    """

    def __init__(self) -> None:
        self.received = "SIGINT"
        self.stopped = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Handle SIGINT and SIGTERM while the block runs (main thread only)."""

        def handle(signum: int, frame: FrameType | None) -> None:
            self.received = signal.Signals(signum).name
            self.stopped = True
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            task = None if loop is None else asyncio.current_task(loop)
            if loop is not None and task is not None:
                loop.call_soon(_interrupt, task)
                return
            raise KeyboardInterrupt

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for sig in previous:
                signal.signal(sig, handle)
        except ValueError:  # not the main thread: leave signals alone
            yield self
            return
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports it."""
        return 128 + int(signal.Signals[self.received])


def _interrupt(task: asyncio.Task[object]) -> None:
    # A task that already finished was a server that shut down on the signal itself
    # (uvicorn raises the signal again as its serving task ends): raising now would
    # break the event loop's own shutdown; main() reports the stop instead.
    if not task.done():
        raise KeyboardInterrupt


def forget_handled_interrupt() -> None:
    """Keep a handled SIGINT from killing the process at exit.

    CPython notes a KeyboardInterrupt that leaves code run through ``PyRun_*`` (C++
    extensions such as torch run Python that way) and, at exit, kills the process with
    SIGINT even though the command caught the interrupt and printed its line: the exit
    status was then -2 instead of 130, about one stop in ten during training. Running
    an empty statement through the same path clears that note.
    """
    with contextlib.suppress(AttributeError, OSError):  # not CPython: nothing to clear
        ctypes.pythonapi.PyRun_SimpleString(b"pass")


def stop_message(args: argparse.Namespace, received: str) -> str:
    """The one line a command prints when a signal stops it."""
    command = str(getattr(args, "command", "") or "")
    head = f"veilfl {command}: stopped by {received}".replace("veilfl : ", "veilfl: ")
    if command == "server":
        return f"{head}; {_server_saved(args.run_dir)}; run the same command again to resume."
    if command == "demo":
        run_dir = getattr(args, "shown_run_dir", None) or args.run_dir
        if run_dir is None:
            return f"{head}; the processes were stopped and their logs are in runs/demo-*/logs."
        return (
            f"{head}; {_server_saved(Path(run_dir))}; resume with "
            f"veilfl demo --run-dir {run_dir} (and the same options)."
        )
    if command == "client":
        key = args.identity
        if key is None:
            return (
                f"{head}; nothing was saved (no --identity: this client's key is lost and it "
                "would join again as a new client)."
            )
        return (
            f"{head}; its key is in {key}; run the same command again to rejoin the run "
            "(the coordinator keeps its enrollment)."
        )
    if command == "aggregator":
        if args.spool is None:
            return (
                f"{head}; the open round's shares were in a temporary folder and are gone "
                "(pass --spool DIR to keep them across restarts)."
            )
        return (
            f"{head}; the open round's shares are in {args.spool}; start it again with "
            f"--spool {args.spool} to take them back."
        )
    if command == "simulate":
        where = getattr(args, "shown_run_dir", None) or args.run_dir
        saved = f"the completed rounds' metrics are in {where}" if where else "nothing was saved"
        return f"{head}; {saved}; a simulation does not resume: run it again to start over."
    return f"{head}; nothing more was written."


def _server_saved(run_dir: Path) -> str:
    """What the run folder keeps, from its run state."""
    from veilfl.server.run_store import RunStore

    state = run_dir / "run.sqlite"
    if not state.exists():
        return f"no round had completed, and {run_dir} holds no run state"
    try:
        with RunStore(state) as store:
            last = store.last_completed_round()
            run_id = store.run_id()
    except VeilflError:
        return f"{run_dir} keeps the run state"
    if last is None:
        return f"no round of run {run_id} had completed (its settings are kept in {run_dir})"
    return (
        f"{run_dir} keeps run {run_id} up to round {last.round_id} "
        f"(model version {last.model_version_after})"
    )
