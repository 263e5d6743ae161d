"""Verified bounds end to end: honest contributions always verify and aggregate exactly;
every malicious variant is excluded; the verifier message matches a slow oracle and
reveals nothing about an honest contribution."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from tests import malicious

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.field_ext import MERSENNE_31_EXT
from veilfl.crypto.flp import lagrange_basis, prove_gadget
from veilfl.crypto.shamir import ShamirScheme, Share
from veilfl.crypto.wraparound import WraparoundChecks
from veilfl.errors import ConfigurationError, CryptoError, ProtocolError, UpdateRejectedError
from veilfl.secagg import bounds_prover, bounds_transcript
from veilfl.secagg.bounds import decide, prepare_share, prove_contribution, verifier_share
from veilfl.secagg.bounds_messages import (
    ContributionShare,
    Verdict,
    VerdictReason,
    VerifierShare,
)
from veilfl.secagg.bounds_parameters import BoundsParameters

P = MERSENNE_31.modulus
EXT = MERSENNE_31_EXT
BINDING = b"run-1/round-3/client-7"
EXTRAS = ((0, 100), (-8, 8), (0, 1))  # a weight, a signed loss, a bit


def make_params(d: int = 12, bound: int = 40, calls: int = 4) -> BoundsParameters:
    return BoundsParameters(dimension=d, norm_bound=bound, extra_ranges=EXTRAS, calls=calls)


def signed_params(d: int = 12, calls: int = 4) -> BoundsParameters:
    """A weight in [0, 100], a weighted loss at most the weight, a sign bit in {-1, +1}:
    the shape of a real contribution's extras (:mod:`veilfl.secagg.contribution`)."""
    return BoundsParameters(
        dimension=d,
        norm_bound=40,
        calls=calls,
        extra_ranges=((0, 100), (0, 100), (-1, 1)),
        extra_steps=(1, 1, 2),
        extra_order=((1, 0),),
    )


def honest_measurement(params: BoundsParameters, rng: np.random.Generator) -> np.ndarray:
    """A random update with norm at most B (sometimes exactly at a coordinate bound)."""
    d, bound = params.dimension, params.norm_bound
    direction = rng.normal(size=d)
    scale = rng.uniform(0, 1) * bound / max(np.linalg.norm(direction), 1e-9)
    update = np.trunc(direction * scale).astype(np.int64)
    if rng.uniform() < 0.2:
        update[:] = 0
        update[rng.integers(d)] = bound * rng.choice([-1, 1])
    extras = [rng.integers(lo, hi + 1) for lo, hi in params.extra_ranges]
    return np.concatenate([update, np.array(extras, dtype=np.int64)])


def verify(
    shares: list[ContributionShare],
    params: BoundsParameters,
    threshold: int,
    among: list[int] | None = None,
    query_seed: bytes | None = None,
) -> Verdict:
    """Prepare and query the shares of the aggregators ``among`` (default: all), decide."""
    chosen = [s for s in shares if among is None or s.index in among]
    query_seed = query_seed or os.urandom(32)
    answers = []
    for share in chosen:
        prepared = prepare_share(
            share, params=params, threshold=threshold, num_shares=len(shares), binding=BINDING
        )
        answers.append(verifier_share(prepared, query_seed=query_seed, params=params))
    return decide(answers, params=params, threshold=threshold)


@st.composite
def sharings(draw: st.DrawFn) -> tuple[int, int]:
    m = draw(st.integers(1, 5), label="m")
    return draw(st.integers(1, m), label="t"), m


