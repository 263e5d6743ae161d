"""A coordinator and m aggregator processes over TLS, with clients the test plays itself:
it knows every delta, so it can check what the coordinator reconstructs."""

from __future__ import annotations

import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
from tests import malicious
from tests.e2e.processes import (
    HandClient,
    described_run,
    free_port,
    running,
    veilfl_command,
    wait_until_serving,
)

from veilfl.auth.admission import ADMISSION_HEADER
from veilfl.cli.local_fleet import local_aggregators, local_trust, server_aggregator_flags
from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.envelope import ShareContext
from veilfl.crypto.envelope import seal as hpke_seal
from veilfl.protocol.run_description import RunDescription
from veilfl.secagg.contribution import (
    EXTRA_COORDINATES,
    EXTRA_UNITS,
    SealedShare,
    contribution_binding,
    seal_contribution,
)
from veilfl.tensors import Weights, flatten, spec_of, unflatten
from veilfl.tls import client_ssl_context
from veilfl.transport.signing import for_round
from veilfl.wire.tensor_codec import decode_weights

__all__ = ["SecureFleet"]


class SecureFleet:
    """One round of a secure run (model version 0 to 1), played by hand.

    Args:
        folder: For keys, certificates, run folder and logs.
        stack: Owns the processes (they are killed on the way out).
        clients: How many clients to enroll (each gets a known random delta).
        aggregators: m.
        threshold: t.
        min_clients: Reports the coordinator needs to close the round.
        aggregator_flags: More options for every aggregator (index -> options).
    """

    def __init__(
        self,
        folder: Path,
        stack: ExitStack,
        *,
        clients: int,
        aggregators: int,
        threshold: int,
        min_clients: int,
        aggregator_flags: dict[int, list[str]] | None = None,
    ) -> None:
        self.folder = folder
        port = free_port()
        self.url = f"https://127.0.0.1:{port}"
        trust = local_trust(folder / "trust", aggregators=aggregators, clients=clients)
        self.verify = client_ssl_context(trust.ca_file)
        fleet = local_aggregators(
            folder / "keys", count=aggregators, coordinator_url=self.url, trust=trust
        )
        self.aggregator_urls = [a.url for a in fleet]
        self._aggregator_cmds = [
            [*a.command, *(aggregator_flags or {}).get(a.index, [])] for a in fleet
        ]
        server = veilfl_command(
            "server",
            "--run-dir",
            str(folder / "run"),
            "--port",
            str(port),
            "--rounds",
            "1",
            "--clients-per-round",
            str(clients),
            "--min-clients",
            str(min_clients),
            "--round-timeout",
            "15",
            "--threshold",
            str(threshold),
            "--norm-bound",
            "1",
            "--max-samples-per-client",
            "1000",
            "--test-examples",
            "100",
            *server_aggregator_flags(fleet),
            *trust.coordinator_flags(),
        )
        self._stack = stack
        self.http = stack.enter_context(
            httpx.Client(base_url=self.url, timeout=30, verify=self.verify)
        )
        log = folder / "server.log"
        wait_until_serving(
            self.url, stack.enter_context(running(server, log)), log, verify=self.verify
        )
        self.aggregators: list[subprocess.Popen[bytes]] = []
        for index in range(1, aggregators + 1):
            self.aggregators.append(self.start_aggregator(index))
        deadline = time.monotonic() + 60  # the run opens once the aggregators' policies fit it
        while not self.http.get("/v1/status").json()["opened"]:
            assert time.monotonic() < deadline, "the run never opened"
            time.sleep(0.1)
        self.run = RunDescription.from_json(described_run(self.http, self.url)).info
        assert self.run.secure is not None
        self.config = self.run.secure.config
        self._keys = [a.hpke_key() for a in self.run.secure.aggregators]
        self.hands = {
            hand.client_id: hand
            for hand in (
                HandClient.enroll(self.http, self.url, name=f"c{i}", token=token)
                for i, token in enumerate(trust.tokens)
            )
        }
        self.clients = list(self.hands)
        self.start, _ = decode_weights(self.http.get("/v1/model", auth=self._any_auth).content)
        self.spec = spec_of(self.start)
        rng = np.random.default_rng(0)
        self.deltas = {
            c: rng.normal(0, 0.01, self.spec.total_size).astype(np.float32) for c in self.clients
        }
        self.samples = {c: 100 * (i + 1) for i, c in enumerate(self.clients)}
        self._admissions: dict[tuple[str, int], str] = {}
        self.take_tasks(round_id=1)

    def take_tasks(self, *, round_id: int) -> None:
        """Every client asks for its task, which must be to train in ``round_id``."""
        for client in self.clients:
            task = self.http.get(f"/v1/clients/{client}/task", auth=self.hands[client].auth)
            assert (task.json()["kind"], task.json()["round_id"]) == ("train", round_id), task.text
            self._admissions[client, round_id] = task.json()["admission"]

    @property
    def _any_auth(self) -> httpx.Auth:
        return self.hands[self.clients[0]].auth

    def start_aggregator(self, index: int) -> subprocess.Popen[bytes]:
        """Start aggregator ``index`` (again) and wait until it serves."""
        log = self.folder / f"aggregator-{index}.log"
        process = self._stack.enter_context(running(self._aggregator_cmds[index - 1], log))
        wait_until_serving(self.aggregator_urls[index - 1], process, log, verify=self.verify)
        return process

    def kill_aggregator(self, index: int) -> None:
        """SIGKILL aggregator ``index``."""
        process = self.aggregators[index - 1]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def _sealed(self, client: str, round_id: int) -> list[SealedShare]:
        secure = self.run.secure
        assert secure is not None
        rng = CsprngStream()
        weight = self.samples[client] / 1000
        measurement = secure.layout.encode(
            self.deltas[client] * weight, weight=weight, loss=1.0, unclipped=None, rng=rng
        )
        return seal_contribution(
            measurement,
            layout=secure.layout,
            public_keys=self._keys,
            run_id=self.run.run_id,
            round_id=round_id,
            client_id=client,
            rng=rng,
        )

    def _poisoned(self, client: str, round_id: int) -> list[SealedShare]:
        secure = self.run.secure
        assert secure is not None
        layout = secure.layout
        d = layout.dimension
        measurement = [0] * d + [EXTRA_UNITS // 2] + [0] * (EXTRA_COORDINATES - 2) + [1]
        measurement[0] = 1000 * layout.bounds.norm_bound  # 1000 times the bound
        shares = malicious.cheat(
            layout.bounds,
            measurement,
            threshold=secure.config.threshold,
            num_shares=secure.config.num_aggregators,
            binding=contribution_binding(self.run.run_id, round_id, client),
        )
        return [
            SealedShare(
                share.index,
                hpke_seal(
                    share.to_bytes(),
                    self._keys[share.index - 1],
                    context=ShareContext(
                        run_id=self.run.run_id,
                        round_id=round_id,
                        client_id=client,
                        aggregator_index=share.index,
                    ),
                ),
            )
            for share in shares
        ]

    def upload(
        self, client: str, reach: list[int], *, round_id: int = 1, poisoned: bool = False
    ) -> list[int]:
        """Seal ``client``'s update; send the shares of the aggregators in ``reach``;
        return the indices that acknowledged. A ``poisoned`` client sends a
        contribution whose first coordinate is far past the norm bound, with shares,
        bits and proof that match each other (a valid-looking envelope for every
        aggregator: only the joint verification can catch it)."""
        sealed = self._poisoned(client, round_id) if poisoned else self._sealed(client, round_id)
        acknowledged = []
        for share in sealed:
            if share.aggregator_index not in reach:
                continue
            try:
                response = self.http.post(
                    f"{self.aggregator_urls[share.aggregator_index - 1]}"
                    f"/v1/rounds/{round_id}/shares",
                    content=share.envelope,
                    headers={ADMISSION_HEADER: self._admissions[client, round_id]},
                    auth=self.hands[client].aggregator_auth(share.aggregator_index),
                    extensions=for_round(round_id),
                    timeout=10,
                )
            except httpx.TransportError:
                continue
            if response.status_code == 202:
                acknowledged.append(share.aggregator_index)
        return acknowledged

    def report(self, client: str, acknowledged: list[int], *, round_id: int = 1) -> None:
        """Hand in ``client``'s receipt."""
        response = self.http.post(
            f"/v1/rounds/{round_id}/receipts",
            json={"client_id": client, "base_version": 0, "aggregators": acknowledged},
            auth=self.hands[client].auth,
            extensions=for_round(round_id),
        )
        assert response.status_code == 202, response.text

    def final_model(self, timeout_s: float = 60.0) -> Weights:
        """The model after the first completed round, once the coordinator has it."""
        deadline = time.monotonic() + timeout_s
        while self.http.get("/v1/status").json()["model_version"] < 1:
            assert time.monotonic() < deadline, "no round completed"
            time.sleep(0.1)
        weights, _ = decode_weights(
            self.http.get("/v1/model", auth=self._any_auth).content, spec=self.spec
        )
        return weights

    def assert_is_weighted_mean_of(self, final: Weights, reporters: list[str]) -> None:
        """``final`` is the start plus the weighted mean of the reporters' deltas, within
        the quantisation bound."""
        weights = np.array([self.samples[c] / 1000 for c in reporters])
        mean = sum(
            w * self.deltas[c].astype(np.float64) for w, c in zip(weights, reporters, strict=True)
        )
        mean /= weights.sum()
        expected = unflatten((flatten(self.start, self.spec) + mean).astype(np.float32), self.spec)
        # Each client's w·Δ is stochastically rounded to steps of 1/scale and its weight
        # to steps of 1/1024 (EXTRA_UNITS), so Σw·Δ is off by under n/scale and Σw by
        # under n/2048; 1e-6 covers rounding the new model to float32.
        secure = self.run.secure
        assert secure is not None
        n = len(reporters)
        sum_error, weight_error = n / secure.layout.scale, n / (2 * EXTRA_UNITS)
        bound = unflatten(
            (
                (sum_error + weight_error * np.abs(mean)) / (weights.sum() - weight_error) + 1e-6
            ).astype(np.float32),
            self.spec,
        )
        for name in self.spec.names:
            assert np.all(np.abs(final[name] - expected[name]) <= bound[name]), name
