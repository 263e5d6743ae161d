"""Verified bounds at d = 1,663,370, 2-of-3, next to local training and secure
aggregation without a proof, measured side by side in one run (single-threaded BLAS and
torch).

Each repetition runs every measured action once, in turn, so a change in machine load
hits both sides of a ratio alike; the tables give medians over the repetitions.

"No proof" is the secure pipeline as it was before verified bounds (issue 12), rebuilt
from today's primitives (``secure_parts.NoProofBaseline``): encode, plain 2-of-3 Shamir,
HPKE per share; open, range check, add. The contribution is what a client sends: an
update clipped to the norm bound 10 (the CLI's default), encoded by ``ContributionLayout``
(B = 1459, the largest sound integer norm bound in GF(2^31 - 1)).

* client, per update: no proof's encode + share + seal, and verified bounds'
  ``prove_contribution`` (alone, and with sealing: ``seal_contribution``), as shares of
  one local training of McMahan et al.'s CNN (E = 5, B = 10, 600 MNIST examples); goal:
  the proof within 10% of local training;
* aggregator at receive, per share: no proof's open + check + add, and verified bounds'
  open + parse + ``prepare_share`` (seed expansion or part hash, κ wraparound
  projections) + add;
* aggregator at round close, per share: ``verifier_share``; goal: at most 3x no proof's
  open-check-add;
* coordinator, per client: ``decide`` over 3 verifier shares;
* upload bytes against the plaintext float32 update and no proof's 3.0x; goal: <= 3.0x;
* SHA-256 against BLAKE2b on one update share (the part hash);
* a sweep over the norm gadget's calls P: prover time, verifier time and share size.

``--quick`` times 12 training steps per repetition instead of 300 and scales up (the
output says so).

Run: PYTHONPATH=src .venv/bin/python benchmarks/verified_bounds.py [--quick] [--out results.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS

import argparse
import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from secure_parts import NoProofBaseline, interleaved, medians

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.envelope import ShareContext, open_sealed
from veilfl.crypto.keys import generate_keypair
from veilfl.ml.datasets import load_mnist
from veilfl.ml.models import McMahanCNN
from veilfl.ml.training import TrainConfig, train_local
from veilfl.privacy.clipping import clip_l2
from veilfl.secagg.bounds import (
    BoundsParameters,
    ContributionShare,
    PreparedShare,
    decide,
    prepare_share,
    prove_contribution,
    verifier_share,
)
from veilfl.secagg.bounds_parameters import GRINDING_TRIALS
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import (
    ContributionLayout,
    SealedShare,
    contribution_binding,
    seal_contribution,
)

D = 1_663_370
THRESHOLD, AGGREGATORS = 2, 3
NORM_BOUND = 10.0  # the CLI's default --norm-bound
RUN, CLIENT = "bench", "c0"
BINDING = contribution_binding(RUN, 1, CLIENT)
FULL_STEPS = 5 * 60  # E = 5 epochs of 600 examples in batches of 10
QUICK_STEPS = 12


def _median_seconds(actions: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    return medians(interleaved(actions, repeats))


class Bench:
    """Everything both pipelines need, built once."""

    def __init__(self, quick: bool) -> None:
        self.config = SecureAggregationConfig(
            threshold=THRESHOLD,
            num_aggregators=AGGREGATORS,
            norm_bound=NORM_BOUND,
            max_samples_per_client=600,
        )
        self.layout = ContributionLayout(D, self.config)
        self.params = self.layout.bounds
        self.keys = [generate_keypair() for _ in range(AGGREGATORS)]
        self.public = [k.public_key for k in self.keys]
        self.rng = CsprngStream()
        self.baseline = NoProofBaseline(self.layout, self.public)
        update = np.random.default_rng(1).normal(0, 0.01, D)
        self.weighted = clip_l2(update, clip_norm=NORM_BOUND).vector
        self.measurement = self.encode()
        self.contexts = [
            ShareContext(run_id=RUN, round_id=1, client_id=CLIENT, aggregator_index=j)
            for j in range(1, AGGREGATORS + 1)
        ]
        data = load_mnist().train.subset(range(600))
        steps = QUICK_STEPS if quick else None
        self.train_config = TrainConfig(
            learning_rate=0.05, epochs=1 if quick else 5, batch_size=10, seed=0, max_batches=steps
        )
        self.train_scale = FULL_STEPS / QUICK_STEPS if quick else 1.0
        self.data = data

    def train(self) -> None:
        train_local(McMahanCNN(), self.data, self.train_config)

    def encode(self) -> npt.NDArray[np.int64]:
        return self.layout.encode(self.weighted, weight=1.0, loss=0.5, unclipped=None, rng=self.rng)

    def seal_no_proof(self) -> list[bytes]:
        shares = self.baseline.share(self.encode(), rng=self.rng)
        return self.baseline.seal(shares, run_id=RUN, round_id=1, client_id=CLIENT)

    def prove(self, params: BoundsParameters | None = None) -> list[ContributionShare]:
        return prove_contribution(
            self.measurement,
            params=params or self.params,
            threshold=THRESHOLD,
            num_shares=AGGREGATORS,
            binding=BINDING,
            rng=self.rng,
        )

    def encode_prove_seal(self) -> list[SealedShare]:
        return seal_contribution(
            self.encode(),
            layout=self.layout,
            public_keys=self.public,
            run_id=RUN,
            round_id=1,
            client_id=CLIENT,
            rng=self.rng,
        )


def client_costs(bench: Bench, repeats: int) -> dict[str, float]:
    costs = _median_seconds(
        {
            "train_s": bench.train,
            "no_proof_s": bench.seal_no_proof,
            "prove_s": bench.prove,
            "prove_seal_s": bench.encode_prove_seal,
        },
        repeats,
    )
    costs["train_s"] *= bench.train_scale
    return costs


def aggregator_costs(bench: Bench, repeats: int) -> dict[str, float]:
    params = bench.params
    sealed = bench.encode_prove_seal()
    envelopes = [s.envelope for s in sealed]
    no_proof = bench.seal_no_proof()
    running = np.zeros(params.measurement_length, dtype=np.uint64)
    prepared: dict[int, PreparedShare] = {}

    def receive_no_proof() -> None:
        key = bench.keys[1].private_key
        payload = bench.baseline.open(
            no_proof[1], key, index=2, run_id=RUN, round_id=1, client_id=CLIENT
        )
        np.add(running, bench.baseline.check(payload), out=running)

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
    costs = _median_seconds(
        {
            "no_proof_receive_s": receive_no_proof,
            "receive_seed_s": functools.partial(receive, 1),
            "receive_full_s": functools.partial(receive, 2),
            "verify_s": lambda: verifier_share(prepared[2], query_seed=query_seed, params=params),
            "decide_s": lambda: decide(answers, params=params, threshold=THRESHOLD),
        },
        repeats,
    )
    costs["upload_bytes"] = sum(len(e) for e in envelopes)
    costs["no_proof_upload_bytes"] = sum(len(e) for e in no_proof)
    costs["verifier_bytes"] = len(answers[0].to_bytes())
    return costs


def sweep(bench: Bench, calls: tuple[int, ...], repeats: int) -> list[dict[str, float]]:
    rows = []
    for p in calls:
        params = BoundsParameters(
            dimension=D,
            norm_bound=bench.params.norm_bound,
            extra_ranges=bench.params.extra_ranges,
            wraparound_checks=bench.params.wraparound_checks,
            calls=p,
        )
        shares = bench.prove(params)
        prepared = prepare_share(
            shares[1], params=params, threshold=THRESHOLD, num_shares=AGGREGATORS, binding=BINDING
        )
        seed = os.urandom(32)
        costs = _median_seconds(
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
                **costs,
                "verifier_bytes": len(
                    verifier_share(prepared, query_seed=seed, params=params).to_bytes()
                ),
                "upload_ratio": (AGGREGATORS - THRESHOLD + 1) * params.input_length / D,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="time 12 training steps, scaled")
    parser.add_argument("--repeats", type=int, default=5, help="repetitions (medians)")
    parser.add_argument("--no-sweep", action="store_true", help="skip the sweep over P")
    parser.add_argument("--out", type=Path, default=None, help="JSON results path")
    args = parser.parse_args()
    torch.set_num_threads(1)
    bench = Bench(args.quick)
    params = bench.params
    print(
        f"d = {D}, {THRESHOLD}-of-{AGGREGATORS}, B = {params.norm_bound} (the largest sound B "
        f"at p = 2^31 - 1), b = {params.wraparound_bound}, κ = {params.wraparound_checks}, "
        f"k = {params.query_points}, P = {params.norm_gadget.calls} calls x "
        f"{params.norm_gadget.wires} wires; soundness error {params.soundness_error():.2g} "
        f"(1 trial), {params.soundness_error(trials=GRINDING_TRIALS):.2g} (2^64 trials); "
        f"at most {params.max_summands()} summands; norm bound {NORM_BOUND}, scale "
        f"{bench.layout.scale:.1f} (step {1 / bench.layout.scale:.3g}); load average "
        f"{os.getloadavg()[0]:.1f}; {args.repeats} repetitions, medians",
        flush=True,
    )
    client = client_costs(bench, args.repeats)
    train_s = client["train_s"]
    how = f"{QUICK_STEPS} steps scaled to {FULL_STEPS}" if args.quick else f"{FULL_STEPS} steps"
    print(
        f"local training (McMahan CNN, E=5, B=10, 600 examples, 1 thread): {train_s:.2f} s ({how})",
        flush=True,
    )
    agg = aggregator_costs(bench, args.repeats)
    receive = agg["no_proof_receive_s"]
    rows = [
        (
            "client: encode, (prove,) share, seal",
            client["no_proof_s"],
            client["prove_seal_s"],
            f"{100 * client['no_proof_s'] / train_s:.2f}% -> "
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
            f"{agg['verify_s'] / receive:.2f}x no proof's open-check-add (goal <= 3x)",
        ),
        ("coordinator decide", float("nan"), agg["decide_s"], "per client, 3 verifier shares"),
    ]
    print(f"{'per client update':<36} | {'no proof ms':>11} | {'bounds ms':>9} | ratio")
    print("-" * 108)
    for label, a, b, note in rows:
        print(f"{label:<36} | {1000 * a:>11.2f} | {1000 * b:>9.2f} | {note}", flush=True)
    plaintext = 4 * D
    print(
        f"upload per update: no proof {agg['no_proof_upload_bytes'] / plaintext:.2f}x, verified "
        f"bounds {agg['upload_bytes'] / plaintext:.2f}x the plaintext float32 bytes (goal <= "
        f"3.0x); verifier share {agg['verifier_bytes'] / 1000:.0f} kB per client and aggregator",
        flush=True,
    )
    share_bytes = os.urandom(4 * D)
    hashes = _median_seconds(
        {name: functools.partial(hashlib.new, name, share_bytes) for name in ("sha256", "blake2b")},
        args.repeats,
    )
    print(
        "hashing one 6.65 MB update share: "
        + ", ".join(f"{name} {1000 * s:.1f} ms" for name, s in hashes.items())
        + " (the protocol uses SHA-256)",
        flush=True,
    )
    swept = (
        [] if args.no_sweep else sweep(bench, (60, 124, 252, 508), max(3, args.repeats // 2 + 1))
    )
    if swept:
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
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "norm_bound": params.norm_bound,
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
