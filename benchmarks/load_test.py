"""Load test: one coordinator and 3 aggregators on loopback, N concurrent HTTP clients.

Starts the coordinator (FedBuff, secure aggregation 2-of-3 with verified bounds) and
the aggregators as processes, all over TLS from a local CA, then runs N concurrent
clients in this process. Each client enrolls an Ed25519 key with a one-time token (and
signs every request after), asks for a task, downloads the model, "trains" (sleeps a
random 0.5-2 s: this tests the servers, not torch), gets a ticket (the coordinator keeps
the request waiting while all K places of the open buffer are held), and hands its update
in through the client's own pipeline (``veilfl.protocol.hand_in``: clip, encode, prove
the bounds, share, seal, in a worker thread), uploading the shares to the aggregators
and the receipt to the coordinator. Requests are bounded in number and time, and only
loopback addresses are used.

It prints accepted updates per second at the coordinator, p50/p99 upload latency (the
share uploads plus the receipt), how many clients gave up and why, CPU-seconds per
accepted update of each process (the coordinator, each aggregator, and this process's
clients) while the clients ran, and each server's peak memory, and checks that every
update the clients saw accepted was counted exactly once.

Run: PYTHONPATH=src .venv/bin/python benchmarks/load_test.py --clients 100 1000
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # this process's numpy: one BLAS thread

import argparse
import asyncio
import json
import random
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from veilfl.auth.admission import ADMISSION_HEADER
from veilfl.auth.identity import Identity
from veilfl.auth.signed_request import aggregator_audience, coordinator_audience
from veilfl.cli.local_fleet import (
    free_port,
    local_aggregators,
    local_trust,
    server_aggregator_flags,
)
from veilfl.crypto.csprng import CsprngStream
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.hand_in import (
    CoordinatorAnswer,
    HandInAnswer,
    HandInContext,
    HandInFlow,
    HandInRequest,
    HandInResult,
    SendReceipt,
    SendShares,
    SharesTaken,
    hand_in,
)
from veilfl.protocol.messages import RunInfo
from veilfl.protocol.run_description import RunDescription
from veilfl.tls import client_ssl_context
from veilfl.transport.signing import SigningAuth, for_round
from veilfl.wire.tensor_codec import decode_weights

BUFFER = 50
TICKET_ATTEMPTS = 60  # ticket requests wait up to 20 s each for a place
TASK_ATTEMPTS = 120  # "wait" tasks (a full buffer being applied) say to ask again shortly
_TICK = os.sysconf("SC_CLK_TCK")
PROVERS = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="prover")


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


async def _wait_serving(
    url: str, verify: ssl.SSLContext, timeout_s: float = 60, *, path: str = "/v1/status"
) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(verify=verify) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"{url}{path}", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not start")


RETRIES = {"count": 0}
#: Seconds each kind of hand-in request took: the share uploads (all m) and the receipt.
PHASES: dict[str, list[float]] = {"shares": [], "receipt": []}
PLACE_WAITS = {"count": 0}


async def _request(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Like a real client: retry a request whose connection broke (bounded)."""
    for attempt in range(6):
        try:
            return await http.request(method, url, **kwargs)
        except httpx.TransportError:
            RETRIES["count"] += 1
            await asyncio.sleep(0.1 * 2**attempt)
    return await http.request(method, url, **kwargs)


def _advance(flow: HandInFlow, answer: HandInAnswer | None) -> HandInRequest | HandInResult:
    """The flow's next request, or its result (StopIteration cannot leave a thread)."""
    try:
        return next(flow) if answer is None else flow.send(answer)
    except StopIteration as stop:
        result: HandInResult = stop.value
        return result


