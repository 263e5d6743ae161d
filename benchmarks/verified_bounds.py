"""Verified bounds at d = 1,663,370, 2-of-3, next to local training and today's secure
aggregation, measured side by side in one run (single-threaded BLAS and torch).

It prints, per client update:

* client: today's encode + share + seal (``seal_update``) and verified bounds' proof +
  sharing (``prove_contribution``) + sealing, each as a share of one local training of
  McMahan et al.'s CNN (E = 5, B = 10, 600 MNIST examples), measured in the same run;
  goal: the proof within 10% of local training;
* aggregator at receive, per share: today's open + check + add
  (``AggregatorRound.receive``) and verified bounds' open + parse + ``prepare_share``
  (seed expansion, public part, κ wraparound projections) + add;
* aggregator at round close, per share: ``verifier_share``; goal: at most 3x today's
  open-check-add;
* coordinator per client: ``decide`` over 3 verifier shares;
* upload bytes against the plaintext float32 update and today's 3.0x; goal: <= 3.0x;
* a sweep over the norm gadget's calls P: prover, verifier and verifier-share size.

``--quick`` times 12 training steps instead of 300 and scales up (the output says so).

Run: OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/verified_bounds.py [--quick]
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
    decide,
    prepare_share,
    prove_contribution,
    verifier_share,
)
from veilfl.secagg.bounds_messages import ContributionShare
from veilfl.secagg.bounds_parameters import GRINDING_TRIALS, BoundsParameters
from veilfl.secagg.client_shares import seal_update
from veilfl.secagg.config import EXTRA_COORDINATES, SecureAggregationConfig

D = 1_663_370
THRESHOLD, AGGREGATORS = 2, 3
EXTRA_RANGES = ((0, 1024), (0, 1024), (0, 1))  # weight, weighted loss, within-bound bit
BINDING = b"bench-run/round-1/client-0"
FULL_STEPS = 5 * 60  # E = 5 epochs of 600 examples in batches of 10


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


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    action()  # warm up: first-touch page faults and caches are not protocol cost
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def local_training_seconds(quick: bool) -> tuple[float, str]:
    """McMahan et al.'s CNN, E = 5, B = 10, 600 examples; with ``quick``, 12 steps scaled."""
    data = load_mnist().train.subset(range(600))
    if quick:
        config = TrainConfig(learning_rate=0.05, epochs=1, batch_size=10, seed=0, max_batches=12)
        train_local(McMahanCNN(), data, config)  # warm-up
        started = time.perf_counter()
        train_local(McMahanCNN(), data, config)
        return (time.perf_counter() - started) * FULL_STEPS / 12, "12 steps, scaled to 300"
    config = TrainConfig(learning_rate=0.05, epochs=5, batch_size=10, seed=0)
    started = time.perf_counter()
    train_local(McMahanCNN(), data, config)
    return time.perf_counter() - started, "300 steps"


def honest_measurement(params: BoundsParameters) -> np.ndarray:
    """A Gaussian update scaled to 95% of the norm bound, rounded, and in-range extras."""
    rng = np.random.default_rng(0)
    direction = rng.normal(size=params.dimension)
    update = np.round(direction * 0.95 * params.norm_bound / np.linalg.norm(direction))
    update = update.astype(np.int64)
    while int(update @ update) > params.norm_bound**2:
        update[np.argmax(np.abs(update))] -= np.sign(update[np.argmax(np.abs(update))])
    return np.concatenate([update, np.array([600, 300, 1], dtype=np.int64)])


