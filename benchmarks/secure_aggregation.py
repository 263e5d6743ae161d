"""Secure aggregation with verified bounds, next to plaintext FedAvg and the same
pipeline without a proof, measured side by side in one run.

Three pipelines run in process (the simulator's setting: no network), on the same
updates and the same encoding:

* **plaintext**: the client encodes its update with the wire codec; the coordinator
  decodes it and adds it to a running sum;
* **no proof**: the secure pipeline as it was before verified bounds (issue 12), rebuilt
  from today's primitives (``secure_parts.NoProofBaseline``): encode, plain 2-of-3
  Shamir (3 full shares), HPKE per share; each aggregator opens, range-checks and adds;
  the coordinator reconstructs from 2. Its costs are what issue 10 quotes (client 25 ms,
  aggregator 2.1 ms per update at d = 1,663,370 on a quiet machine);
* **verified** (today's pipeline): the client encodes, proves its bounds, shares 2-of-3
  (aggregator 1 gets a 32-byte seed) and seals (``seal_contribution``); each aggregator
  opens and checks its share (part hash, κ wraparound projections) and adds it; at round
  close each answers one query per client, commits to the participant list and releases
  its sum against a quorum's certificate; the coordinator decides each client's
  validity and reconstructs. The round runs the real coordinator job
  (``SecureAggregation``) against in-process aggregators.

It prints, for each model size d:

1. per update, medians of interleaved repetitions: each side's cost part by part
   (client: encode, proof, sharing, sealing; aggregator, per share: open, parse, check,
   sum, and the verify answer at round close; coordinator: decide), with the ratio of
   verified to no proof, and totals against plaintext and against one local training of
   McMahan et al.'s CNN (E = 5, B = 10, 600 examples, one thread, same run);
2. per round of n clients: whole-round times of the three pipelines, the verified
   round's split by phase, the overhead with every client's training counted, and the
   largest error of the reconstructed sum against the exact float sum (the encoding's
   rounding step is 1/scale per coordinate and client);
3. per round, Flower's SecAgg+ on the same d and n in Flower's simulation engine
   (``benchmarks/flower_secaggplus.py``, run with ``--flower-python``, the interpreter
   of a virtual environment with the ``flower`` extra; flwr pins other versions of
   packages veilfl uses, so it gets its own environment): its fit round's compute, the
   server's unmasking plus every client's time in ``secaggplus_mod``;
4. the goals of issue 20, as ratios measured in this run: the verified round against
   plaintext, the aggregator's work per update against the no-proof open-check-add,
   the client's proof, sharing and sealing against Flower's SecAgg+ client, and the
   upload against the float32 update;
5. request signing: an Ed25519 signature over the SHA-256 of each share upload (client)
   and its verification (aggregator), at the verified envelopes' sizes.

Run: OPENBLAS_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/secure_aggregation.py
[--quick] [--dims D ...] [--clients N ...] [--repeats R] [--flower-python PATH]
[--out results.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads BLAS

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from secure_parts import NoProofBaseline, PartTimer

from veilfl.auth.identity import Identity
from veilfl.auth.request_verifier import RequestVerifier
from veilfl.auth.signed_request import SignedRequest, sign_request
from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.keys import AggregatorKeyPair, generate_keypair
from veilfl.crypto.seeded_shares import SeededSharing
from veilfl.crypto.shamir import Share
from veilfl.crypto.wraparound import WraparoundChecks
from veilfl.ml.datasets import load_mnist
from veilfl.ml.models import McMahanCNN
from veilfl.ml.training import TrainConfig, train_local
from veilfl.privacy.clipping import clip_l2
from veilfl.protocol.cohort import ClosedCohort
from veilfl.protocol.effects import (
    AggregationStalled,
    CollectAggregateShares,
    CollectCommitments,
    CollectHoldings,
    CollectVerifierShares,
)
from veilfl.protocol.messages import ClientReport
from veilfl.protocol.secure_aggregation import SecureAggregation
from veilfl.secagg import aggregator_state, bounds_prover, bounds_verifier, contribution
from veilfl.secagg.aggregator_state import AggregatorRound, InMemoryShareArchive, RoundKeys
from veilfl.secagg.bounds_messages import ContributionShare, VerifierShare
from veilfl.secagg.bounds_verifier import decide
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout, seal_contribution
from veilfl.sim.in_process_aggregators import InProcessAggregators
from veilfl.strategy.aggregate import WeightedSum
from veilfl.wire.tensor_codec import decode_weights, encode_weights

RUN = "bench"
NORM_BOUND = 10.0  # the CLI's default --norm-bound
SAMPLES = 600  # every client weighs 1: num_samples = max_samples_per_client
DISTINCT_UPDATES = 4  # updates are reused cyclically across clients
FULL_STEPS = 5 * 60  # E = 5 epochs of 600 examples in batches of 10
QUICK_STEPS = 30
ISSUE_10 = {"client_ms": 25.0, "aggregator_ms": 2.1, "d": 1_663_370}

CLIENT_PARTS = (
    ("encode", "encode (clip, scale, stochastic rounding)"),
    ("proof: check", "proof: measurement check (norm, ranges)"),
    ("proof: projections", "proof: κ wraparound projections"),
    ("proof: bits", "proof: bit decomposition"),
    ("proof: gadgets", "proof: FLP gadget proofs (norm, bits)"),
    ("proof: hashes", "proof: Fiat-Shamir parts and seed (SHA-256)"),
    ("sharing: seeds", "sharing: seed expansion (AES-CTR)"),
    ("sharing: deal", "sharing: dealing the full shares"),
    ("sealing: bytes", "sealing: serialising the shares"),
    ("sealing: hpke", "sealing: HPKE, one envelope per aggregator"),
    ("other", "other (copies, concatenation, retries)"),
)
AGGREGATOR_PARTS = (
    ("open", "open (HPKE)"),
    ("parse", "parse"),
    ("check: seed", "check: seed expansion (seed share)"),
    ("check: part", "check: part hash (full shares, SHA-256)"),
    ("check: rows", "check: norm-gadget rows"),
    ("check: projections", "check: κ wraparound projections"),
    ("sum", "sum (add into the running sum)"),
    ("other", "other (archive, bookkeeping)"),
)
VERIFY_PARTS = (
    ("verify: parse", "verify: parse the kept share"),
    ("verify: rebuild", "verify: rebuild (expand, rows)"),
    ("verify: queries", "verify: FLP queries (the answer)"),
    ("other", "other"),
)


def _client_timer() -> PartTimer:
    timer = PartTimer()
    timer.watch(bounds_prover, "_check_measurement", "proof: check")
    timer.watch(WraparoundChecks, "project", "proof: projections")
    timer.watch(bounds_prover, "_encode_bits", "proof: bits")
    timer.watch(bounds_prover, "prove_gadget", "proof: gadgets")
    timer.watch(bounds_prover, "part", "proof: hashes")
    timer.watch(bounds_prover, "joint_seed", "proof: hashes")
    timer.watch(bounds_prover, "expand_seed", "sharing: seeds")
    timer.watch(SeededSharing, "deal", "sharing: deal")
    timer.watch(ContributionShare, "to_bytes", "sealing: bytes")
    timer.watch(contribution, "seal", "sealing: hpke")
    return timer


def _aggregator_timer() -> PartTimer:
    timer = PartTimer()
    timer.watch(aggregator_state, "open_sealed", "open")
    timer.watch(ContributionShare, "from_bytes", "parse")
    timer.watch(bounds_verifier, "_expand", "check: seed")
    timer.watch(bounds_verifier, "part", "check: part")
    timer.watch(bounds_verifier, "_norm_rows", "check: rows")
    timer.watch(WraparoundChecks, "project", "check: projections")
    timer.watch(AggregatorRound, "_add", "sum")
    return timer


def _verify_timer() -> PartTimer:
    timer = PartTimer()
    timer.watch(ContributionShare, "from_bytes", "verify: parse")
    timer.watch(aggregator_state, "restore_prepared", "verify: rebuild")
    timer.watch(aggregator_state, "verifier_share", "verify: queries")
    return timer


def _with_other(parts: dict[str, float], total: float) -> dict[str, float]:
    out = dict(parts)
    out["other"] = max(total - sum(parts.values()), 0.0)
    out["total"] = total
    return out


def local_training_seconds(steps: int) -> float:
    """McMahan et al.'s CNN, E = 5, B = 10, on 600 MNIST examples (one client's work),
    timed over ``steps`` SGD steps and scaled to the full 300."""
    data = load_mnist().train.subset(range(600))
    quick = steps < FULL_STEPS
    config = TrainConfig(
        learning_rate=0.05,
        epochs=1 if quick else 5,
        batch_size=10,
        seed=0,
        max_batches=steps if quick else None,
    )
    started = time.perf_counter()
    train_local(McMahanCNN(), data, config)
    return (time.perf_counter() - started) * FULL_STEPS / steps


def _updates(d: int, layout: ContributionLayout) -> list[npt.NDArray[np.float64]]:
    """Weighted updates (weight 1), clipped to the norm bound as the hand-in does."""
    rng = np.random.default_rng(d)
    raw = [rng.normal(0, 0.01, d) for _ in range(DISTINCT_UPDATES)]
    return [clip_l2(u, clip_norm=layout.config.norm_bound).vector for u in raw]


# ------------------------------------------------------------------ per update
class PerUpdate:
    """One client's update through the three pipelines, part by part."""

    def __init__(self, layout: ContributionLayout, keys: list[AggregatorKeyPair]) -> None:
        self.layout = layout
        self.keys = keys
        self.public = [k.public_key for k in keys]
        self.baseline = NoProofBaseline(layout, self.public)
        self.update = _updates(layout.dimension, layout)[0]
        self.update32 = self.update.astype(np.float32)
        self.rng = CsprngStream()
        peers = {j: k.signing_public_bytes for j, k in enumerate(keys, start=1)}
        self.rounds = [
            AggregatorRound(
                run_id=RUN,
                round_id=1,
                index=j,
                layout=layout,
                keys=RoundKeys(private_key=k.private_key, sign=k.sign, peers=peers),
                archive=InMemoryShareArchive(),
            )
            for j, k in enumerate(keys, start=1)
        ]
        self.query_seed = os.urandom(32)
        self.client_timer = _client_timer()
        self.aggregator_timer = _aggregator_timer()
        self.verify_timer = _verify_timer()
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.recording = False  # off while warming up

    def _record(self, prefix: str, parts: dict[str, float]) -> None:
        if not self.recording:
            return
        for name, seconds in parts.items():
            self.samples[f"{prefix}/{name}"].append(seconds)

    def repetition(self, client_id: str) -> None:
        """Every measured action once, in turn."""
        m = self.layout.config.num_aggregators
        # plaintext: the client's wire codec, the coordinator's decode and running sum
        t0 = time.perf_counter()
        body = encode_weights({"w": self.update32}, metadata={"num_samples": str(SAMPLES)})
        t1 = time.perf_counter()
        decoded, _ = decode_weights(body)
        running = WeightedSum(self.layout.dimension)
        running.add(decoded["w"], weight=1.0)
        t2 = time.perf_counter()
        self._record("plaintext client", {"total": t1 - t0})
        self._record("plaintext coordinator", {"total": t2 - t1})

        # no proof: encode, Shamir, HPKE; open, range check, add
        t0 = time.perf_counter()
        weighted = clip_l2(self.update, clip_norm=self.layout.config.norm_bound).vector
        measurement = self.layout.encode(
            weighted, weight=1.0, loss=0.5, unclipped=None, rng=self.rng
        )
        t1 = time.perf_counter()
        shares = self.baseline.share(measurement, rng=self.rng)
        t2 = time.perf_counter()
        envelopes = self.baseline.seal(shares, run_id=RUN, round_id=1, client_id=client_id)
        t3 = time.perf_counter()
        self._record(
            "no proof client",
            {"encode": t1 - t0, "sharing: deal": t2 - t1, "sealing: hpke": t3 - t2}
            | {"total": t3 - t0},
        )
        total = np.zeros(self.layout.measurement_length, dtype=np.uint64)
        opened = checked = summed = 0.0
        for j, envelope in enumerate(envelopes, start=1):
            t0 = time.perf_counter()
            payload = self.baseline.open(
                envelope,
                self.keys[j - 1].private_key,
                index=j,
                run_id=RUN,
                round_id=1,
                client_id=client_id,
            )
            t1 = time.perf_counter()
            values = self.baseline.check(payload)
            t2 = time.perf_counter()
            total += values
            t3 = time.perf_counter()
            opened, checked, summed = opened + t1 - t0, checked + t2 - t1, summed + t3 - t2
        self._record(
            "no proof aggregator",
            {"open": opened / m, "parse": checked / m, "sum": summed / m}
            | {"total": (opened + checked + summed) / m},
        )

        # verified: encode, prove, share, seal; open and check, sum; verify; decide
        with self.client_timer.timing() as parts:
            t0 = time.perf_counter()
            weighted = clip_l2(self.update, clip_norm=self.layout.config.norm_bound).vector
            measurement = self.layout.encode(
                weighted, weight=1.0, loss=0.5, unclipped=None, rng=self.rng
            )
            t1 = time.perf_counter()
            sealed = seal_contribution(
                measurement,
                layout=self.layout,
                public_keys=self.public,
                run_id=RUN,
                round_id=1,
                client_id=client_id,
                rng=self.rng,
            )
            t2 = time.perf_counter()
        self._record("verified client", _with_other({"encode": t1 - t0, **parts}, t2 - t0))
        for share in sealed:
            state = self.rounds[share.aggregator_index - 1]
            with self.aggregator_timer.timing() as parts:
                t0 = time.perf_counter()
                state.receive(client_id, share.envelope)
                t1 = time.perf_counter()
            kind = "seed" if share.aggregator_index < self.layout.config.threshold else "full"
            self._record(f"verified aggregator {kind}", _with_other(dict(parts), t1 - t0))
        answers: list[VerifierShare] = []
        for state in self.rounds:
            with self.verify_timer.timing() as parts:
                t0 = time.perf_counter()
                answers.append(state.verify([client_id], self.query_seed)[client_id])
                t1 = time.perf_counter()
            self._record("verified verify", _with_other(dict(parts), t1 - t0))
        t0 = time.perf_counter()
        verdict = decide(answers, params=self.layout.bounds, threshold=self.layout.config.threshold)
        t1 = time.perf_counter()
        if not verdict.valid:
            raise RuntimeError(f"An honest contribution failed verification: {verdict.reason}.")
        self._record("coordinator decide", {"total": t1 - t0})
        self.upload_bytes = {
            "plaintext": len(body),
            "no proof": sum(len(e) for e in envelopes),
            "verified": sum(len(s.envelope) for s in sealed),
        }
        self.envelope_sizes = [len(s.envelope) for s in sealed]

    def medians(self) -> dict[str, float]:
        """Median seconds of every recorded part."""
        return {name: statistics.median(values) for name, values in self.samples.items()}


