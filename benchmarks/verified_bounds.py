"""Verified bounds at d = 1,663,370, 2-of-3, next to local training and today's secure
aggregation, measured side by side in one run (single-threaded BLAS and torch).

Each repetition runs every measured action once, in turn, so a change in machine load
hits both sides of a ratio alike; the tables give medians over the repetitions.

* client, per update: today's encode + share + seal (``seal_update``) and verified
  bounds' ``prove_contribution`` (alone, and with sealing), as shares of one local
  training of McMahan et al.'s CNN (E = 5, B = 10, 600 MNIST examples); goal: the proof
  within 10% of local training;
* aggregator at receive, per share: today's open + check + add (``AggregatorRound.receive``)
  and verified bounds' open + parse + ``prepare_share`` (seed expansion or part hash, κ
  wraparound projections) + add;
* aggregator at round close, per share: ``verifier_share``; goal: at most 3x today's
  open-check-add;
* coordinator, per client: ``decide`` over 3 verifier shares;
* upload bytes against the plaintext float32 update and today's 3.0x; goal: <= 3.0x;
* SHA-256 against BLAKE2b on one update share (the part hash);
* a sweep over the norm gadget's calls P: prover time, verifier time and share size.

``--quick`` times 12 training steps per repetition instead of 300 and scales up (the
output says so).

Run: .venv/bin/python benchmarks/verified_bounds.py [--quick] [--out results.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS

import argparse
import functools
import hashlib
import json
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.envelope import ShareContext, open_sealed, seal
from veilfl.crypto.keys import generate_keypair
from veilfl.crypto.shamir import Share
from veilfl.errors import ProtocolError
from veilfl.ml.datasets import load_mnist
from veilfl.ml.models import McMahanCNN
from veilfl.ml.training import TrainConfig, train_local
from veilfl.secagg.aggregator_state import AggregatorRound
from veilfl.secagg.bounds import (
    BoundsParameters,
    ContributionShare,
    decide,
    prepare_share,
    prove_contribution,
    verifier_share,
)
from veilfl.secagg.bounds_parameters import GRINDING_TRIALS
from veilfl.secagg.client_shares import seal_update
from veilfl.secagg.config import EXTRA_COORDINATES, SecureAggregationConfig

D = 1_663_370
THRESHOLD, AGGREGATORS = 2, 3
EXTRA_RANGES = ((0, 1024), (0, 1024), (0, 1))  # weight, weighted loss, within-bound bit
BINDING = b"bench-run/round-1/client-0"
FULL_STEPS = 5 * 60  # E = 5 epochs of 600 examples in batches of 10
QUICK_STEPS = 12


class _NoArchive:
    """Keeps nothing: the benchmark never trims a participant list."""

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


def interleaved(actions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each action, running all actions once per repetition in turn."""
    for action in actions.values():
        action()  # warm up: first-touch page faults and caches are not protocol cost
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(repeats):
        for name, action in actions.items():
            started = time.perf_counter()
            action()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def honest_measurement(params: BoundsParameters) -> np.ndarray:
    """A Gaussian update scaled to 95% of the norm bound, rounded, and in-range extras."""
    rng = np.random.default_rng(0)
    direction = rng.normal(size=params.dimension)
    update = np.round(direction * 0.95 * params.norm_bound / np.linalg.norm(direction))
    update = update.astype(np.int64)
    while int(update @ update) > params.norm_bound**2:
        largest = int(np.argmax(np.abs(update)))
        update[largest] -= np.sign(update[largest])
    return np.concatenate([update, np.array([600, 300, 1], dtype=np.int64)])


