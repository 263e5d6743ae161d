"""``veilfl demo``: a coordinator and several client processes on loopback, training MNIST
(or, with ``--data``, each client on a file of its own: :mod:`veilfl.cli.demo_data`).

Prints a table row per round as rounds complete, and leaves ``metrics.json``,
``metrics.csv``, ``metrics.png`` and every process's log in the run folder.
"""

from __future__ import annotations

import argparse
import os
import ssl
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from veilfl.cli.common import add_device_option, add_log_option
from veilfl.cli.data_options import add_data_source_options, data_settings_from_args
from veilfl.cli.learner_option import add_learner_option, learner_for, load_learner
from veilfl.cli.local_fleet import (
    client_pin_flags,
    free_port,
    local_aggregators,
    local_trust,
    server_aggregator_flags,
)
from veilfl.cli.progress import CoordinatorProgress, RoundProgress
from veilfl.cli.run_options import add_run_options, setting_argv
from veilfl.cli.run_resume import check_resumable, stored_aggregator_urls
from veilfl.cli.security_options import TOKEN_ENV
from veilfl.errors import TransportError
from veilfl.protocol.aggregator_minimums import DEFAULT_MIN_PARTICIPANTS
from veilfl.protocol.assembly import check_run_settings, privacy_warning
from veilfl.protocol.metrics import RoundMetrics
from veilfl.reporting import format_round_row, format_round_table_header
from veilfl.secagg.commitment import default_quorum
from veilfl.tensors import spec_of
from veilfl.tls import client_ssl_context

if TYPE_CHECKING:
    from veilfl.ml.data_sources import DataSettings

__all__ = ["DEMO_SETS", "add_parser", "run"]