class _Client:
    """One load-test client: its key, its signing auths and what happened to it."""

    def __init__(self, index: int, url: str, run: RunInfo, verify: ssl.SSLContext) -> None:
        assert run.secure is not None
        self.index = index
        self.url = url
        self.run = run
        # The load test starts its own aggregators: accept the run they serve (a real
        # client pins their fingerprints and checks their signed minimums).
        self.policy = ClientPolicy.accepting(run, min_cohort=1)
        # Its own connections, as a real client has (one shared pool of N connections
        # would cost the load generator O(N) per request).
        self.http = httpx.AsyncClient(verify=verify, timeout=120)
        identity = Identity.generate()
        self.identity = identity
        self.auth = SigningAuth(identity, coordinator_audience(run.run_id))
        self.to_aggregator = {
            a.index: SigningAuth(identity, aggregator_audience(a.index, run.run_id))
            for a in run.secure.aggregators
        }
        self.urls = {a.index: a.url for a in run.secure.aggregators}
        self.outcome = "did not finish"

    async def perform(self, request: HandInRequest) -> HandInAnswer:
        """Send one of the hand-in pipeline's requests over HTTP."""
        began = time.perf_counter()
        if isinstance(request, SendShares):
            answers = await asyncio.gather(
                *(
                    _request(
                        self.http,
                        "POST",
                        f"{self.urls[s.aggregator_index]}/v1/rounds/{request.round_id}/shares",
                        content=s.envelope,
                        headers={
                            ADMISSION_HEADER: request.admission,
                            "Content-Type": "application/octet-stream",
                        },
                        auth=self.to_aggregator[s.aggregator_index],
                        extensions=for_round(request.round_id),
                    )
                    for s in request.shares
                )
            )
            PHASES["shares"].append(time.perf_counter() - began)
            return SharesTaken(
                tuple(
                    s.aggregator_index
                    for s, a in zip(request.shares, answers, strict=True)
                    if a.status_code == 202
                )
            )
        assert isinstance(request, SendReceipt)
        header = request.header
        receipt = await _request(
            self.http,
            "POST",
            f"{self.url}/v1/rounds/{header.round_id}/receipts",
            json={
                "client_id": header.client_id,
                "base_version": header.base_version,
                "aggregators": list(header.aggregators),
            },
            auth=self.auth,
            extensions=for_round(header.round_id),
        )
        PHASES["receipt"].append(time.perf_counter() - began)
        if receipt.status_code == 202:
            return CoordinatorAnswer(accepted=True, duplicate=bool(receipt.json()["duplicate"]))
        return CoordinatorAnswer(accepted=False, refusal=f"HTTP {receipt.status_code}")

    async def run_once(self, token: str, latencies: list[float], accepted: list[str]) -> None:
        """Enroll, train once (a sleep), and hand the update in; note what happened."""
        try:
            await self._run_once(token, latencies, accepted)
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            self.outcome = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
        except asyncio.CancelledError:
            self.outcome = "did not finish in the time limit"
            raise
        finally:
            await self.http.aclose()

    def _expect(self, response: httpx.Response, status: int, what: str) -> None:
        if response.status_code != status:
            raise ValueError(f"{what}: HTTP {response.status_code} {response.text[:80]}")

    async def _run_once(self, token: str, latencies: list[float], accepted: list[str]) -> None:
        joined = await _request(
            self.http,
            "POST",
            f"{self.url}/v1/clients",
            json={
                "name": f"load-{self.index}",
                "public_key": self.identity.public_key_text,
                "enrollment_token": token,
            },
            auth=self.auth,
        )
        self._expect(joined, 201, "enroll")
        client_id = joined.json()["client_id"]
        for _ in range(TASK_ATTEMPTS):  # like a real client: a "wait" task means ask again
            task = await _request(
                self.http, "GET", f"{self.url}/v1/clients/{client_id}/task", auth=self.auth
            )
            self._expect(task, 200, "task")
            if task.json()["kind"] != "wait":
                break
            await asyncio.sleep(float(task.json()["retry_after_s"]))
        if task.json()["kind"] != "train":
            self.outcome = f"task was {task.json()['kind']!r}"
            return
        model = await _request(self.http, "GET", f"{self.url}/v1/model", auth=self.auth)
        self._expect(model, 200, "model")
        version = int(model.headers["X-Model-Version"])
        weights, _ = decode_weights(model.content)
        delta = {name: np.full(w.shape, 1e-4, dtype=np.float32) for name, w in weights.items()}
        await asyncio.sleep(random.uniform(0.5, 2.0))  # "training"
        for _ in range(TICKET_ATTEMPTS):
            response = await _request(
                self.http,
                "POST",
                f"{self.url}/v1/tickets",
                json={"client_id": client_id, "trained_version": version},
                auth=self.auth,
            )
            if response.status_code == 409 and "BufferFullError" in response.text:
                # The coordinator kept the request waiting for a place; ask again.
                self.outcome = "no place in a buffer before the time limit"
                PLACE_WAITS["count"] += 1
                await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            if response.status_code != 200:
                self.outcome = f"ticket refused (HTTP {response.status_code}: too stale, or over)"
                return
            ticket = response.json()
            context = HandInContext(
                client_id=client_id,
                run=self.run,
                round_id=int(ticket["buffer_id"]),
                base_version=version,
                weight=float(ticket["weight"]),
                admission=ticket["admission"],
            )
            flow = hand_in(
                delta,
                num_samples=100,
                loss=1.0,
                context=context,
                rng=CsprngStream(),
                policy=self.policy,
            )
            # clip, encode, prove, seal: one worker per core, as on the clients' own devices
            # each proves on its own; more threads only fight over this process's GIL.
            step = await asyncio.get_running_loop().run_in_executor(PROVERS, _advance, flow, None)
            began = time.perf_counter()
            while not isinstance(step, HandInResult):
                step = _advance(flow, await self.perform(step))
            latencies.append(time.perf_counter() - began)
            if step.taken:
                self.outcome = "accepted"
                if not step.duplicate:
                    accepted.append(client_id)
                return
            self.outcome = f"not taken: {step.reason}"
            if step.reason is None or "HTTP 409" not in step.reason:
                return