class Bench:
    """Everything both protocols need, built once."""

    def __init__(self, params: BoundsParameters, quick: bool) -> None:
        self.params = params
        self.keys = [generate_keypair() for _ in range(AGGREGATORS)]
        self.rng = CsprngStream()
        self.config = SecureAggregationConfig(max_clients=100, max_samples_per_client=600)
        self.update = np.random.default_rng(1).normal(0, 0.01, D).astype(np.float32)
        self.measurement = honest_measurement(params)
        self.contexts = [
            ShareContext(run_id="bench", round_id=1, client_id="c0", aggregator_index=j)
            for j in range(1, AGGREGATORS + 1)
        ]
        data = load_mnist().train.subset(range(600))
        steps = QUICK_STEPS if quick else None
        self.train_config = TrainConfig(
            learning_rate=0.05, epochs=1 if quick else 5, batch_size=10, seed=0, max_batches=steps
        )
        self.train_scale = FULL_STEPS / QUICK_STEPS if quick else 1.0
        self.data = data
        self.today_round = AggregatorRound(
            run_id="bench",
            round_id=1,
            index=2,
            vector_length=D + EXTRA_COORDINATES,
            field=self.config.encoding().field,
            private_key=self.keys[1].private_key,
            archive=_NoArchive(),
        )
        self.client_ids = (f"r{i}" for i in range(10**9))

    def train(self) -> None:
        train_local(McMahanCNN(), self.data, self.train_config)

    def seal_today(self, client_id: str = "timing") -> list:  # type: ignore[type-arg]
        return seal_update(
            self.update,
            num_samples=600,
            loss=0.5,
            config=self.config,
            public_keys=[k.public_key for k in self.keys],
            run_id="bench",
            round_id=1,
            client_id=client_id,
            rng=self.rng,
        )

    def prove(self, params: BoundsParameters | None = None) -> list[ContributionShare]:
        return prove_contribution(
            self.measurement if params is None else honest_measurement(params),
            params=params or self.params,
            threshold=THRESHOLD,
            num_shares=AGGREGATORS,
            binding=BINDING,
            rng=self.rng,
        )

    def prove_and_seal(self) -> list[bytes]:
        return [
            seal(
                s.to_bytes(), self.keys[s.index - 1].public_key, context=self.contexts[s.index - 1]
            )
            for s in self.prove()
        ]


def client_costs(bench: Bench, repeats: int) -> dict[str, float]:
    medians = interleaved(
        {
            "train_s": bench.train,
            "today_s": bench.seal_today,
            "prove_s": bench.prove,
            "prove_seal_s": bench.prove_and_seal,
        },
        repeats,
    )
    medians["train_s"] *= bench.train_scale
    return medians


def aggregator_costs(bench: Bench, repeats: int) -> dict[str, float]:
    params = bench.params
    envelopes = bench.prove_and_seal()
    today_envelopes: list[tuple[str, bytes]] = []
    for _ in range(repeats + 1):
        client_id = next(bench.client_ids)
        today_envelopes.append((client_id, bench.seal_today(client_id)[1].envelope))
    pending = iter(today_envelopes)
    running = np.zeros(params.measurement_length, dtype=np.uint64)
    prepared = {}

    def receive_today() -> None:
        client_id, envelope = next(pending)
        bench.today_round.receive(client_id, envelope)

    def receive(index: int) -> None:
        key = bench.keys[index - 1].private_key
        opened = open_sealed(envelopes[index - 1], key, context=bench.contexts[index - 1])
        prepared[index] = prepare_share(
            ContributionShare.from_bytes(opened),
            params=params,
            threshold=THRESHOLD,
            num_shares=AGGREGATORS,
            binding=BINDING,
        )
        np.add(running, prepared[index].measurement_share, out=running)

    for index in (1, 2, 3):
        receive(index)
    query_seed = os.urandom(32)
    answers = [verifier_share(prepared[j], query_seed=query_seed, params=params) for j in (1, 2, 3)]
    assert decide(answers, params=params, threshold=THRESHOLD).valid
    medians = interleaved(
        {
            "today_receive_s": receive_today,
            "receive_seed_s": functools.partial(receive, 1),
            "receive_full_s": functools.partial(receive, 2),
            "verify_s": lambda: verifier_share(prepared[2], query_seed=query_seed, params=params),
            "decide_s": lambda: decide(answers, params=params, threshold=THRESHOLD),
        },
        repeats,
    )
    medians["upload_bytes"] = sum(len(e) for e in envelopes)
    medians["today_upload_bytes"] = sum(len(s.envelope) for s in bench.seal_today())
    medians["verifier_bytes"] = len(answers[0].to_bytes())
    return medians


