"""Load test: one coordinator and 3 aggregators on loopback, N concurrent HTTP clients.

Starts the coordinator (FedBuff, secure aggregation 2-of-3) and the aggregators as
processes, all over TLS from a local CA, then runs N concurrent clients in this
process. Each client enrolls an Ed25519 key with a one-time token (and signs every
request after), asks for
a task, downloads the model, "trains" (sleeps a random 0.5-2 s: this tests the
servers, not torch), gets a ticket, seals its update, uploads the shares to the three
aggregators and hands in its receipt. Requests are bounded in number and time, and
only loopback addresses are used.

It prints accepted updates per second at the coordinator, p50/p99 upload latency (all
three share uploads plus the receipt) and each server's peak memory, and checks that
every update the clients saw accepted was counted exactly once.

Run: .venv/bin/python benchmarks/load_test.py --clients 100 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import ssl
import subprocess
import sys
import tempfile
import time
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
from veilfl.keyfiles import PublicKeyFile
from veilfl.secagg.client_shares import seal_update
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.tls import client_ssl_context
from veilfl.transport.signing import SigningAuth, for_round
from veilfl.wire.tensor_codec import decode_weights

BUFFER = 50


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _wait_serving(url: str, verify: ssl.SSLContext, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(verify=verify) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get(f"{url}/v1/status", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not start")


RETRIES = {"count": 0}


async def _request(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> httpx.Response:
    """Like a real client: retry a request whose connection broke (bounded)."""
    for attempt in range(6):
        try:
            return await http.request(method, url, **kwargs)
        except httpx.TransportError:
            RETRIES["count"] += 1
            await asyncio.sleep(0.1 * 2**attempt)
    return await http.request(method, url, **kwargs)


async def _client(
    index: int,
    url: str,
    run: dict[str, Any],
    token: str,
    http: httpx.AsyncClient,
    latencies: list[float],
    accepted: list[str],
) -> None:
    secure = run["secure"]
    config = SecureAggregationConfig(**secure["config"])
    keys = [PublicKeyFile.from_json(a).key for a in secure["aggregators"]]
    urls = [a["url"] for a in secure["aggregators"]]
    identity = Identity.generate()
    auth = SigningAuth(identity, coordinator_audience(run["run_id"]))
    to_aggregator = [
        SigningAuth(identity, aggregator_audience(int(a["index"]), run["run_id"]))
        for a in secure["aggregators"]
    ]
    joined = await _request(
        http,
        "POST",
        f"{url}/v1/clients",
        json={
            "name": f"load-{index}",
            "public_key": identity.public_key_text,
            "enrollment_token": token,
        },
        auth=auth,
    )
    client_id = joined.json()["client_id"]
    task = (await _request(http, "GET", f"{url}/v1/clients/{client_id}/task", auth=auth)).json()
    if task["kind"] != "train":
        return
    model = await _request(http, "GET", f"{url}/v1/model", auth=auth)
    version = int(model.headers["X-Model-Version"])
    weights, _ = decode_weights(model.content)
    size = sum(w.size for w in weights.values())
    await asyncio.sleep(random.uniform(0.5, 2.0))  # "training"
    for _ in range(20):
        response = await _request(
            http,
            "POST",
            f"{url}/v1/tickets",
            json={"client_id": client_id, "trained_version": version},
            auth=auth,
        )
        if response.status_code == 409 and "being applied" in response.text:
            await asyncio.sleep(random.uniform(0.2, 1.0))  # a buffer is being released
            continue
        if response.status_code != 200:
            return  # too stale, or the run is over
        ticket = response.json()
        delta = np.full(size, 1e-4, dtype=np.float32)
        sealed = seal_update(
            delta,
            num_samples=100,
            loss=1.0,
            config=config,
            public_keys=keys,
            run_id=run["run_id"],
            round_id=ticket["buffer_id"],
            client_id=client_id,
            rng=CsprngStream(),
            weight=ticket["weight"],
        )
        began = time.perf_counter()
        answers = await asyncio.gather(
            *(
                _request(
                    http,
                    "POST",
                    f"{urls[s.aggregator_index - 1]}/v1/rounds/{ticket['buffer_id']}/shares",
                    content=s.envelope,
                    headers={ADMISSION_HEADER: ticket["admission"]},
                    auth=to_aggregator[s.aggregator_index - 1],
                    extensions=for_round(ticket["buffer_id"]),
                )
                for s in sealed
            )
        )
        acks = [
            s.aggregator_index for s, a in zip(sealed, answers, strict=True) if a.status_code == 202
        ]
        receipt = await _request(
            http,
            "POST",
            f"{url}/v1/rounds/{ticket['buffer_id']}/receipts",
            json={"client_id": client_id, "base_version": version, "aggregators": acks},
            auth=auth,
            extensions=for_round(ticket["buffer_id"]),
        )
        latencies.append(time.perf_counter() - began)
        if receipt.status_code == 202:
            if not receipt.json()["duplicate"]:
                accepted.append(client_id)
            return
        if receipt.status_code != 409:
            return


async def _run(clients: int, workdir: Path) -> dict[str, Any]:
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
        "--max-clients",
        str(BUFFER),
        "--test-examples",
        "100",
        "--log-level",
        "warning",
        "--linger",
        "30",
        *flags,
        *trust.coordinator_flags(),
    ]
    log = (workdir / f"servers-{clients}.log").open("wb")
    try:
        processes.append(subprocess.Popen(server, stdout=log, stderr=log))
        await _wait_serving(url, verify)
        for cmd in aggregator_cmds:
            processes.append(subprocess.Popen(cmd, stdout=log, stderr=log))
        async with httpx.AsyncClient(verify=verify) as http:
            run = (await http.get(f"{url}/v1/run")).json()
        for aggregator in run["secure"]["aggregators"]:
            await _wait_serving(aggregator["url"], verify)
        latencies: list[float] = []
        accepted: list[str] = []
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        started = time.perf_counter()
        async with httpx.AsyncClient(limits=limits, timeout=120, verify=verify) as http:
            await asyncio.wait_for(
                asyncio.gather(
                    *(
                        _client(i, url, run, trust.tokens[i], http, latencies, accepted)
                        for i in range(clients)
                    )
                ),
                timeout=600,
            )
            elapsed = time.perf_counter() - started
            status = (await http.get(f"{url}/v1/status")).json()
            metrics = (await http.get(f"{url}/v1/metrics")).json()
        counted = sum(m["num_clients"] for m in metrics) + int(status.get("pending", 0))
        return {
            "clients": clients,
            "accepted_by_clients": len(accepted),
            "counted_by_coordinator": counted,
            "distinct": len(set(accepted)),
            "versions": status["model_version"],
            "updates_per_second": len(accepted) / elapsed,
            "p50_upload_s": float(np.percentile(latencies, 50)) if latencies else None,
            "p99_upload_s": float(np.percentile(latencies, 99)) if latencies else None,
            "peak_rss_mib": {
                name: _peak_rss_mib(p.pid)
                for name, p in zip(
                    ["coordinator", "aggregator-1", "aggregator-2", "aggregator-3"],
                    processes,
                    strict=True,
                )
            },
            "seconds": elapsed,
            "transport_retries": RETRIES["count"],
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
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for clients in args.clients:
            RETRIES["count"] = 0
            row = asyncio.run(_run(clients, Path(folder)))
            rows.append(row)
            rss = ", ".join(f"{k} {v:.0f}" for k, v in row["peak_rss_mib"].items())
            print(
                f"{clients:>5} clients: {row['accepted_by_clients']} accepted "
                f"({row['counted_by_coordinator']} counted, {row['distinct']} distinct), "
                f"{row['updates_per_second']:.1f} updates/s, upload p50 "
                f"{row['p50_upload_s']:.3f} s p99 {row['p99_upload_s']:.3f} s, "
                f"{row['transport_retries']} connection retries; "
                f"peak MiB: {rss}",
                flush=True,
            )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
