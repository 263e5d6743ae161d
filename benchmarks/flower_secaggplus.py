"""Flower's SecAgg+ next to Flower's plain FedAvg, one round each, in Flower's simulation
engine: the comparison row of ``benchmarks/secure_aggregation.py``.

Every client returns the same fixed float32 update of d parameters (training is not
timed). The server runs one fit round of ``DefaultWorkflow``: plain, or with
``SecAggPlusWorkflow(num_shares, reconstruction_threshold)`` (Bonawitz et al. 2017,
Bell et al. 2020), which masks, Shamir-shares the mask seeds and unmasks; it verifies
nothing about the updates. It prints one JSON object:

* ``plaintext_wall_s`` and ``secaggplus_wall_s``: the fit round's wall time, from the
  server's first request to the aggregated parameters (Flower's polling and Ray's
  scheduling included, its start-up not);
* ``plaintext_server_s`` and ``secaggplus_server_s``: the server's own compute in that
  round (the wall time less the time it waits for replies: unmasking, aggregation);
* ``client_s``: the median client's time inside ``secaggplus_mod`` (key generation,
  key sharing, masking; the client's own fit excluded), summed over its four stages,
  and ``clients_total_s`` all clients' together; a round's compute is
  ``secaggplus_server_s + clients_total_s``;
* ``upload_bytes``: the masked vector a client sends (4 bytes per parameter at the
  default 2**32 modulus).

It needs flwr[simulation] (the ``flower`` extra) and no veilfl, so it can run in a
virtual environment of its own: ``python benchmarks/flower_secaggplus.py --dim D
--clients N``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.common import Context, Message, ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.default_workflows import default_fit_workflow
from flwr.simulation import run_simulation

_TIMES_ENV = "VEILFL_FLOWER_CLIENT_TIMES"


class _Client(NumPyClient):  # type: ignore[misc]
    def __init__(self, update: list[np.ndarray]) -> None:
        self.update = update

    def fit(self, parameters: Any, config: Any) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        return self.update, 600, {}


def _timed_secaggplus(msg: Message, ctxt: Context, call_next: Any) -> Message:
    """secaggplus_mod, timed without the client's own fit."""
    inner = 0.0

    def timed_next(message: Message, context: Context) -> Message:
        nonlocal inner
        started = time.perf_counter()
        reply = call_next(message, context)
        inner += time.perf_counter() - started
        return reply

    started = time.perf_counter()
    reply: Message = secaggplus_mod(msg, ctxt, timed_next)
    spent = time.perf_counter() - started - inner
    with open(os.environ[_TIMES_ENV], "a") as out:
        out.write(f"{ctxt.node_id} {spent}\n")
    return reply


class _WaitTimer:
    """A grid that counts the time the server spends waiting for replies."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid
        self.waiting = 0.0

    def send_and_receive(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        replies = self._grid.send_and_receive(*args, **kwargs)
        self.waiting += time.perf_counter() - started
        return replies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


class _Timed:
    """A fit workflow, timed: wall time, and the server's own share of it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.server = 0.0

    def __call__(self, grid: Grid, context: Any) -> None:
        waits = _WaitTimer(grid)
        started = time.perf_counter()
        self.inner(waits, context)
        elapsed = time.perf_counter() - started
        self.seconds += elapsed
        self.server += elapsed - waits.waiting


def one_round(
    dim: int, clients: int, *, secure: bool, shares: int, threshold: int
) -> tuple[float, float]:
    """Wall and server seconds of one fit round of ``clients`` clients sending ``dim``
    parameters."""
    update = [np.random.default_rng(0).normal(0, 0.01, dim).astype(np.float32)]
    client_app = ClientApp(
        client_fn=lambda context: _Client(update).to_client(),
        mods=[_timed_secaggplus] if secure else [],
    )
    timed = _Timed(
        SecAggPlusWorkflow(num_shares=shares, reconstruction_threshold=threshold)
        if secure
        else default_fit_workflow
    )
    server_app = ServerApp()

    @server_app.main()  # type: ignore[untyped-decorator]
    def _main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(
            fraction_fit=1.0,
            min_fit_clients=clients,
            min_available_clients=clients,
            fraction_evaluate=0.0,
            initial_parameters=ndarrays_to_parameters([np.zeros(dim, dtype=np.float32)]),
        )
        legacy = LegacyContext(
            context=context, config=ServerConfig(num_rounds=1), strategy=strategy
        )
        DefaultWorkflow(fit_workflow=timed)(grid, legacy)

    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": os.cpu_count() or 1, "include_dashboard": False},
        },
    )
    return timed.seconds, timed.server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--shares", type=int, default=3, help="SecAgg+ num_shares")
    parser.add_argument("--threshold", type=int, default=2, help="reconstruction threshold")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        times = Path(folder) / "client_times.txt"
        times.touch()
        os.environ[_TIMES_ENV] = str(times)
        plain_wall, plain_server = one_round(
            args.dim, args.clients, secure=False, shares=args.shares, threshold=args.threshold
        )
        secure_wall, secure_server = one_round(
            args.dim, args.clients, secure=True, shares=args.shares, threshold=args.threshold
        )
        per_node: dict[str, float] = {}
        for line in times.read_text().splitlines():
            node, seconds = line.split()
            per_node[node] = per_node.get(node, 0.0) + float(seconds)
    client = sorted(per_node.values())
    print(
        json.dumps(
            {
                "dim": args.dim,
                "clients": args.clients,
                "shares": args.shares,
                "threshold": args.threshold,
                "plaintext_wall_s": plain_wall,
                "plaintext_server_s": plain_server,
                "secaggplus_wall_s": secure_wall,
                "secaggplus_server_s": secure_server,
                "client_s": client[len(client) // 2] if client else None,
                "clients_total_s": sum(client),
                "upload_bytes": 4 * args.dim,
            }
        )
    )


if __name__ == "__main__":
    main()