def sweep(bench: Bench, calls: tuple[int, ...], repeats: int) -> list[dict[str, float]]:
    rows = []
    for p in calls:
        params = BoundsParameters(
            dimension=D, norm_bound=bench.params.norm_bound, extra_ranges=EXTRA_RANGES, calls=p
        )
        shares = bench.prove(params)
        prepared = prepare_share(
            shares[1], params=params, threshold=THRESHOLD, num_shares=AGGREGATORS, binding=BINDING
        )
        seed = os.urandom(32)
        medians = interleaved(
            {
                "prove_s": functools.partial(bench.prove, params),
                "verify_s": functools.partial(
                    verifier_share, prepared, query_seed=seed, params=params
                ),
            },
            repeats,
        )
        rows.append(
            {
                "calls": params.norm_gadget.calls,
                "wires": params.norm_gadget.wires,
                **medians,
                "verifier_bytes": len(
                    verifier_share(prepared, query_seed=seed, params=params).to_bytes()
                ),
                "upload_ratio": THRESHOLD * params.input_length / D,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="time 12 training steps, scaled")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions (medians)")
    parser.add_argument("--out", type=Path, default=None, help="JSON results path")
    args = parser.parse_args()
    torch.set_num_threads(1)
    norm_bound = BoundsParameters.largest_norm_bound(dimension=D, extra_ranges=EXTRA_RANGES)
    params = BoundsParameters(dimension=D, norm_bound=norm_bound, extra_ranges=EXTRA_RANGES)
    print(
        f"d = {D}, {THRESHOLD}-of-{AGGREGATORS}, B = {norm_bound} (the largest sound B at "
        f"p = 2^31 - 1), b = {params.wraparound_bound}, κ = {params.wraparound_checks}, "
        f"k = {params.query_points}, P = {params.norm_gadget.calls} calls x "
        f"{params.norm_gadget.wires} wires; soundness error {params.soundness_error():.2g} "
        f"(1 trial), {params.soundness_error(trials=GRINDING_TRIALS):.2g} (2^64 trials); "
        f"at most {params.max_summands()} summands; {args.repeats} repetitions, medians",
        flush=True,
    )
    bench = Bench(params, args.quick)
    client = client_costs(bench, args.repeats)
    train_s = client["train_s"]
    how = f"{QUICK_STEPS} steps scaled to {FULL_STEPS}" if args.quick else f"{FULL_STEPS} steps"
    print(
        f"local training (McMahan CNN, E=5, B=10, 600 examples, 1 thread): {train_s:.2f} s ({how})",
        flush=True,
    )
    agg = aggregator_costs(bench, args.repeats)
    receive = agg["today_receive_s"]
    rows = [
        (
            "client: encode, share, seal",
            client["today_s"],
            client["prove_seal_s"],
            f"{100 * client['today_s'] / train_s:.2f}% -> "
            f"{100 * client['prove_seal_s'] / train_s:.2f}% of local training",
        ),
        (
            "client: proof and sharing only",
            float("nan"),
            client["prove_s"],
            f"{100 * client['prove_s'] / train_s:.2f}% of local training (goal <= 10%)",
        ),
        (
            "aggregator receive, seed share",
            receive,
            agg["receive_seed_s"],
            f"{agg['receive_seed_s'] / receive:.1f}x (open, expand seed, project, add)",
        ),
        (
            "aggregator receive, full share",
            receive,
            agg["receive_full_s"],
            f"{agg['receive_full_s'] / receive:.1f}x (open, parse, hash, project, add)",
        ),
        (
            "aggregator round close",
            float("nan"),
            agg["verify_s"],
            f"{agg['verify_s'] / receive:.2f}x today's open-check-add (goal <= 3x)",
        ),
        ("coordinator decide", float("nan"), agg["decide_s"], "per client, 3 verifier shares"),
    ]
    print(f"{'per client update':<32} | {'today ms':>9} | {'bounds ms':>9} | ratio")
    print("-" * 104)
    for label, a, b, note in rows:
        print(f"{label:<32} | {1000 * a:>9.2f} | {1000 * b:>9.2f} | {note}", flush=True)
    plaintext = 4 * D
    print(
        f"upload per update: today {agg['today_upload_bytes'] / plaintext:.2f}x, verified "
        f"bounds {agg['upload_bytes'] / plaintext:.2f}x the plaintext float32 bytes (goal <= "
        f"3.0x); verifier share {agg['verifier_bytes'] / 1000:.0f} kB per client and aggregator",
        flush=True,
    )
    share_bytes = os.urandom(4 * D)
    hashes = interleaved(
        {name: functools.partial(hashlib.new, name, share_bytes) for name in ("sha256", "blake2b")},
        args.repeats,
    )
    print(
        "hashing one 6.65 MB update share: "
        + ", ".join(f"{name} {1000 * s:.1f} ms" for name, s in hashes.items())
        + " (the protocol uses SHA-256)",
        flush=True,
    )
    swept = sweep(bench, (60, 124, 252, 508), max(3, args.repeats // 2 + 1))
    print(
        f"{'calls P':>8} {'wires':>6} | {'prove ms':>9} {'% train':>8} | {'verify ms':>9} "
        f"{'x receive':>9} | {'verifier kB':>11} | upload"
    )
    for row in swept:
        print(
            f"{row['calls']:>8} {row['wires']:>6} | {1000 * row['prove_s']:>9.1f} "
            f"{100 * row['prove_s'] / train_s:>7.2f}% | {1000 * row['verify_s']:>9.2f} "
            f"{row['verify_s'] / receive:>9.2f} | {row['verifier_bytes'] / 1000:>11.0f} | "
            f"{row['upload_ratio']:.3f}x",
            flush=True,
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "norm_bound": norm_bound,
                    "training": how,
                    "client": client,
                    "aggregator": agg,
                    "hash_s": hashes,
                    "sweep": swept,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