@settings(max_examples=30, deadline=None)
@given(shape=sharings(), d=st.integers(1, 20), calls=st.integers(1, 8), seed=st.integers(0, 2**32))
def test_an_honest_contribution_always_verifies_with_all_t_or_a_missing_aggregator(
    shape: tuple[int, int], d: int, calls: int, seed: int
) -> None:
    # Arrange
    t, m = shape
    params = make_params(d=d, calls=calls)
    generator = np.random.default_rng(seed)
    measurement = honest_measurement(params, generator)
    # Act
    shares = prove_contribution(
        measurement, params=params, threshold=t, num_shares=m, binding=BINDING, rng=CsprngStream()
    )
    shares = [ContributionShare.from_bytes(s.to_bytes()) for s in shares]
    # Assert: every aggregator, exactly t of them, and all but one (when that is >= t).
    assert verify(shares, params, t) == Verdict(True, None, tuple(range(1, m + 1)))
    subset = sorted(generator.choice(np.arange(1, m + 1), size=t, replace=False).tolist())
    assert verify(shares, params, t, among=subset).valid
    if m > t:
        missing = int(generator.integers(1, m + 1))
        assert verify(shares, params, t, among=[j for j in range(1, m + 1) if j != missing]).valid


@settings(max_examples=12, deadline=None)
@given(shape=sharings(), clients=st.integers(1, 4), seed=st.integers(0, 2**32))
def test_the_valid_clients_measurement_shares_sum_to_the_exact_total(
    shape: tuple[int, int], clients: int, seed: int
) -> None:
    # Arrange
    t, m = shape
    params = make_params(d=9, calls=3)
    generator = np.random.default_rng(seed)
    measurements = [honest_measurement(params, generator) for _ in range(clients)]
    sums = {j: np.zeros(params.measurement_length, dtype=np.uint64) for j in range(1, m + 1)}
    # Act: every aggregator prepares and sums the measurement shares it holds.
    for measurement in measurements:
        for share in prove_contribution(
            measurement,
            params=params,
            threshold=t,
            num_shares=m,
            binding=BINDING,
            rng=CsprngStream(),
        ):
            prepared = prepare_share(
                share, params=params, threshold=t, num_shares=m, binding=BINDING
            )
            sums[share.index] = (sums[share.index] + prepared.measurement_share) % P
    # Assert: any t aggregate shares reconstruct the exact integer sum.
    scheme = ShamirScheme(threshold=t, num_shares=m)
    for subset in itertools.combinations(range(1, m + 1), t):
        total = scheme.reconstruct([Share(index=j, values=sums[j]) for j in subset])
        signed = total.astype(np.int64)
        signed[signed > P // 2] -= P
        np.testing.assert_array_equal(signed, np.sum(measurements, axis=0))
    assert clients <= params.max_summands()


# --- malicious clients ------------------------------------------------------------------


def cheat(
    params: BoundsParameters,
    measurement: list[int],
    *,
    threshold: int = 2,
    num_shares: int = 3,
    tamper: Callable[[list[np.ndarray]], None] | None = None,
    **options: object,
) -> list[ContributionShare]:
    return malicious.cheat(
        params,
        measurement,
        threshold=threshold,
        num_shares=num_shares,
        binding=BINDING,
        tamper=tamper,
        **options,  # type: ignore[arg-type]
    )


def valid_extras() -> list[int]:
    return [50, -3, 1]


def test_the_cheating_prover_is_accepted_when_its_measurement_is_valid() -> None:
    # The malicious helper is only meaningful if it verifies an honest measurement.
    params = make_params()
    assert verify(cheat(params, [3] * 12 + valid_extras()), params, 2).valid


@pytest.mark.parametrize(
    "update",
    [
        pytest.param([(P - 1) // 4] + [0] * 11, id="coordinate (p-1)/4"),
        pytest.param([12] * 12, id="norm just over the bound (no wrap)"),
        pytest.param([(P + 1) // 2] * 4 + [0] * 8, id="four halves: field norm 1"),
        pytest.param([1 << 20] * 2 + [0] * 10, id="large coordinates"),
    ],
)
def test_an_update_outside_the_norm_bound_is_excluded(update: list[int]) -> None:
    params = make_params()  # B = 40; 12 coordinates of 12 have norm 41.6
    verdict = verify(cheat(params, update + valid_extras()), params, 2)
    assert verdict == Verdict(False, VerdictReason.CIRCUIT_OUTPUT, (1, 2, 3))


@pytest.mark.parametrize("weight", [-9, 101, P // 3])
def test_a_forged_or_negative_weight_is_excluded(weight: int) -> None:
    params = make_params()
    measurement = [1] * 12 + [weight, 0, 1]
    # Clamped honest bits: the range equation fails.
    assert verify(cheat(params, measurement), params, 2).reason is VerdictReason.CIRCUIT_OUTPUT

    # Bits that satisfy the range equation but are not all 0/1: the bit check fails...
    norm_bits = len(params.norm_weights)
    wrap_bits = params.wraparound_checks * len(params.wraparound_weights)
    first = norm_bits + wrap_bits  # the weight's first bit

    def adjust(bits: list[int]) -> None:
        weights = params.extra_weights[0]
        claimed = sum(w * s for w, s in zip(weights, bits[first:], strict=False))
        bits[first] += weight - claimed  # weight 1 on the first bit

    assert verify(cheat(params, measurement, adjust_bits=adjust), params, 2).reason is (
        VerdictReason.CIRCUIT_OUTPUT
    )
    # ... and claiming s^2 = s in the proof breaks the gadget polynomial instead.
    forged = cheat(params, measurement, adjust_bits=adjust, forge_bit_squares=True)
    assert verify(forged, params, 2).reason is VerdictReason.BIT_GADGET


@pytest.mark.parametrize(
    ("weight", "loss", "sign"),
    [(0, 0, -1), (0, 0, 1), (57, 0, 1), (57, 57, -1), (100, 99, 1), (100, 100, -1)],
)
def test_every_sign_bit_and_every_loss_up_to_the_weight_verifies(
    weight: int, loss: int, sign: int
) -> None:
    params = signed_params()
    shares = prove_contribution(
        np.array([3] * 12 + [weight, loss, sign]),
        params=params,
        threshold=2,
        num_shares=3,
        binding=BINDING,
        rng=CsprngStream(),
    )
    assert verify(shares, params, 2).valid
    assert verify(cheat(params, [3] * 12 + [weight, loss, sign]), params, 2).valid


@pytest.mark.parametrize(
    "extras",
    [
        pytest.param([50, 20, 0], id="sign bit 0"),
        pytest.param([50, 20, 3], id="sign bit 3"),
        pytest.param([0, 100, 1], id="weight 0, largest loss"),
        pytest.param([50, 51, 1], id="loss one unit above the weight"),
        pytest.param([50, P - 1, 1], id="loss -1 (wraps below 0)"),
    ],
)
def test_a_zero_sign_bit_or_a_loss_above_the_weight_is_excluded(extras: list[int]) -> None:
    # The cheater's proof is honest for the bits it claims (its values clamped into
    # range): only the circuit's range and order equations can catch it, and they do.
    params = signed_params()
    verdict = verify(cheat(params, [3] * 12 + extras), params, 2)
    assert verdict == Verdict(False, VerdictReason.CIRCUIT_OUTPUT, (1, 2, 3))
    with pytest.raises(ConfigurationError, match="Extra coordinate"):
        prove_contribution(
            np.array([3] * 12 + [v - P if v > P // 2 else v for v in extras]),
            params=params,
            threshold=2,
            num_shares=3,
            binding=BINDING,
            rng=CsprngStream(),
        )


def test_a_sign_bit_of_zero_made_from_half_a_bit_is_excluded() -> None:
    # 0 = -1 + 2·(1/2): the range equation holds with the field's 1/2 as the bit, so
    # only s^2 = s stands between a client and a 0 "bit" that drops it from the count.
    params = signed_params()
    norm_bits = len(params.norm_weights)
    wrap_bits = params.wraparound_checks * len(params.wraparound_weights)
    sign_bit = norm_bits + wrap_bits + sum(len(w) for w in params.extra_weights[:2])
    assert params.extra_weights[2] == (2,)

    def halve(bits: list[int]) -> None:
        bits[sign_bit] = (P + 1) // 2

    measurement = [3] * 12 + [50, 20, 0]
    verdict = verify(cheat(params, measurement, adjust_bits=halve), params, 2)
    assert verdict.reason is VerdictReason.CIRCUIT_OUTPUT
    forged = cheat(params, measurement, adjust_bits=halve, forge_bit_squares=True)
    assert verify(forged, params, 2).reason is VerdictReason.BIT_GADGET


def test_inconsistent_shares_are_excluded_whenever_more_than_t_answer() -> None:
    # Arrange: the client shifts aggregator 3's share of coordinate 0 before hashing,
    # so every part matches; shares 1, 2 give x_0 = 3, shares 1, 3 give x_0 = 3 + δ/2.
    params = make_params()

    def shift(full: list[np.ndarray]) -> None:
        full[-1][0] = (full[-1][0] + 5) % P

    shares = cheat(params, [3] * 12 + valid_extras(), tamper=shift)
    # Act / Assert
    assert verify(shares, params, 2).reason is VerdictReason.INCONSISTENT_SHARES
    # With exactly t, the t shares define the verified (and aggregated) vector: the
    # bits and proof were made for another vector, so it fails.
    assert not verify(shares, params, 2, among=[1, 3]).valid
    # A share changed after the parts were made is refused on arrival.
    shares[2].values[0] = (shares[2].values[0] + 1) % P  # type: ignore[index]
    with pytest.raises(UpdateRejectedError, match="does not match its public part"):
        verify(shares, params, 2, among=[3])


def test_proof_shares_that_do_not_lie_on_one_polynomial_are_excluded() -> None:
    # The parts do not cover the bits and proof, but the verifier shares do.
    params = make_params()
    shares = prove_contribution(
        np.array([3] * 12 + valid_extras()),
        params=params,
        threshold=2,
        num_shares=3,
        binding=BINDING,
        rng=CsprngStream(),
    )
    shares[2].values[-1] = (shares[2].values[-1] + 1) % P  # type: ignore[index]
    assert verify(shares, params, 2).reason is VerdictReason.INCONSISTENT_SHARES


def test_a_proof_made_for_other_shares_is_excluded() -> None:
    params = make_params()
    honest = np.array([3] * 12 + valid_extras(), dtype=np.int64)
    other = np.array([-2] * 12 + valid_extras(), dtype=np.int64)
    rng = CsprngStream()
    # Shares of x with the bits and proof of another vector (parts made honestly).
    elements = np.array([v % P for v in honest], dtype=np.uint64)
    shares = bounds_prover._deal(
        elements,
        params=params,
        threshold=2,
        num_shares=3,
        binding=BINDING,
        rng=rng,
        complete=lambda seed: malicious.cheating_rest(
            params, np.array([v % P for v in other], dtype=np.uint64), seed
        ),
    )
    assert not verify(shares, params, 2).valid
    # Mixing two clients' shares: their Fiat-Shamir seeds differ ...
    a = prove_contribution(
        honest, params=params, threshold=2, num_shares=3, binding=BINDING, rng=rng
    )
    b = prove_contribution(
        other, params=params, threshold=2, num_shares=3, binding=BINDING, rng=rng
    )
    assert verify([a[0], b[1], a[2]], params, 2).reason is VerdictReason.JOINT_SEED_MISMATCH
    # ... and another client's values under this client's public parts do not match.
    swapped = ContributionShare(2, a[1].blind, a[1].parts, values=b[1].values)
    with pytest.raises(UpdateRejectedError, match="public part"):
        verify([a[0], swapped, a[2]], params, 2)


def test_wrong_public_parts_or_bindings_are_refused_or_excluded() -> None:
    params = make_params()
    shares = prove_contribution(
        np.array([3] * 12 + valid_extras()),
        params=params,
        threshold=2,
        num_shares=3,
        binding=BINDING,
        rng=CsprngStream(),
    )
    # A wrong part for a verifying aggregator: it refuses the share.
    forged_parts = (shares[0].parts[0], os.urandom(32), shares[0].parts[2])
    altered = [ContributionShare(s.index, s.blind, forged_parts, s.seed, s.values) for s in shares]
    with pytest.raises(UpdateRejectedError):
        verify(altered, params, 2, among=[2])
    # A wrong part for an aggregator that does not verify: the checks change, so the
    # bits the client made no longer fit.
    assert verify(altered, params, 2, among=[1, 3]).reason is VerdictReason.CIRCUIT_OUTPUT
    # Different part lists for different aggregators: their seeds disagree.
    mixed = [altered[0], shares[1], altered[2]]
    assert verify(mixed, params, 2, among=[1, 2]).reason is VerdictReason.JOINT_SEED_MISMATCH
    # Another binding (replay into another round): refused on arrival.
    with pytest.raises(UpdateRejectedError):
        prepare_share(shares[1], params=params, threshold=2, num_shares=3, binding=b"other")
    # Other parameters: refused on arrival.
    with pytest.raises(UpdateRejectedError):
        prepare_share(
            shares[1], params=make_params(bound=41), threshold=2, num_shares=3, binding=BINDING
        )


def test_an_invalid_measurement_is_refused_by_the_honest_prover() -> None:
    params = make_params()
    rng = CsprngStream()
    for bad, message in (
        ([41] + [0] * 11 + valid_extras(), "exceeds the norm bound"),
        ([12] * 12 + valid_extras(), "squared L2 norm"),
        ([1] * 12 + [101, 0, 1], "outside \\[0, 100\\]"),
        ([1] * 11 + valid_extras(), "length 15"),
    ):
        with pytest.raises(ConfigurationError, match=message):
            prove_contribution(
                np.array(bad), params=params, threshold=2, num_shares=3, binding=BINDING, rng=rng
            )
    with pytest.raises(ConfigurationError, match="integer"):
        prove_contribution(
            np.zeros(15), params=params, threshold=2, num_shares=3, binding=BINDING, rng=rng
        )


def test_decide_refuses_structural_problems_that_are_not_the_clients_fault() -> None:
    params = make_params()
    shares = prove_contribution(
        np.array([1] * 12 + valid_extras()),
        params=params,
        threshold=2,
        num_shares=3,
        binding=BINDING,
        rng=CsprngStream(),
    )
    prepared = [
        prepare_share(s, params=params, threshold=2, num_shares=3, binding=BINDING) for s in shares
    ]
    one = verifier_share(prepared[0], query_seed=bytes(32), params=params)
    two = verifier_share(prepared[1], query_seed=bytes(32), params=params)
    other = verifier_share(prepared[1], query_seed=bytes(31) + b"\x01", params=params)
    with pytest.raises(ProtocolError, match="needs 2"):
        decide([one], params=params, threshold=2)
    with pytest.raises(ProtocolError, match="distinct"):
        decide([one, one], params=params, threshold=2)
    with pytest.raises(ProtocolError, match="different queries"):
        decide([one, other], params=params, threshold=2)
    with pytest.raises(ProtocolError, match="shape"):
        decide([one, two], params=make_params(calls=3), threshold=2)
    with pytest.raises(ConfigurationError, match="32 bytes"):
        verifier_share(prepared[0], query_seed=b"short", params=params)
    assert decide([one, two], params=params, threshold=2).valid


# --- the verifier message against a slow oracle, and zero knowledge ----------------------


def reconstructed_message(answers: list[VerifierShare], threshold: int) -> np.ndarray:
    scheme = ShamirScheme(threshold=threshold, num_shares=16)
    shape = answers[0].values.shape
    shares = [Share(index=a.index, values=a.values.ravel()) for a in answers]
    return scheme.reconstruct(shares[:threshold]).reshape(shape)


def ext_dot(coefficients: np.ndarray, values: list[int]) -> tuple[int, int]:
    re = sum(int(c[0]) * v for c, v in zip(coefficients, values, strict=True)) % P
    im = sum(int(c[1]) * v for c, v in zip(coefficients, values, strict=True)) % P
    return re, im


@pytest.mark.parametrize(
    ("params", "extras"),
    [
        pytest.param(make_params(d=7, calls=3), [20, 7, 0], id="ranges"),
        pytest.param(signed_params(d=7, calls=3), [20, 7, -1], id="steps and order"),
    ],
)
def test_the_verifier_message_equals_a_slow_evaluation_on_the_plaintext_input(
    params: BoundsParameters, extras: list[int]
) -> None:
    # Arrange
    measurement = np.array([2, -3, 0, 5, 1, -1, 4, *extras])
    shares = prove_contribution(
        measurement, params=params, threshold=2, num_shares=3, binding=BINDING, rng=CsprngStream()
    )
    prepared = [
        prepare_share(s, params=params, threshold=2, num_shares=3, binding=BINDING) for s in shares
    ]
    query_seed = os.urandom(32)
    answers = [verifier_share(p, query_seed=query_seed, params=params) for p in prepared]
    scheme = ShamirScheme(threshold=2, num_shares=3)
    plain = scheme.reconstruct([Share(p.index, p.input_share) for p in prepared[:2]])
    # Act
    message = reconstructed_message(answers, 2)
    # Assert: recompute everything from the plaintext input, one term at a time.
    query = bounds_transcript.query_for(params, query_seed)
    points, reducers = query.points, query.reducers
    u = [int(v) for v in plain]
    d, gn, gb = params.dimension, params.norm_gadget, params.bit_gadget
    proof = u[params.proof_offset :]
    norm_seeds = proof[: gn.seeds * gn.wires]
    norm_values = proof[gn.seeds * gn.wires : gn.seeds * gn.wires + gn.gadget_nodes]
    rest = proof[gn.seeds * gn.wires + gn.gadget_nodes :]
    bit_seeds, bit_values = rest[: gb.seeds * gb.wires], rest[gb.seeds * gb.wires :]
    bits = u[params.bits_offset : params.proof_offset]
    padded_update = u[:d] + [0] * (gn.calls * gn.wires - d)
    padded_bits = bits + [0] * (gb.calls * gb.wires - len(bits))
    z = WraparoundChecks(count=params.wraparound_checks, dimension=d).vectors(
        prepared[0].joint_seed
    )
    outputs = [
        (
            sum(norm_values[: gn.calls])
            - sum(w * s for w, s in zip(params.norm_weights, bits, strict=False))
        )
        % P
    ]
    offset = len(params.norm_weights)
    width = len(params.wraparound_weights)
    for h, row in enumerate(z):
        projection = sum(int(c) * x for c, x in zip(row, u[:d], strict=True))
        shifted = bits[offset + h * width : offset + (h + 1) * width]
        combined = sum(w * s for w, s in zip(params.wraparound_weights, shifted, strict=True))
        outputs.append((projection + params.wraparound_bound - combined) % P)
    offset += params.wraparound_checks * width
    for j, ((lo, _), weights) in enumerate(
        zip(params.extra_ranges, params.extra_weights, strict=True)
    ):
        mine = bits[offset : offset + len(weights)]
        outputs.append((u[d + j] - lo - sum(w * s for w, s in zip(weights, mine, strict=True))) % P)
        offset += len(weights)
    for (i, j), weights in zip(params.extra_order, params.order_weights, strict=True):
        mine = bits[offset : offset + len(weights)]
        combined = sum(w * s for w, s in zip(weights, mine, strict=True))
        outputs.append((u[d + j] - u[d + i] - combined) % P)
        offset += len(weights)
    for i, bit in enumerate(bits):
        outputs.append((bit_values[(i % gb.wires) * gb.gadget_nodes + i // gb.wires] - bit) % P)
    assert outputs == [0] * params.outputs  # an honest input
    for ell, point in enumerate(points):
        expected = []
        basis = lagrange_basis(gn.nodes, point)
        for w in range(gn.wires):
            column = padded_update[w :: gn.wires] + norm_seeds[w :: gn.wires]
            expected.append(ext_dot(basis, column))
        expected.append(ext_dot(lagrange_basis(gn.gadget_nodes, point), norm_values))
        basis = lagrange_basis(gb.nodes, point)
        for w in range(gb.wires):
            column = padded_bits[w :: gb.wires] + bit_seeds[w :: gb.wires]
            expected.append(ext_dot(basis, column))
        basis = lagrange_basis(gb.gadget_nodes, point)
        for w in range(gb.wires):
            expected.append(
                ext_dot(basis, bit_values[w * gb.gadget_nodes : (w + 1) * gb.gadget_nodes])
            )
        expected.append(ext_dot(reducers[ell], outputs))
        assert [tuple(int(v) for v in row) for row in message[ell]] == expected


def wire_answers(measurement: np.ndarray, params: BoundsParameters, runs: int) -> np.ndarray:
    """The reconstructed f_w(r) values (all wires, points, parts) over many proofs."""
    values = []
    for _ in range(runs):
        shares = prove_contribution(
            measurement,
            params=params,
            threshold=2,
            num_shares=2,
            binding=BINDING,
            rng=CsprngStream(),
        )
        query_seed = os.urandom(32)
        answers = [
            verifier_share(
                prepare_share(s, params=params, threshold=2, num_shares=2, binding=BINDING),
                query_seed=query_seed,
                params=params,
            )
            for s in shares
        ]
        message = reconstructed_message(answers, 2)
        values.append(message[:, : params.norm_gadget.wires, :].ravel())
    return np.concatenate(values).astype(np.float64)


def test_answers_about_two_different_honest_contributions_are_identically_uniform() -> None:
    # Arrange: a zero update and one at the norm bound.
    params = make_params(d=16, calls=2)
    zero = np.array([0] * 16 + valid_extras())
    loud = np.array([10] * 16 + valid_extras())
    # Act
    a, b = wire_answers(zero, params, 80), wire_answers(loud, params, 80)
    # Assert: each uniform on [0, p) (top 4 bits), and the two indistinguishable.
    for sample in (a, b):
        counts = np.bincount((sample * 16 / P).astype(np.int64), minlength=16)
        assert stats.chisquare(counts).pvalue > 1e-4
    assert stats.ks_2samp(a, b).pvalue > 1e-4


def test_fewer_than_t_input_shares_are_uniform_whatever_the_measurement() -> None:
    params = make_params(d=600, bound=40, calls=20)
    for measurement in (np.zeros(603, dtype=np.int64), np.array([1] * 600 + [100, 8, 1])):
        shares = prove_contribution(
            measurement,
            params=params,
            threshold=2,
            num_shares=3,
            binding=BINDING,
            rng=CsprngStream(),
        )
        for share in shares:
            prepared = prepare_share(
                share, params=params, threshold=2, num_shares=3, binding=BINDING
            )
            top = (prepared.input_share >> np.uint64(27)).astype(np.int64)
            assert stats.chisquare(np.bincount(top, minlength=16)).pvalue > 1e-4


def test_seeded_and_full_shares_go_to_the_right_aggregators() -> None:
    params = make_params()
    shares = prove_contribution(
        np.array([1] * 12 + valid_extras()),
        params=params,
        threshold=3,
        num_shares=4,
        binding=BINDING,
        rng=CsprngStream(),
    )
    assert [s.seed is not None for s in shares] == [True, True, False, False]
    assert all(len(s.values) == params.input_length for s in shares[2:])  # type: ignore[arg-type]
    assert all(s.parts == shares[0].parts for s in shares)
    # The honest prover uses the production gadget prover (small integer wires).
    gadget = params.bit_gadget
    wires = np.zeros((gadget.calls, gadget.wires), dtype=np.int64)
    seeds = np.zeros((gadget.seeds, gadget.wires), dtype=np.uint64)
    np.testing.assert_array_equal(
        prove_gadget(gadget, wires, seeds), malicious.exact_gadget_values(gadget, wires, seeds)
    )


# --- one failing projection among κ ------------------------------------------------------


def claimed_projections(params: BoundsParameters, bits: list[int]) -> list[int]:
    """The projections a bit vector claims (the circuit's κ combinations, shifted by -b)."""
    n_norm, weights = len(params.norm_weights), params.wraparound_weights
    b = params.wraparound_bound
    return [
        sum(w * s for w, s in zip(weights, bits[at : at + len(weights)], strict=True)) - b
        for at in range(n_norm, n_norm + params.wraparound_checks * len(weights), len(weights))
    ]


@pytest.mark.parametrize("wrong", [0, 67, 135])
def test_one_claimed_projection_off_by_one_is_caught_by_the_combined_check(wrong: int) -> None:
    # Arrange: an honest update whose bits claim the true projection for every check but
    # one, which claims its true value plus one (still inside [-b, b]).
    params = make_params()
    seen: list[list[int]] = []

    def lie_once(bits: list[int]) -> None:
        claimed = claimed_projections(params, bits)
        at = len(params.norm_weights) + wrong * len(params.wraparound_weights)
        value = (
            claimed[wrong] + 1 if claimed[wrong] < params.wraparound_bound else claimed[wrong] - 1
        )
        width = 2 * params.wraparound_bound
        bits[at : at + len(params.wraparound_weights)] = malicious.decompose(
            value + params.wraparound_bound, width
        )
        seen.append(
            [a - c for a, c in zip(claimed_projections(params, bits), claimed, strict=True)]
        )

    # Act
    verdict = verify(cheat(params, [3, -2] * 6 + valid_extras(), adjust_bits=lie_once), params, 2)
    # Assert: exactly one claim differs from the truth, and the contribution is refused.
    assert [i for i, diff in enumerate(seen[-1]) if diff] == [wrong]
    assert verdict == Verdict(False, VerdictReason.CIRCUIT_OUTPUT, (1, 2, 3))


def test_a_wrapped_update_that_passes_all_but_one_projection_is_excluded() -> None:
    # Arrange: with κ = 4 checks (far too few for soundness; the class refuses it, so the
    # test builds it unchecked), regrind the four-halves vector, field norm 1, until
    # exactly one of its true projections falls outside [-b, b].
    sound = make_params()
    params = BoundsParameters._unchecked(
        dimension=sound.dimension,
        norm_bound=sound.norm_bound,
        extra_ranges=sound.extra_ranges,
        wraparound_checks=4,
        query_points=sound.query_points,
        calls=sound.calls,
    )
    measurement = [(P + 1) // 2] * 4 + [0] * 8 + valid_extras()
    elements = np.array([v % P for v in measurement], dtype=np.uint64)
    b, checks = params.wraparound_bound, WraparoundChecks(count=4, dimension=12)
    failing: list[int] = []

    def complete(seed: bytes) -> np.ndarray | None:
        update = malicious.centred_ints(elements[:12])
        true = [
            (sum(int(z) * x for z, x in zip(row, update, strict=True)) + P // 2) % P - P // 2
            for row in checks.vectors(seed)
        ]
        if sum(abs(v) > b for v in true) != 1:
            return None  # ask for new blinds, as a grinding client would
        failing[:] = [h for h, v in enumerate(true) if abs(v) > b]
        return malicious.cheating_rest(params, elements, seed)

    shares = None
    for _ in range(40):  # each seed has exactly one failing check with probability 1/4
        try:
            shares = bounds_prover._deal(
                elements,
                params=params,
                threshold=2,
                num_shares=3,
                binding=BINDING,
                rng=CsprngStream(),
                complete=complete,
            )
            break
        except CryptoError:
            continue
    assert shares is not None and len(failing) == 1
    # Act
    verdict = verify(shares, params, 2)
    # Assert
    assert verdict == Verdict(False, VerdictReason.CIRCUIT_OUTPUT, (1, 2, 3))