def today(repeats: int) -> dict[str, float]:
    """Secure aggregation as it is: the client's seal_update, one aggregator's receive."""
    config = SecureAggregationConfig(max_clients=100, max_samples_per_client=600)
    keys = [generate_keypair() for _ in range(AGGREGATORS)]
    update = np.random.default_rng(1).normal(0, 0.01, D).astype(np.float32)
    rng = CsprngStream()

    def sealed(client_id: str) -> list:  # type: ignore[type-arg]
        return seal_update(
            update,
            num_samples=600,
            loss=0.5,
            config=config,
            public_keys=[k.public_key for k in keys],
            run_id="bench",
            round_id=1,
            client_id=client_id,
            rng=rng,
        )

    client_s = median_seconds(lambda: sealed("timing"), repeats)
    envelopes = [sealed(f"r{i}") for i in range(repeats + 1)]
    state = AggregatorRound(
        run_id="bench",
        round_id=1,
        index=2,
        vector_length=D + EXTRA_COORDINATES,
        field=config.encoding().field,
        private_key=keys[1].private_key,
        archive=_NoArchive(),
    )
    names = iter(range(repeats + 1))

    def receive() -> object:
        i = next(names)
        return state.receive(f"r{i}", envelopes[i][1].envelope)

    receive_s = median_seconds(receive, repeats)
    upload = sum(len(s.envelope) for s in envelopes[0])
    return {"client_s": client_s, "receive_s": receive_s, "upload_bytes": upload}


def verified(params: BoundsParameters, repeats: int) -> dict[str, float]:
    """Verified bounds: prove + seal, open + prepare + add, verifier share, decide."""
    keys = [generate_keypair() for _ in range(AGGREGATORS)]
    measurement = honest_measurement(params)
    rng = CsprngStream()
    contexts = [
        ShareContext(run_id="bench", round_id=1, client_id="c0", aggregator_index=j)
        for j in range(1, AGGREGATORS + 1)
    ]

    def prove() -> list[ContributionShare]:
        return prove_contribution(
            measurement,
            params=params,
            threshold=THRESHOLD,
            num_shares=AGGREGATORS,
            binding=BINDING,
            rng=rng,
        )

    def client() -> list[bytes]:
        return [
            seal(
                share.to_bytes(),
                keys[share.index - 1].public_key,
                context=contexts[share.index - 1],
            )
            for share in prove()
        ]

    prove_s = median_seconds(prove, repeats)
    client_s = median_seconds(client, repeats)
    envelopes = client()
    running = np.zeros(params.measurement_length, dtype=np.uint64)
    prepared = {}

    def receive(index: int) -> None:
        opened = open_sealed(
            envelopes[index - 1], keys[index - 1].private_key, context=contexts[index - 1]
        )
        share = ContributionShare.from_bytes(opened)
        prepared[index] = prepare_share(
            share, params=params, threshold=THRESHOLD, num_shares=AGGREGATORS, binding=BINDING
        )

    receive_seeded_s = median_seconds(lambda: receive(1), repeats)
    receive_full_s = median_seconds(lambda: receive(2), repeats)
    receive(3)
    add_s = median_seconds(
        lambda: np.add(running, prepared[2].measurement_share, out=running), repeats
    )
    query_seed = os.urandom(32)
    verifier_share(prepared[1], query_seed=query_seed, params=params)  # the round's query setup
    verify_s = median_seconds(
        lambda: verifier_share(prepared[2], query_seed=query_seed, params=params), repeats
    )
    answers = [verifier_share(prepared[j], query_seed=query_seed, params=params) for j in (1, 2, 3)]
    decide_s = median_seconds(lambda: decide(answers, params=params, threshold=THRESHOLD), repeats)
    assert decide(answers, params=params, threshold=THRESHOLD).valid
    return {
        "prove_s": prove_s,
        "client_s": client_s,
        "receive_seeded_s": receive_seeded_s + add_s,
        "receive_full_s": receive_full_s + add_s,
        "verify_s": verify_s,
        "decide_s": decide_s,
        "upload_bytes": sum(len(e) for e in envelopes),
        "verifier_bytes": len(answers[0].to_bytes()),
    }