DEMO_SETS = (
    "rounds.clients_per_round",
    "rounds.min_clients",
    "rounds.fraction",
    "rounds.min_available_clients",
    "population",
    "secure.config.max_samples_per_client",
)
"""The run settings the demo sets itself, from ``--clients``: every other run setting
is an option of the demo, passed on to its server."""


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``veilfl demo``."""
    parser = subparsers.add_parser(
        "demo", help="coordinator + client processes on loopback, training MNIST"
    )
    parser.add_argument("--run-dir", type=Path, default=None, help="run folder")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    add_learner_option(parser)
    parser.add_argument(
        "--examples-per-client", type=int, default=None, help="cap on each client's examples"
    )
    parser.add_argument(
        "--partition",
        choices=["iid", "dirichlet", "shards"],
        default="iid",
        help="how the training set is split across clients",
    )
    parser.add_argument(
        "--test-examples",
        type=int,
        default=None,
        help="the server evaluates on this many examples (0: no server-side evaluation)",
    )
    add_device_option(parser, what=" (for the server's evaluation and every client)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after (s)")
    parser.add_argument(
        "--plaintext",
        action="store_true",
        help="plain FedAvg without secure aggregation (for comparison)",
    )
    parser.add_argument(
        "--aggregators",
        type=int,
        default=4,
        help="aggregator processes (m; with t = 2 and the default quorum 3, one may fail)",
    )
    parser.add_argument(
        "--slow-clients",
        type=int,
        default=0,
        help="how many clients act as slow devices (extra seconds per training)",
    )
    parser.add_argument("--slowdown", type=float, default=5.0, help="extra seconds when slow")
    add_run_options(parser, skip=DEMO_SETS, defaults={"buffer.buffer_size": 2})
    add_data_source_options(parser)
    for action in parser._actions:
        if action.dest == "data":
            action.help = (
                "each client's own data: one CSV table the demo splits per client, or a "
                "folder of per-client tables (default: MNIST partitions)"
            )
    add_log_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the processes, show rounds as they complete, and clean up."""
    if args.learner:
        load_learner(args.learner)  # a typo is reported here, not in every process's log
    run_dir: Path = args.run_dir or Path("runs") / f"demo-{datetime.now():%Y%m%d-%H%M%S}"
    args.shown_run_dir = run_dir  # for the line printed if a signal stops the demo
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"https://127.0.0.1:{port}"
    trust = local_trust(
        run_dir / "trust",
        aggregators=0 if args.plaintext else args.aggregators,
        clients=args.clients,
    )
    common = ["--log-level", args.log_level, "--log-format", args.log_format]
    device = ["--device", args.device]
    data = ["--num-clients", str(args.clients), "--partition", args.partition]
    learner = ["--learner", args.learner] if args.learner else []
    if args.examples_per_client is not None:
        data += ["--examples-per-client", str(args.examples_per_client)]
    settings = data_settings_from_args(args)
    reading = _reading_flags(settings)
    client_files = _client_files(args, run_dir)
    evaluated = args.test_examples != 0 and (args.data is None or args.eval_data is not None)
    server_eval = [*reading, *(["--eval-data", args.eval_data] if args.eval_data else [])]
    if not evaluated:
        server_eval = ["--test-examples", "0"]
    elif args.test_examples is not None:
        server_eval += ["--test-examples", str(args.test_examples)]
    server_cmd = [
        sys.executable,
        "-m",
        "veilfl",
        "server",
        "--run-dir",
        str(run_dir),
        "--port",
        str(port),
        *learner,
        *setting_argv(args, skip=DEMO_SETS),
        *(["--allow-no-privacy"] if args.allow_no_privacy else []),
        "--clients-per-round",
        str(args.clients),
        "--min-clients",  # under secure aggregation, at least the aggregators' minimum
        str(max(1 if args.plaintext else DEFAULT_MIN_PARTICIPANTS, args.clients - 1)),
        *server_eval,
        *device,
        *trust.coordinator_flags(),
        *common,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    aggregator_cmds: list[list[str]] = []
    pins: list[str] = []
    if not args.plaintext:
        # The operator of every aggregator here is the demo's user: its consent to a
        # splittable quorum is theirs to give, once.
        split = ["--allow-split-certificates"] if args.allow_split_certificates else []
        fleet = local_aggregators(
            run_dir / "keys",
            count=args.aggregators,
            coordinator_url=url,
            trust=trust,
            spool_dir=run_dir / "spool",
            extra=[*common, *split],
            ports=_resumed_ports(run_dir, args.aggregators),
        )
        pins = client_pin_flags(fleet)
        aggregator_cmds = [a.command for a in fleet]
        server_cmd += server_aggregator_flags(fleet)
        server_cmd += [
            "--max-samples-per-client",
            str(
                -(-50_000 // args.clients)
                if client_files is None
                else max(_rows(path, settings) for path in client_files)
            ),
        ]
    mode = (
        "plaintext FedAvg"
        if args.plaintext
        else f"secure aggregation ({args.threshold} of {args.aggregators} aggregators, "
        f"{_quorum(args)} certify each round)"
    )
    warning = _check_server_settings(server_cmd[3:])
    print(
        f"veilfl demo: {args.clients} clients, {args.rounds} rounds, "
        f"model {args.learner or args.model}, {mode}"
    )
    if warning is not None:
        print(f"warning: {warning}", flush=True)
    print(f"run folder: {run_dir}   coordinator: {url}")
    print(f"live dashboard: {url}/dashboard   (its certificate is from {trust.ca_file})")
    print(
        "TLS from a local CA; each client enrolls its Ed25519 key with a one-time token "
        "and signs every request"
    )
    processes: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(name: str, cmd: list[str], extra_env: dict[str, str] | None = None) -> None:
        log = (logs / f"{name}.log").open("wb")
        try:
            process = subprocess.Popen(
                cmd, stdout=log, stderr=log, env={**env, **(extra_env or {})}
            )
        except BaseException:
            log.close()
            raise
        processes.append((name, process, log))

    started = time.monotonic()
    try:
        start("server", server_cmd)
        for index, cmd in enumerate(aggregator_cmds, start=1):
            start(f"aggregator-{index}", cmd)
        # Secure: each client pins the aggregators; plaintext: each opts in explicitly.
        verify = pins
        if args.plaintext:
            verify = ["--allow-plaintext"]
        for index in range(args.clients):
            start(
                f"client-{index}",
                [
                    sys.executable,
                    "-m",
                    "veilfl",
                    "client",
                    "--server",
                    url,
                    *(
                        ["--client-index", str(index), *data]
                        if client_files is None
                        else ["--data", str(client_files[index])]
                    ),
                    *reading,
                    *(
                        []
                        if args.eval_fraction is None
                        else ["--eval-fraction", str(args.eval_fraction)]
                    ),
                    "--model",
                    args.model,
                    *learner,
                    *device,
                    *verify,
                    "--ca-cert",
                    str(trust.ca_file),
                    "--identity",
                    str(run_dir / "identities" / f"client-{index}.key"),
                    *(
                        ["--slowdown", str(args.slowdown)]
                        if index >= args.clients - args.slow_clients
                        else []
                    ),
                    *common,
                ],
                {TOKEN_ENV: trust.tokens[index]},
            )
        print(format_round_table_header(), flush=True)
        shown = _follow(
            url, client_ssl_context(trust.ca_file), args, processes, started, evaluated=evaluated
        )
        failed = _wait_all(processes, logs)
    finally:  # also on SIGINT or SIGTERM, before `veilfl` says what was saved
        for _, process, log in processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
            log.close()
    if failed or not shown:
        return 1
    last = shown[-1]
    accuracy = "-" if last.test_accuracy is None else f"{100 * last.test_accuracy:.2f}%"
    print(
        f"\nfinished {len(shown)} rounds in {time.monotonic() - started:.0f} s; "
        f"final test accuracy {accuracy}"
    )
    for name in ("metrics.json", "metrics.csv", "metrics.png"):
        print(f"  {run_dir / name}")
    return 0


def _reading_flags(settings: DataSettings) -> list[str]:
    """The options that read data as ``settings`` does, for the processes the demo starts."""
    flags = ["--image-size", str(settings.image_size), "--image-mode", settings.image_mode]
    if settings.label_column is not None:
        flags += ["--label-column", settings.label_column]
    return flags


def _client_files(args: argparse.Namespace, run_dir: Path) -> list[Path] | None:
    """Each client's own data file (``--data``), checked against the model; None for
    MNIST partitions."""
    if args.data is None:
        return None
    from veilfl.cli.demo_data import demo_client_files
    from veilfl.ml.data_check import check_model_takes
    from veilfl.ml.data_sources import data_source

    settings = data_settings_from_args(args)
    files = demo_client_files(
        args.data,
        clients=args.clients,
        run_dir=run_dir,
        settings=settings,
        scheme=args.partition,
    )
    learner = learner_for(args.learner or args.model)
    first = data_source(str(files[0]), settings).load()
    check_model_takes(
        learner.model_fn,
        first,
        data_name=f"--data {files[0]}",
        model_name=args.learner or args.model,
    )
    return files


def _rows(path: Path, settings: DataSettings) -> int:
    from veilfl.ml.data_sources import data_source

    return len(data_source(str(path), settings).load())


def _quorum(args: argparse.Namespace) -> int:
    """The quorum the demo's server will use (``--quorum``, or the default)."""
    if args.quorum is not None:
        return int(args.quorum)
    return default_quorum(num_aggregators=args.aggregators, threshold=args.threshold)


_EVALUATION_WAIT_S = 60.0
"""How long the demo waits for a completed round's evaluation before showing it."""

_AGGREGATOR_EXIT_S = 20.0
"""How long the demo waits for an aggregator to exit by itself after the run."""


def _resumed_ports(run_dir: Path, count: int) -> list[int] | None:
    """The aggregators' ports of the run the folder holds (a resumed demo starts its
    aggregators where the run expects them); None for a new folder, or when the count
    differs (the resume check then names the count)."""
    ports = [urlsplit(url).port for url in stored_aggregator_urls(run_dir)]
    if len(ports) != count or None in ports:
        return None
    return [port for port in ports if port is not None]


def _check_server_settings(server_args: list[str]) -> str | None:
    """The start-up checks of the server the demo is about to start, on the very
    settings it will build from ``server_args``: refuse contradictory DP settings, or
    a run folder that holds a run with other settings, here, in one line, rather than
    in the server's log; return the noise warning, if any."""
    from veilfl.cli.main import build_parser  # main lists this command: import late
    from veilfl.cli.server_cmd import settings_from_args

    parsed = build_parser().parse_args(server_args)
    settings = settings_from_args(parsed)
    check_run_settings(settings)
    check_resumable(parsed.run_dir, settings.to_json())
    if settings.dp is None:
        return None
    learner = learner_for(settings.model_name, seed=settings.seed)
    size = spec_of(learner.initial_weights(seed=settings.seed)).total_size
    return privacy_warning(settings, model_size=size)


def _follow(
    url: str,
    verify: ssl.SSLContext,
    args: argparse.Namespace,
    processes: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]],
    started: float,
    *,
    evaluated: bool = True,
) -> list[RoundMetrics]:
    """Print each round once the coordinator has completed and evaluated it (the
    evaluation runs off the request path, so a round's row waits for its accuracy;
    without server-side evaluation it is shown at once), until the run is done."""
    evaluation_wait_s = _EVALUATION_WAIT_S if evaluated else 0.0
    shown: list[RoundMetrics] = []
    server = processes[0][1]
    watcher = CoordinatorProgress(RoundProgress(unit="updates received"))
    seen_at: dict[int, float] = {}  # when each pending round first appeared
    with httpx.Client(base_url=url, timeout=10.0, verify=verify) as http, watcher:
        while time.monotonic() - started < args.timeout:
            if server.poll() is not None:
                break
            try:
                # Status first: once it says done, the metrics already hold every round.
                status = http.get("/v1/status").json()
                rows = [RoundMetrics(**row) for row in http.get("/v1/metrics").json()]
            except (httpx.HTTPError, ValueError, TypeError):
                time.sleep(0.5)
                continue
            finished = bool(status.get("done"))
            now = time.monotonic()
            fresh = rows[len(shown) :]
            for metrics in fresh:
                seen_at.setdefault(metrics.round_id, now)
            # A round's evaluation may lag its completion: wait for it a while (a run
            # without evaluation shows its rows after that wait).
            ready = 0
            while ready < len(fresh) and (
                fresh[ready].test_accuracy is not None
                or now - seen_at[fresh[ready].round_id] >= evaluation_wait_s
            ):
                ready += 1
            if ready:
                watcher.round_done()
            for metrics in fresh[:ready]:
                shown.append(metrics)
                print(format_round_row(metrics), flush=True)
            if finished and len(shown) == len(rows):
                break
            if not finished:
                watcher.update(status)
            time.sleep(0.5)
        else:
            raise TransportError(f"The demo did not finish within {args.timeout:.0f} s.")
    return shown


def _wait_all(processes: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]], logs: Path) -> bool:
    """Wait for every process; print the log tail of any that failed. Aggregators exit
    by themselves once the coordinator reports the run done; one that missed it (the
    coordinator serves only a few seconds more) is stopped by the caller, as before."""
    failed = False
    for name, process, _ in processes:
        aggregator = name.startswith("aggregator")
        if aggregator and failed:
            continue  # the coordinator failed: no run to end; the caller stops them
        try:
            code = process.wait(timeout=_AGGREGATOR_EXIT_S if aggregator else 60)
        except subprocess.TimeoutExpired:
            if aggregator:
                continue
            process.kill()
            code = -9
        if code != 0:
            failed = True
            tail = (logs / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
            print(f"\n{name} exited with code {code}; last lines of its log:", file=sys.stderr)
            print("\n".join(tail), file=sys.stderr)
    return failed