def _start_profilers(pids: dict[str, int], folder: Path | None) -> list[subprocess.Popen[bytes]]:
    """py-spy on each process while the clients run (collapsed stacks, all threads)."""
    if folder is None:
        return []
    spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy on PATH (or PY_SPY=/path/to/py-spy).")
    folder.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--rate",
                "25",
                "--nonblocking",
                "--threads",
                "--idle",
                "--format",
                "raw",
                "--output",
                str(folder / f"{name}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]


def _stop_profilers(profilers: list[subprocess.Popen[bytes]]) -> None:
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
    for profiler in profilers:
        try:
            profiler.wait(timeout=60)
        except subprocess.TimeoutExpired:
            profiler.kill()


def _server_env(blas_threads: int | None) -> dict[str, str]:
    """The servers' environment: this one, with OPENBLAS_NUM_THREADS left to the servers
    (``veilfl`` sets 1 itself) unless given."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if blas_threads is not None:
        env["OPENBLAS_NUM_THREADS"] = str(blas_threads)
    return env


async def _run(
    clients: int,
    workdir: Path,
    *,
    profile: Path | None = None,
    server_blas_threads: int | None = None,
    time_limit_s: float = 600,
) -> dict[str, Any]:
    coordinator_port = free_port()
    url = f"https://127.0.0.1:{coordinator_port}"
    processes: list[subprocess.Popen[bytes]] = []
    trust = local_trust(workdir / f"trust-{clients}", aggregators=3, clients=clients)
    verify = client_ssl_context(trust.ca_file)
    fleet = local_aggregators(
        workdir / "keys",
        count=3,
        coordinator_url=url,
        trust=trust,
        extra=["--log-level", "warning"],
    )
    flags = server_aggregator_flags(fleet)
    aggregator_cmds = [a.command for a in fleet]
    versions = max(1, clients // BUFFER)
    server = [
        sys.executable,
        "-m",
        "veilfl",
        "server",
        "--run-dir",
        str(workdir / f"run-{clients}"),
        "--port",
        str(coordinator_port),
        "--mode",
        "fedbuff",
        "--buffer-size",
        str(BUFFER),
        "--max-staleness",
        "100",
        "--rounds",
        str(versions),
        "--min-clients",
        "2",
        "--threshold",
        "2",
        "--test-examples",
        "100",
        "--log-level",
        "warning",
        "--linger",
        "30",
        *flags,
        *trust.coordinator_flags(),
    ]
    server_env = _server_env(server_blas_threads)
    log = (workdir / f"servers-{clients}.log").open("wb")
    names = ["coordinator", "aggregator-1", "aggregator-2", "aggregator-3"]
    try:
        processes.append(subprocess.Popen(server, stdout=log, stderr=log, env=server_env))
        for cmd in aggregator_cmds:  # the coordinator reads their policies before it serves
            processes.append(subprocess.Popen(cmd, stdout=log, stderr=log, env=server_env))
        await _wait_serving(url, verify, path="/v1/run")  # the run exists (not "starting")
        async with httpx.AsyncClient(verify=verify) as http:
            run = RunDescription.from_json((await http.get(f"{url}/v1/run")).json()).info
        assert run.secure is not None
        for aggregator in run.secure.aggregators:
            await _wait_serving(aggregator.url, verify)
        latencies: list[float] = []
        accepted: list[str] = []
        cpu_before = {name: _cpu_seconds(p.pid) for name, p in zip(names, processes, strict=True)}
        pids = {name: p.pid for name, p in zip(names, processes, strict=True)}
        profilers = _start_profilers({**pids, "clients": os.getpid()}, profile)
        own_before = time.process_time()
        started = time.perf_counter()
        async with httpx.AsyncClient(timeout=120, verify=verify) as http:
            players = [_Client(i, url, run, verify) for i in range(clients)]
            finished = True
            try:
                await asyncio.wait_for(
                    asyncio.gather(
                        *(
                            player.run_once(trust.tokens[i], latencies, accepted)
                            for i, player in enumerate(players)
                        )
                    ),
                    timeout=time_limit_s,
                )
            except TimeoutError:
                finished = False
            elapsed = time.perf_counter() - started
            _stop_profilers(profilers)
            own_cpu = time.process_time() - own_before
            cpu = {
                name: _cpu_seconds(p.pid) - cpu_before[name]
                for name, p in zip(names, processes, strict=True)
            }
            status = (await http.get(f"{url}/v1/status")).json()
            metrics = (await http.get(f"{url}/v1/metrics")).json()
        counted = sum(m["num_clients"] for m in metrics) + int(status.get("pending", 0))
        outcomes = Counter(player.outcome for player in players)
        per_update = max(len(accepted), 1)
        return {
            "clients": clients,
            "server_blas_threads": server_blas_threads,
            "finished": finished,
            "accepted_by_clients": len(accepted),
            "counted_by_coordinator": counted,
            "distinct": len(set(accepted)),
            "gave_up": clients - outcomes.get("accepted", 0),
            "outcomes": dict(outcomes),
            "versions": status["model_version"],
            "updates_per_second": len(accepted) / elapsed,
            "p50_upload_s": float(np.percentile(latencies, 50)) if latencies else None,
            "p99_upload_s": float(np.percentile(latencies, 99)) if latencies else None,
            "p99_phase_s": {
                phase: float(np.percentile(seconds, 99)) if seconds else None
                for phase, seconds in PHASES.items()
            },
            "cpu_seconds": {**cpu, "clients": own_cpu},
            "cpu_seconds_per_update": {
                **{name: value / per_update for name, value in cpu.items()},
                "clients": own_cpu / per_update,
            },
            "server_cpu_seconds_per_update": sum(cpu.values()) / per_update,
            "place_waits": PLACE_WAITS["count"],
            "peak_rss_mib": {
                name: _peak_rss_mib(p.pid) for name, p in zip(names, processes, strict=True)
            },
            "seconds": elapsed,
            "transport_retries": RETRIES["count"],
            "load_average": os.getloadavg(),
        }
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--time-limit", type=float, default=600, help="stop the clients after this (s)"
    )
    parser.add_argument(
        "--server-blas-threads",
        type=int,
        default=None,
        help="OPENBLAS_NUM_THREADS for the servers (default: their own choice)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="record each process with py-spy while the clients run (collapsed stacks here)",
    )
    parser.add_argument(
        "--keep-logs", type=Path, default=None, help="copy the servers' logs to this folder"
    )
    args = parser.parse_args()
    rows = []
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for clients in args.clients:
            RETRIES["count"] = 0
            PLACE_WAITS["count"] = 0
            for seconds in PHASES.values():
                seconds.clear()
            profile = None if args.profile is None else args.profile / f"clients-{clients}"
            row = asyncio.run(
                _run(
                    clients,
                    Path(folder),
                    profile=profile,
                    server_blas_threads=args.server_blas_threads,
                    time_limit_s=args.time_limit,
                )
            )
            rows.append(row)
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                log = Path(folder) / f"servers-{clients}.log"
                (args.keep_logs / log.name).write_bytes(log.read_bytes())
            rss = ", ".join(f"{k} {v:.0f}" for k, v in row["peak_rss_mib"].items())
            cpu = ", ".join(f"{k} {v:.3f}" for k, v in row["cpu_seconds_per_update"].items())
            gave_up = ", ".join(
                f"{n} {why}" for why, n in row["outcomes"].items() if why != "accepted"
            )
            p50, p99 = row["p50_upload_s"] or float("nan"), row["p99_upload_s"] or float("nan")
            server_cpu = max(row["server_cpu_seconds_per_update"], 1e-9)
            cores = os.cpu_count() or 1
            print(
                f"{clients:>5} clients: {row['accepted_by_clients']} accepted "
                f"({row['counted_by_coordinator']} counted, {row['distinct']} distinct), "
                f"{row['updates_per_second']:.1f} updates/s, upload p50 {p50:.3f} s p99 "
                f"{p99:.3f} s (p99 of the shares "
                f"{row['p99_phase_s']['shares'] or float('nan'):.3f} s, of the receipt "
                f"{row['p99_phase_s']['receipt'] or float('nan'):.3f} s), "
                f"{row['gave_up']} gave up{f' ({gave_up})' if gave_up else ''}, "
                f"{row['transport_retries']} connection retries"
                f"{'' if row['finished'] else ', STOPPED at the time limit'}; "
                f"CPU-s per accepted update: {cpu}; the servers' {server_cpu:.3f} CPU-s per "
                f"update would serve {cores / server_cpu:.0f} updates/s on these {cores} cores "
                f"with the clients elsewhere; {row['place_waits']} ticket requests waited "
                f"the full 20 s for a place; peak MiB: {rss}; load average "
                f"{row['load_average'][0]:.1f}",
                flush=True,
            )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