def _averaged_aggregator(med: dict[str, float], m: int, t: int) -> dict[str, float]:
    """Per share, averaged over the m aggregators (t - 1 hold a seed share)."""
    names = {k.split("/", 1)[1] for k in med if k.startswith("verified aggregator ")}
    out = {}
    for name in names:
        seed = med.get(f"verified aggregator seed/{name}", 0.0)
        full = med.get(f"verified aggregator full/{name}", 0.0)
        out[name] = ((t - 1) * seed + (m - t + 1) * full) / m
    return out


def per_update(d: int, config: SecureAggregationConfig, repeats: int) -> dict[str, Any]:
    layout = ContributionLayout(d, config)
    bench = PerUpdate(layout, [generate_keypair() for _ in range(config.num_aggregators)])
    bench.repetition("warm-up")  # first-touch page faults, the round's query bases
    bench.recording = True
    for i in range(repeats):
        bench.repetition(f"c{i}")
    med = bench.medians()
    return {
        "d": d,
        "medians_s": med,
        "aggregator_verified_s": _averaged_aggregator(
            med, config.num_aggregators, config.threshold
        ),
        "upload_bytes": bench.upload_bytes,
        "envelope_sizes": bench.envelope_sizes,
    }


def print_per_update(row: dict[str, Any], train_s: float, repeats: int) -> None:
    med: dict[str, float] = row["medians_s"]
    agg: dict[str, float] = row["aggregator_verified_s"]
    d = row["d"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{1000 * value:.2f}"

    def line(label: str, base: float | None, verified: float | None) -> None:
        ratio = f"{verified / base:.1f}x" if base and verified is not None and base > 0 else ""
        print(f"  {label:<46} {ms(base):>10} {ms(verified):>11} {ratio:>9}")

    print(
        f"\nper update at d = {d:,} (medians of {repeats} interleaved repetitions; "
        "ms; ratio = verified / no proof)"
    )
    print(f"  {'':<46} {'no proof':>10} {'verified':>11} {'ratio':>9}")
    print("  client")
    for key, label in CLIENT_PARTS:
        line(label, med.get(f"no proof client/{key}"), med.get(f"verified client/{key}", 0.0))
    client_base, client_verified = med["no proof client/total"], med["verified client/total"]
    line("total, per update", client_base, client_verified)
    print("  aggregator, per share (mean over the 3 aggregators)")
    for key, label in AGGREGATOR_PARTS:
        line(label, med.get(f"no proof aggregator/{key}"), agg.get(key, 0.0))
    agg_base, agg_receive = med["no proof aggregator/total"], agg["total"]
    line("total at receive", agg_base, agg_receive)
    for key, label in VERIFY_PARTS:
        line(label, None, med.get(f"verified verify/{key}", 0.0))
    verify = med["verified verify/total"]
    line("verify answer, total (at round close)", None, verify)
    line("receive + verify answer", agg_base, agg_receive + verify)
    print("  coordinator")
    line("decide, per client (3 answers)", None, med["coordinator decide/total"])
    plain_client, plain_coord = med["plaintext client/total"], med["plaintext coordinator/total"]
    uploads = row["upload_bytes"]
    print(
        f"  plaintext: client {1000 * plain_client:.2f} ms (wire codec), coordinator "
        f"{1000 * plain_coord:.2f} ms (decode, add); verified client = "
        f"{client_verified / plain_client:.0f}x plaintext client, "
        f"{100 * client_verified / train_s:.2f}% of local training (no proof "
        f"{100 * client_base / train_s:.2f}%); verified aggregator (receive + verify) = "
        f"{(agg_receive + verify) / plain_coord:.0f}x the plaintext coordinator's per-update work"
    )
    plain_bytes = 4 * d
    print(
        "  upload per update: "
        + ", ".join(f"{k} {v / plain_bytes:.2f}x" for k, v in uploads.items())
        + " the float32 update"
    )
    if d == ISSUE_10["d"]:
        load = client_base / (ISSUE_10["client_ms"] / 1000)
        print(
            f"  issue 10's figures (quiet machine): client {ISSUE_10['client_ms']} ms, aggregator "
            f"{ISSUE_10['aggregator_ms']} ms; this run's no-proof baseline: client "
            f"{1000 * client_base:.1f} ms ({load:.1f}x), aggregator {1000 * agg_base:.2f} ms "
            f"({agg_base / (ISSUE_10['aggregator_ms'] / 1000):.1f}x): the machine's load "
            "factor against that run"
        )


# ------------------------------------------------------------------- per round
def plaintext_round(updates: list[npt.NDArray[np.float64]], n: int) -> float:
    as32 = [u.astype(np.float32) for u in updates]
    started = time.perf_counter()
    running = WeightedSum(updates[0].size)
    for i in range(n):
        body = encode_weights({"w": as32[i % len(as32)]}, metadata={"num_samples": str(SAMPLES)})
        decoded, _ = decode_weights(body)
        running.add(decoded["w"], weight=1.0)
    running.vector()
    return time.perf_counter() - started


def no_proof_round(
    updates: list[npt.NDArray[np.float64]], n: int, layout: ContributionLayout
) -> tuple[float, npt.NDArray[np.float64]]:
    keys = [generate_keypair() for _ in range(layout.config.num_aggregators)]
    baseline = NoProofBaseline(layout, [k.public_key for k in keys])
    rng = CsprngStream()
    sums = [np.zeros(layout.measurement_length, dtype=np.uint64) for _ in keys]
    started = time.perf_counter()
    for i in range(n):
        client_id = f"c{i}"
        measurement = layout.encode(
            updates[i % len(updates)], weight=1.0, loss=0.5, unclipped=None, rng=rng
        )
        envelopes = baseline.seal(
            baseline.share(measurement, rng=rng), run_id=RUN, round_id=1, client_id=client_id
        )
        for j, envelope in enumerate(envelopes, start=1):
            payload = baseline.open(
                envelope,
                keys[j - 1].private_key,
                index=j,
                run_id=RUN,
                round_id=1,
                client_id=client_id,
            )
            sums[j - 1] += baseline.check(payload)
    t = layout.config.threshold
    reduced = [Share(index=j, values=s % np.uint64(MERSENNE_31.p)) for j, s in enumerate(sums, 1)]
    decoded = layout.decode_sum(baseline.reconstruct(reduced[:t]))
    return time.perf_counter() - started, decoded.weighted_delta_sum


def verified_round(
    updates: list[npt.NDArray[np.float64]], n: int, layout: ContributionLayout
) -> tuple[dict[str, float], npt.NDArray[np.float64]]:
    """One round through the real coordinator job and in-process aggregators."""
    config = layout.config
    aggregators = InProcessAggregators(config, run_id=RUN, model_size=layout.dimension)
    signing = {a.index: a.signing_bytes() for a in aggregators.published}
    backend = SecureAggregation(layout, run_id=RUN, signing_keys=signing, min_participants=1)
    rng = CsprngStream()
    times: dict[str, float] = defaultdict(float)
    reports = []
    started = time.perf_counter()
    for i in range(n):
        client_id = f"c{i}"
        t0 = time.perf_counter()
        measurement = layout.encode(
            updates[i % len(updates)], weight=1.0, loss=0.5, unclipped=None, rng=rng
        )
        sealed = seal_contribution(
            measurement,
            layout=layout,
            public_keys=aggregators.public_keys,
            run_id=RUN,
            round_id=1,
            client_id=client_id,
            rng=rng,
        )
        t1 = time.perf_counter()
        acknowledged = aggregators.upload(1, client_id, sealed)
        t2 = time.perf_counter()
        times["clients"] += t1 - t0
        times["aggregators: receive"] += t2 - t1
        reports.append(ClientReport(client_id, None, None, acknowledged))
    cohort = ClosedCohort(1, 0, tuple(reports), opened_at=0.0, closed_at=0.0, sampled=n)
    t0 = time.perf_counter()
    job = backend.begin(cohort)
    times["coordinator"] += time.perf_counter() - t0
    phase = {
        CollectHoldings: "aggregators: holdings",
        CollectVerifierShares: "aggregators: verify answers",
        CollectCommitments: "aggregators: commit",
        CollectAggregateShares: "aggregators: release sum",
    }
    while job.result is None:
        effects = job.drain()
        for effect in effects:
            if isinstance(effect, AggregationStalled):
                raise RuntimeError(f"The benchmark round stalled: {effect.reason}")
        commands = [e for e in effects if type(e) in phase]
        if not commands:
            raise RuntimeError(f"The benchmark round stopped: {job.status()}")
        for command in commands:
            assert isinstance(
                command,
                CollectHoldings
                | CollectVerifierShares
                | CollectCommitments
                | CollectAggregateShares,
            )
            t0 = time.perf_counter()
            events = aggregators.perform(command)
            t1 = time.perf_counter()
            for event in events:
                job.handle(event)
            t2 = time.perf_counter()
            times[phase[type(command)]] += t1 - t0
            times["coordinator"] += t2 - t1
    times["total"] = time.perf_counter() - started
    assert job.result is not None
    if job.excluded:
        raise RuntimeError(f"Honest clients were excluded: {job.excluded}")
    return dict(times), job.result.weighted_delta_sum


def per_round(d: int, n: int, config: SecureAggregationConfig, train_s: float) -> dict[str, Any]:
    layout = ContributionLayout(d, config)
    updates = _updates(d, layout)
    exact = sum(updates[i % len(updates)] for i in range(n))
    plain = plaintext_round(updates, n)
    base, base_sum = no_proof_round(updates, n, layout)
    verified, verified_sum = verified_round(updates, n, layout)
    return {
        "d": d,
        "n": n,
        "plaintext_s": plain,
        "no_proof_s": base,
        "verified": verified,
        "scale": layout.scale,
        "max_error_no_proof": float(np.abs(base_sum - exact).max()),
        "max_error_verified": float(np.abs(verified_sum - exact).max()),
        "with_training": {
            "plaintext_s": plain + n * train_s,
            "verified_s": verified["total"] + n * train_s,
        },
    }


def print_round(row: dict[str, Any]) -> None:
    v = row["verified"]
    plain, base, total = row["plaintext_s"], row["no_proof_s"], v["total"]
    wt = row["with_training"]
    split = ", ".join(f"{name} {value:.2f}" for name, value in v.items() if name != "total")
    print(
        f"  d = {row['d']:>9,} n = {row['n']:>4}: plaintext {plain:.2f} s, no proof {base:.2f} s, "
        f"verified {total:.2f} s ({total / plain:.1f}x plaintext, {total / base:.1f}x no "
        f"proof); with training {100 * (wt['verified_s'] / wt['plaintext_s'] - 1):.1f}% over "
        f"plaintext\n      verified split (s): {split}\n      largest error per coordinate "
        f"of the sum: no proof {row['max_error_no_proof']:.2g}, verified "
        f"{row['max_error_verified']:.2g} (1/scale = {1 / row['scale']:.2g}, n/scale = "
        f"{row['n'] / row['scale']:.2g})"
    )


# ------------------------------------------------------------ Flower SecAgg+
def flower_round(python: str, d: int, n: int, config: SecureAggregationConfig) -> dict[str, Any]:
    """Flower's SecAgg+ and plain rounds at d and n, t-of-m like veilfl's aggregators,
    run by ``python`` (an interpreter with flwr[simulation]); raises RuntimeError with
    Flower's last output lines if it fails."""
    script = Path(__file__).with_name("flower_secaggplus.py")
    command = [python, str(script), "--dim", str(d), "--clients", str(n)]
    command += ["--shares", str(config.num_aggregators), "--threshold", str(config.threshold)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        raise RuntimeError(f"Flower exited with {done.returncode}: {tail}")
    row: dict[str, Any] = json.loads(lines[-1])
    row["round_compute_s"] = row["secaggplus_server_s"] + row["clients_total_s"]
    return row


def print_flower(row: dict[str, Any]) -> None:
    print(
        f"  d = {row['dim']:>9,} n = {row['clients']:>4}: Flower SecAgg+ "
        f"({row['threshold']}-of-{row['shares']}, no verification) compute "
        f"{row['round_compute_s']:.2f} s (server {row['secaggplus_server_s']:.2f} s, clients "
        f"{row['clients_total_s']:.2f} s, median client {1000 * row['client_s']:.0f} ms); "
        f"Flower plaintext server {row['plaintext_server_s']:.2f} s; wall time with Flower's "
        f"scheduling {row['secaggplus_wall_s']:.1f} s (plain {row['plaintext_wall_s']:.1f} s)"
    )


def print_goals(results: dict[str, Any]) -> None:
    """Issue 20's goals, each a ratio of two figures measured in this run."""
    print("\nissue 20's goals (ratios of figures measured side by side in this run)")
    for row in results["per_update"]:
        med, agg, d = row["medians_s"], row["aggregator_verified_s"], row["d"]
        base = med["no proof aggregator/total"]
        per_update = agg["total"] + med["verified verify/total"]
        client = med["verified client/total"] - med.get("verified client/encode", 0.0)
        upload = row["upload_bytes"]["verified"] / (4 * d)
        print(
            f"  d = {d:,}: aggregator per update (receive + verify answer) "
            f"{1000 * per_update:.1f} ms = {per_update / base:.1f}x the no-proof "
            f"open-check-add {1000 * base:.1f} ms (goal <= 3x); upload {upload:.2f}x the "
            "float32 update (goal <= 2.04x)"
        )
        for flower in results["flower"]:
            if flower["dim"] == d and flower.get("client_s"):
                ratio = client / flower["client_s"]
                print(
                    f"  d = {d:,}: client prove, share and seal {1000 * client:.0f} ms = "
                    f"{ratio:.1f}x Flower's SecAgg+ client {1000 * flower['client_s']:.0f} ms "
                    f"at n = {flower['clients']} (goal <= 2x)"
                )
    for row in results["rounds"]:
        total, plain = row["verified"]["total"], row["plaintext_s"]
        line = (
            f"  d = {row['d']:,} n = {row['n']}: verified round {total:.2f} s = "
            f"{total / plain:.1f}x plaintext {plain:.2f} s (goal <= 12x)"
        )
        for flower in results["flower"]:
            if (flower["dim"], flower["clients"]) == (row["d"], row["n"]):
                line += (
                    f"; Flower SecAgg+ compute {flower['round_compute_s']:.2f} s = "
                    f"{flower['round_compute_s'] / plain:.1f}x the same plaintext"
                )
        print(line)


# -------------------------------------------------------------- request signing
def signing_costs(body_sizes: list[int], *, repeats: int = 10) -> tuple[float, float]:
    """Seconds to hash and sign one update's share uploads (of ``body_sizes`` bytes) at
    the client, and to hash and verify the largest one at an aggregator."""
    identity = Identity.generate()
    bodies = [os.urandom(size) for size in body_sizes]
    verifier = RequestVerifier(audience="aggregator-1/bench", max_remembered=repeats)
    path = "/v1/rounds/1/shares"
    started = time.perf_counter()
    for _ in range(repeats):
        headers = [
            sign_request(
                identity,
                SignedRequest.of("aggregator-1/bench", "POST", path, body, 1),
                now_s=time.time(),
            )
            for body in bodies
        ]
    sign_s = (time.perf_counter() - started) / repeats
    body = max(bodies, key=len)
    headers = [
        sign_request(
            identity,
            SignedRequest.of("aggregator-1/bench", "POST", path, body, 1),
            now_s=time.time(),
        )
        for _ in range(repeats)
    ]
    started = time.perf_counter()
    for header in headers:
        received = SignedRequest.of("aggregator-1/bench", "POST", path, body, 1)
        verifier.verify(
            received, header, public_key_for=lambda _: identity.public_key, now_s=time.time()
        )
    verify_s = (time.perf_counter() - started) / repeats
    return sign_s, verify_s


def _flower_here() -> str | None:
    """This interpreter, if flwr imports in it."""
    try:
        import flwr  # noqa: F401
    except ImportError:
        return None
    return sys.executable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="time 30 training steps, scaled")
    parser.add_argument("--dims", type=int, nargs="+", default=[100_000, 1_663_370])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 100])
    parser.add_argument(
        "--max-round-work",
        type=float,
        default=2e7,
        help="skip rounds with d x n above this (a verified client costs about 0.2 us per "
        "parameter and aggregator on a quiet core)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="per-update repetitions")
    parser.add_argument(
        "--flower-python",
        default=None,
        help="Python of a virtual environment with flwr[simulation] (the flower extra), for "
        "the Flower SecAgg+ rows; default: this interpreter if flwr imports here, else none",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON results path")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = SecureAggregationConfig(norm_bound=NORM_BOUND, max_samples_per_client=SAMPLES)
    steps = QUICK_STEPS if args.quick else FULL_STEPS
    train_s = local_training_seconds(steps)
    load = os.getloadavg()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
        f"{load[0]:.1f} at start; 2-of-3, norm bound {NORM_BOUND}, kem {config.kem}"
    )
    print(
        f"local training (McMahan CNN, E=5, B=10, 600 examples, 1 thread): {train_s:.2f} s "
        f"({steps} of {FULL_STEPS} steps timed{', scaled' if steps < FULL_STEPS else ''})",
        flush=True,
    )
    results: dict[str, Any] = {
        "local_training_s": train_s,
        "per_update": [],
        "rounds": [],
        "flower": [],
    }
    for d in args.dims:
        layout = ContributionLayout(d, config)
        bounds = layout.bounds
        print(
            f"\nd = {d:,}: B = {bounds.norm_bound}, κ = {bounds.wraparound_checks}, "
            f"P = {bounds.norm_gadget.calls}, scale {layout.scale:.1f} units per model unit "
            f"(step 1/scale = {1 / layout.scale:.3g}), at most {layout.max_summands():,} summands",
            flush=True,
        )
        row = per_update(d, config, args.repeats)
        results["per_update"].append(row)
        print_per_update(row, train_s, args.repeats)
    print("\nper round (one pass each, in process; verified = the real coordinator job)")
    for d in args.dims:
        for n in args.clients:
            if d * n > args.max_round_work:
                print(f"  d = {d:>9,} n = {n:>4}: skipped (d x n above --max-round-work)")
                continue
            row = per_round(d, n, config, train_s)
            results["rounds"].append(row)
            print_round(row)
    flower_python = args.flower_python or _flower_here()
    if flower_python is None:
        print(
            "\nFlower SecAgg+: skipped (flwr does not import here; pass --flower-python with "
            "the interpreter of an environment that has the flower extra)"
        )
    else:
        print(f"\nFlower SecAgg+ per round ({flower_python})", flush=True)
        for row in list(results["rounds"]):
            try:
                flower = flower_round(flower_python, row["d"], row["n"], config)
            except RuntimeError as error:
                print(f"  d = {row['d']:>9,} n = {row['n']:>4}: Flower failed: {error}")
                continue
            results["flower"].append(flower)
            print_flower(flower)
    print_goals(results)
    signing = {}
    for row in results["per_update"]:
        d = row["d"]
        client_sign_s, verify_s = signing_costs(row["envelope_sizes"])
        signing[d] = {"client_per_update_s": client_sign_s, "aggregator_per_share_s": verify_s}
        print(
            f"request signing at d = {d:,}: client {1000 * client_sign_s:.1f} ms per update "
            f"(hash and sign {len(row['envelope_sizes'])} uploads, "
            f"{100 * client_sign_s / train_s:.2f}% of local training); aggregator "
            f"{1000 * verify_s:.1f} ms to hash and verify one full-share upload",
            flush=True,
        )
    results["signing"] = signing
    results["load_average_end"] = os.getloadavg()
    print(f"load average at the end: {results['load_average_end'][0]:.1f}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