def sweep_one(norm_bound: int, calls: int, repeats: int) -> dict[str, float]:
    params = BoundsParameters(
        dimension=D, norm_bound=norm_bound, extra_ranges=EXTRA_RANGES, calls=calls
    )
    measurement = honest_measurement(params)
    rng = CsprngStream()

    def prove() -> list[ContributionShare]:
        return prove_contribution(
            measurement,
            params=params,
            threshold=THRESHOLD,
            num_shares=AGGREGATORS,
            binding=BINDING,
            rng=rng,
        )

    prove_s = median_seconds(prove, repeats)
    prepared = prepare_share(
        prove()[1], params=params, threshold=THRESHOLD, num_shares=AGGREGATORS, binding=BINDING
    )
    seed = os.urandom(32)
    verify_s = median_seconds(
        lambda: verifier_share(prepared, query_seed=seed, params=params), repeats
    )
    answer = verifier_share(prepared, query_seed=seed, params=params)
    return {
        "calls": params.norm_gadget.calls,
        "wires": params.norm_gadget.wires,
        "prove_s": prove_s,
        "verify_s": verify_s,
        "verifier_bytes": len(answer.to_bytes()),
        "upload_ratio": THRESHOLD * params.input_length * 4 / (4 * D),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="time 12 training steps, scaled")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions (median)")
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
        f"at most {params.max_summands()} summands",
        flush=True,
    )
    train_s, how = local_training_seconds(args.quick)
    print(
        f"local training (McMahan CNN, E=5, B=10, 600 examples, 1 thread): {train_s:.2f} s ({how})",
        flush=True,
    )
    base = today(args.repeats)
    ours = verified(params, max(3, args.repeats // 2 + 1))
    plaintext = 4 * D
    rows = [
        (
            "client per update",
            base["client_s"],
            ours["client_s"],
            f"{100 * base['client_s'] / train_s:.2f}% | {100 * ours['client_s'] / train_s:.2f}% "
            f"of training (proof alone {100 * ours['prove_s'] / train_s:.2f}%; goal <= 10%)",
        ),
        (
            "aggregator receive, seed share",
            base["receive_s"],
            ours["receive_seeded_s"],
            f"{ours['receive_seeded_s'] / base['receive_s']:.1f}x (open, expand, project, add)",
        ),
        (
            "aggregator receive, full share",
            base["receive_s"],
            ours["receive_full_s"],
            f"{ours['receive_full_s'] / base['receive_s']:.1f}x (open, parse, hash, project, add)",
        ),
        (
            "aggregator round close",
            base["receive_s"],
            ours["verify_s"],
            f"{ours['verify_s'] / base['receive_s']:.2f}x today's receive (goal <= 3x)",
        ),
        ("coordinator decide per client", float("nan"), ours["decide_s"], "3 verifier shares"),
    ]
    print(f"{'per client':<32} | {'today ms':>9} | {'bounds ms':>9} | ratio")
    print("-" * 100)
    for label, a, b, note in rows:
        print(f"{label:<32} | {1000 * a:>9.2f} | {1000 * b:>9.2f} | {note}", flush=True)
    print(
        f"upload per update: today {base['upload_bytes'] / plaintext:.2f}x, verified bounds "
        f"{ours['upload_bytes'] / plaintext:.2f}x the plaintext float32 bytes (goal <= 3.0x); "
        f"verifier share {ours['verifier_bytes'] / 1000:.0f} kB per client per aggregator",
        flush=True,
    )
    share_bytes = os.urandom(4 * D)
    hashes = {
        name: median_seconds(functools.partial(hashlib.new, name, share_bytes), 5)
        for name in ("sha256", "blake2b")
    }
    print(
        "hashing one 6.65 MB update share: "
        + ", ".join(f"{name} {1000 * s:.1f} ms" for name, s in hashes.items())
        + " (the protocol uses SHA-256)",
        flush=True,
    )
    calls = (60, 124, 252, 508)
    swept = [sweep_one(norm_bound, p, max(3, args.repeats // 2 + 1)) for p in calls]
    print(
        f"{'calls P':>8} {'wires':>6} | {'prove ms':>9} {'% train':>8} | {'verify ms':>9} | "
        f"{'verifier kB':>11} | upload"
    )
    for row in swept:
        print(
            f"{row['calls']:>8} {row['wires']:>6} | {1000 * row['prove_s']:>9.1f} "
            f"{100 * row['prove_s'] / train_s:>7.2f}% | {1000 * row['verify_s']:>9.2f} | "
            f"{row['verifier_bytes'] / 1000:>11.0f} | {row['upload_ratio']:.3f}x",
            flush=True,
        )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "local_training_s": train_s,
                    "training": how,
                    "norm_bound": norm_bound,
                    "today": base,
                    "verified_bounds": ours,
                    "sweep": swept,
                    "hash_s": hashes,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
