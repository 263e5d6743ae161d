"""Secure aggregation costs next to plaintext FedAvg, measured side by side in one run.

For each model size d and client count n it runs one aggregation round in process
(the simulator's setting: no network), twice: plaintext FedAvg (each update encoded
with the wire codec, decoded by the coordinator and added to a running sum) and
secure aggregation (each client encodes, shares 2-of-3 and seals with HPKE; each of
3 aggregators opens and adds; the coordinator reconstructs from 2). It prints:

* client cost per update: encode + share + seal, and its ratio to the local training
  time of McMahan et al.'s CNN (E = 5, B = 10, 600 examples), measured in the same run;
* aggregator cost per client update: open + check + add;
* reconstruction time per round;
* whole-round time for plaintext and secure, without and with local training, and the
  secure/plaintext ratio;
* the cost of request signing over HTTP (an Ed25519 signature over the SHA-256 of each
  share upload) at the client per update, as a share of the same local training, and
  of verifying one upload at an aggregator.

Run: .venv/bin/python benchmarks/secure_aggregation.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from veilfl.auth.identity import Identity
from veilfl.auth.request_verifier import RequestVerifier
from veilfl.auth.signed_request import SignedRequest, sign_request
from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.keys import generate_keypair
from veilfl.crypto.shamir import Share
from veilfl.errors import ProtocolError
from veilfl.ml.datasets import load_mnist
from veilfl.ml.models import McMahanCNN
from veilfl.ml.training import TrainConfig, train_local
from veilfl.secagg.aggregator_node import AggregatorNode
from veilfl.secagg.client_shares import seal_update
from veilfl.secagg.config import EXTRA_COORDINATES, SecureAggregationConfig
from veilfl.secagg.reconstruction import plan_aggregation, reconstruct_aggregate
from veilfl.strategy.aggregate import Aggregate, WeightedSum
from veilfl.strategy.fedavg import FedAvg
from veilfl.wire.tensor_codec import decode_weights, encode_weights

DISTINCT_UPDATES = 4  # updates are reused cyclically so that n = 1,000 fits in memory


class _OnlyVersion:
    """The one model version a benchmark round applies to."""

    def __init__(self, weights: np.ndarray) -> None:
        self._weights = weights

    def weights_at(self, version: int) -> np.ndarray:
        return self._weights


class _NoTrimArchive:
    """Keeps no shares: every client that uploads also reports in this benchmark."""

    def put(self, client_id: str, share: Share) -> None:
        pass

    def get(self, client_id: str) -> Share:
        raise ProtocolError("This benchmark never trims a participant list.")

    def items(self) -> Iterator[tuple[str, Share]]:
        return iter(())

    def record_answer(self, participants: frozenset[str]) -> None:
        pass

    def recorded_answer(self) -> frozenset[str] | None:
        return None

    def clear(self) -> None:
        pass


@dataclass
class Result:
    d: int
    n: int
    plaintext_round_s: float
    secure_round_s: float
    client_s: float
    aggregator_per_client_s: float
    reconstruction_s: float


def local_training_seconds() -> float:
    """McMahan et al.'s CNN, E = 5, B = 10, on 600 MNIST examples (one client's work)."""
    data = load_mnist().train.subset(range(600))
    config = TrainConfig(learning_rate=0.05, epochs=5, batch_size=10, seed=0)
    started = time.perf_counter()
    train_local(McMahanCNN(), data, config)
    return time.perf_counter() - started


def plaintext_round(updates: list[np.ndarray], n: int) -> float:
    started = time.perf_counter()
    running = WeightedSum(updates[0].size)
    for i in range(n):
        body = encode_weights({"w": updates[i % len(updates)]}, metadata={"num_samples": "600"})
        decoded, _ = decode_weights(body)
        running.add(decoded["w"], weight=600.0)
    zeros = np.zeros(updates[0].size, np.float32)
    aggregate = Aggregate(
        weighted_delta_sum=running.vector(),
        total_weight=running.total_weight,
        participants=tuple(f"c{i}" for i in range(n)),
        trained_versions=(0,) * n,
    )
    FedAvg().apply(zeros, aggregate, history=_OnlyVersion(zeros))
    return time.perf_counter() - started


def secure_round(updates: list[np.ndarray], n: int, config: SecureAggregationConfig) -> Result:
    d = updates[0].size
    keys = [generate_keypair() for _ in range(config.num_aggregators)]
    nodes = [
        AggregatorNode(
            index=j + 1,
            keypair=keys[j],
            run_id="bench",
            vector_length=d + EXTRA_COORDINATES,
            archive_for_round=lambda r: _NoTrimArchive(),
        )
        for j in range(config.num_aggregators)
    ]
    rng = CsprngStream()
    warm_up = seal_update(  # first-touch page faults should not count as protocol cost
        updates[0],
        num_samples=600,
        loss=0.5,
        config=config,
        public_keys=[k.public_key for k in keys],
        run_id="bench",
        round_id=1,
        client_id="warm-up",
        rng=rng,
    )
    del warm_up
    client_s = aggregator_s = 0.0
    started = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        sealed = seal_update(
            updates[i % len(updates)],
            num_samples=600,
            loss=0.5,
            config=config,
            public_keys=[k.public_key for k in keys],
            run_id="bench",
            round_id=1,
            client_id=f"c{i}",
            rng=rng,
        )
        t1 = time.perf_counter()
        for share in sealed:
            nodes[share.aggregator_index - 1].receive(1, f"c{i}", share.envelope)
        t2 = time.perf_counter()
        client_s += t1 - t0
        aggregator_s += t2 - t1
    t0 = time.perf_counter()
    participants = {f"c{i}": tuple(range(1, config.num_aggregators + 1)) for i in range(n)}
    plan = plan_aggregation(
        participants,
        alive=range(1, config.num_aggregators + 1),
        threshold=config.threshold,
        min_participants=1,
    )
    shares = [nodes[j - 1].aggregate(1, plan.participants) for j in plan.aggregators[:2]]
    result = reconstruct_aggregate(
        shares, config=config, participants=plan.participants, trained_versions=(0,) * n
    )
    zeros = np.zeros(d, np.float32)
    FedAvg().apply(zeros, result, history=_OnlyVersion(zeros))
    reconstruction_s = time.perf_counter() - t0
    return Result(
        d=d,
        n=n,
        plaintext_round_s=0.0,
        secure_round_s=time.perf_counter() - started,
        client_s=client_s / n,
        aggregator_per_client_s=aggregator_s / n / config.num_aggregators,
        reconstruction_s=reconstruction_s,
    )


def signing_costs(d: int, *, shares: int = 3, repeats: int = 20) -> tuple[float, float]:
    """Seconds to sign one update's ``shares`` share uploads (client), and to verify
    one upload (aggregator), for a model of ``d`` parameters."""
    identity = Identity.generate()
    body = bytes((d + EXTRA_COORDINATES) * 4 + 100)  # an envelope's size
    request = SignedRequest.of("aggregator-1/bench", "POST", "/v1/rounds/1/shares", body, 1)
    verifier = RequestVerifier(audience="aggregator-1/bench", max_remembered=repeats)
    started = time.perf_counter()
    headers = [sign_request(identity, request, now_s=time.time()) for _ in range(repeats)]
    sign_s = (time.perf_counter() - started) / repeats
    started = time.perf_counter()
    for header in headers:
        verifier.verify(
            request, header, public_key_for=lambda _: identity.public_key, now_s=time.time()
        )
    verify_s = (time.perf_counter() - started) / repeats
    return shares * sign_s, verify_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="skip n = 1,000 at d = 1,663,370")
    parser.add_argument("--out", type=Path, default=None, help="JSON results path")
    args = parser.parse_args()
    torch.set_num_threads(1)
    train_s = local_training_seconds()
    print(f"local training (McMahan CNN, E=5, B=10, 600 examples, 1 thread): {train_s:.2f} s")
    rng = np.random.default_rng(0)
    rows: list[Result] = []
    header = (
        f"{'d':>9} {'n':>5} | {'client ms':>9} {'% of train':>10} | {'agg ms/upd':>10} | "
        f"{'recon ms':>8} | {'plain s':>8} {'secure s':>8} {'ratio':>6} | "
        f"{'+train plain':>12} {'+train secure':>13} {'overhead':>8}"
    )
    print(header)
    print("-" * len(header))
    for d in (100_000, 1_663_370):
        updates = [rng.normal(0, 0.01, d).astype(np.float32) for _ in range(DISTINCT_UPDATES)]
        for n in (10, 100, 1000):
            if args.quick and d > 1_000_000 and n > 100:
                continue
            config = SecureAggregationConfig(max_clients=max(n, 10), max_samples_per_client=600)
            plain = plaintext_round(updates, n)
            row = secure_round(updates, n, config)
            row.plaintext_round_s = plain
            rows.append(row)
            with_train_plain = plain + n * train_s
            with_train_secure = row.secure_round_s + n * train_s
            print(
                f"{d:>9} {n:>5} | {1000 * row.client_s:>9.1f} "
                f"{100 * row.client_s / train_s:>9.2f}% | "
                f"{1000 * row.aggregator_per_client_s:>10.2f} | "
                f"{1000 * row.reconstruction_s:>8.1f} | {plain:>8.2f} {row.secure_round_s:>8.2f} "
                f"{row.secure_round_s / plain:>6.1f} | {with_train_plain:>12.1f} "
                f"{with_train_secure:>13.1f} "
                f"{100 * (with_train_secure / with_train_plain - 1):>7.2f}%",
                flush=True,
            )
    signing = {}
    for d in (100_000, 1_663_370):
        client_sign_s, verify_s = signing_costs(d)
        signing[d] = {"client_per_update_s": client_sign_s, "aggregator_per_share_s": verify_s}
        print(
            f"request signing at d = {d}: client {1000 * client_sign_s:.1f} ms per update "
            f"(3 shares, {100 * client_sign_s / train_s:.2f}% of local training); "
            f"aggregator {1000 * verify_s:.1f} ms to verify one share upload",
            flush=True,
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "local_training_s": train_s,
                    "rows": [vars(r) for r in rows],
                    "signing": signing,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
