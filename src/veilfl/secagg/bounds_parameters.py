"""Parameters of verified bounds: what a contribution must satisfy, and the proof's shape.

A contribution is an integer vector of length d + e: d update coordinates whose L2
norm must be at most B, then e "extra" coordinates, each in its own range [lo, hi]
(optionally on a grid of step s: lo, lo + s, ..., hi), and optionally ordered pairs of
extras (extra i at most extra j).
:class:`BoundsParameters` fixes those bounds, the proof system's settings, and derives
everything else: the wraparound bound b, the input layout, the two gadget blocks, and
the soundness error. It refuses settings outside the conditions the security argument
needs (docs/verified-bounds.md), and says what the largest sound norm bound is.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.flp import SquareGadget
from veilfl.crypto.wraparound import (
    check_pass_bound,
    honest_failure_bound,
    smallest_honest_bound,
)
from veilfl.errors import ConfigurationError

__all__ = [
    "COMPLETENESS_TARGET",
    "GRINDING_TRIALS",
    "MAX_DIMENSION",
    "SOUNDNESS_TARGET",
    "BoundsParameters",
    "calls_for_dimension",
    "range_weights",
]

FIELD = MERSENNE_31
SOUNDNESS_TARGET = 2.0**-64
"""The largest soundness error per client that parameters may have."""
GRINDING_TRIALS = 2**64
"""Fiat-Shamir trials a malicious client is assumed to afford when parameters are checked.

A trial is one random-oracle query for the wraparound seed: varying the public part of
an aggregator that does not verify costs one small hash, and checking a sparse attack
vector against the new checks a few AES blocks, so 2**64 is a generous budget."""
COMPLETENESS_TARGET = 2.0**-64
"""The largest probability that an honest client fails a wraparound check and retries."""
MAX_DIMENSION = 2**22
"""The most update coordinates: float64 sums of d centred elements (< 2**30) stay exact."""

_HALF = (FIELD.modulus - 1) // 2
_FLOAT_EXACT = 2**53


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def range_weights(width: int) -> tuple[int, ...]:
    """Bit weights whose 0/1 combinations are exactly the integers 0..width.

    ``1, 2, ..., 2^(n-2)`` and a last weight ``width - 2^(n-1) + 1`` (n the bit length
    of width): the first n - 1 bits reach [0, 2^(n-1) - 1], the last adds at most
    2^(n-1), so no integer in range is missed and none above ``width`` is reached.
    """
    if width < 0:
        raise ConfigurationError(f"A range needs lo <= hi; got a width of {width}.")
    n = width.bit_length()
    if n == 0:
        return ()
    return (*(1 << i for i in range(n - 1)), width - (1 << (n - 1)) + 1)


def calls_for_dimension(dimension: int, *, query_points: int = 2) -> int:
    """The norm gadget's calls P for d update coordinates: nodes n = P + 2k the power of
    two nearest sqrt(d) / 5, between 8 and 1,024.

    The prover's Gram product costs about d·P and its extension about n^3, the
    verifier message about 4k·d / P bytes; this balances them. It gives P = 252 at
    d = 1,663,370 (the McMahan CNN, where the sweep in docs/verified-bounds.md put
    the optimum), P = 28 at d = 21,840 (the small CNN: a third of P = 252's proving
    time) and P = 60 at d = 100,000. Soundness does not depend on the choice: the
    FLP's error grows with n but stays below 2^-100 for every n here.

    Raises:
        ConfigurationError: unless d and k are at least 1.
    """
    if dimension < 1 or query_points < 1:
        raise ConfigurationError("The dimension and the query points must be at least 1.")
    target = max(math.sqrt(dimension) / 5, 1.0)
    nodes = min(max(1 << round(math.log2(target)), 8), 1024)
    return max(1, min(nodes - 2 * query_points, dimension))


@dataclass(frozen=True)
class BoundsParameters:
    """What each contribution must satisfy, and how the proof is built.

    Attributes:
        dimension: d, the update coordinates.
        norm_bound: B: the sum of squares of the update coordinates (centred integers)
            must be at most B^2.
        extra_ranges: One inclusive integer range (lo, hi) per extra coordinate.
        wraparound_checks: κ, PINE's wraparound checks; a wrapped norm passes each with
            probability at most 1/2 (Lemma W), so κ bits of soundness per Fiat-Shamir
            trial.
        query_points: k, the GF(p^2) points the verifiers query.
        calls: The norm gadget's calls P (the update is arranged as P calls x
            ceil(d / P) wires): the prover costs about d·P, the verifier message about
            4k·d / P bytes.
        extra_steps: One step s_j >= 1 per extra (empty: every step is 1): extra j must
            be lo_j + s_j·k for a whole k in [0, (hi_j - lo_j) / s_j]. Step 2 on
            (-1, 1) admits exactly -1 and +1 (a sign bit 2b - 1, never 0).
        extra_order: Pairs (i, j) of extra indices: extra i must be at most extra j
            (a weighted loss at most its weight).

    Raises:
        ConfigurationError: for settings outside the security argument's conditions,
            naming the largest sound norm bound where B is the problem.
    """

    dimension: int
    norm_bound: int
    extra_ranges: tuple[tuple[int, int], ...] = ()
    wraparound_checks: int = 136
    query_points: int = 2
    calls: int = 252
    extra_steps: tuple[int, ...] = ()
    extra_order: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        self._check_types_and_ranges()
        error = self.soundness_error(trials=GRINDING_TRIALS)
        if error <= SOUNDNESS_TARGET:
            return
        try:
            largest = self.largest_norm_bound(
                dimension=self.dimension,
                extra_ranges=self.extra_ranges,
                wraparound_checks=self.wraparound_checks,
                query_points=self.query_points,
                calls=self.calls,
                extra_steps=self.extra_steps,
                extra_order=self.extra_order,
            )
        except ConfigurationError:
            raise ConfigurationError(
                f"No norm bound reaches a soundness error of 2^-64 against 2^64 Fiat-Shamir "
                f"trials with {self.wraparound_checks} wraparound checks and "
                f"{self.query_points} query points (this gives {error:.3g}); use at least 129 "
                "checks and 2 points."
            ) from None
        raise ConfigurationError(
            f"These settings do not reach a soundness error of 2^-64 against 2^64 Fiat-Shamir "
            f"trials (they give {error:.3g}). With B = {self.norm_bound}, the wraparound bound "
            f"b = {self.wraparound_bound} is too close to sqrt(p) for Lemma W; the largest "
            f"sound B here is {largest}. Lower B (a coarser fixed-point scale), or raise "
            "wraparound_checks."
        )

    def _check_types_and_ranges(self) -> None:
        counts = (
            self.dimension,
            self.norm_bound,
            self.wraparound_checks,
            self.query_points,
            self.calls,
        )
        if not all(_is_int(c) and c >= 1 for c in counts):
            raise ConfigurationError(
                "dimension, norm_bound, wraparound_checks, query_points and calls must be "
                "whole numbers of at least 1."
            )
        if self.dimension > MAX_DIMENSION:
            raise ConfigurationError(
                f"At most {MAX_DIMENSION} update coordinates are supported; got {self.dimension}."
            )
        if self.norm_bound**2 >= FIELD.modulus:
            raise ConfigurationError(
                f"B^2 must be below p = {FIELD.modulus} for the norm range check; got "
                f"B = {self.norm_bound}."
            )
        if 4 * self.wraparound_bound > FIELD.modulus:
            raise ConfigurationError("The wraparound bound b must be at most p / 4.")
        gadget = self.norm_gadget
        exact = gadget.calls * _HALF * self.norm_bound + gadget.seeds * _HALF * 2**16
        if exact >= _FLOAT_EXACT:
            raise ConfigurationError(
                "calls x B is too large for the prover's exact float64 arithmetic; lower calls."
            )
        for pair in self.extra_ranges:
            if (
                not isinstance(pair, tuple)
                or len(pair) != 2
                or not all(_is_int(v) for v in pair)
                or not -_HALF <= pair[0] <= pair[1] <= _HALF
            ):
                raise ConfigurationError(
                    f"Each extra range must be integers (lo, hi) with -(p-1)/2 <= lo <= hi <= "
                    f"(p-1)/2; got {pair!r}."
                )
        self._check_steps_and_order()

    def _check_steps_and_order(self) -> None:
        """Steps that divide their range, and ordered pairs whose check cannot wrap."""
        if self.extra_steps and len(self.extra_steps) != self.extras:
            raise ConfigurationError(
                f"Give one extra step per extra coordinate ({self.extras}); got "
                f"{len(self.extra_steps)}."
            )
        for step, (lo, hi) in zip(self.steps, self.extra_ranges, strict=True):
            if not _is_int(step) or step < 1 or (hi - lo) % step:
                raise ConfigurationError(
                    f"An extra step must be a whole number of at least 1 that divides its "
                    f"range; got {step!r} for ({lo}, {hi})."
                )
        for pair in self.extra_order:
            if (
                not isinstance(pair, tuple)
                or len(pair) != 2
                or not all(_is_int(v) and 0 <= v < self.extras for v in pair)
                or pair[0] == pair[1]
            ):
                raise ConfigurationError(
                    f"Each extra order is a pair (i, j) of two different extra indices below "
                    f"{self.extras}; got {pair!r}."
                )
            (lo_i, hi_i), (lo_j, hi_j) = self.extra_ranges[pair[0]], self.extra_ranges[pair[1]]
            if hi_j < lo_i or (hi_j - lo_i) + abs(hi_i - lo_j) >= FIELD.modulus:
                raise ConfigurationError(
                    f"Extras {pair[0]} <= {pair[1]} cannot be checked on ranges "
                    f"({lo_i}, {hi_i}) and ({lo_j}, {hi_j}): the order must be satisfiable and "
                    "the two ranges' spans together below p."
                )

    @property
    def extras(self) -> int:
        """e, the extra coordinates."""
        return len(self.extra_ranges)

    @property
    def measurement_length(self) -> int:
        """d + e, the coordinates that are aggregated."""
        return self.dimension + self.extras

    @functools.cached_property
    def wraparound_bound(self) -> int:
        """b: honest clients' projections lie in [-b, b] except with probability 2^-64."""
        return smallest_honest_bound(
            norm_bound=self.norm_bound,
            checks=self.wraparound_checks,
            failure=COMPLETENESS_TARGET,
        )

    @functools.cached_property
    def norm_weights(self) -> tuple[int, ...]:
        """Bit weights of the squared norm, in [0, B^2]."""
        return range_weights(self.norm_bound**2)

    @functools.cached_property
    def wraparound_weights(self) -> tuple[int, ...]:
        """Bit weights of each shifted projection, in [0, 2b]."""
        return range_weights(2 * self.wraparound_bound)

    @property
    def steps(self) -> tuple[int, ...]:
        """Each extra's step (1 unless ``extra_steps`` says otherwise)."""
        return self.extra_steps or (1,) * self.extras

    @functools.cached_property
    def extra_weights(self) -> tuple[tuple[int, ...], ...]:
        """Bit weights of each extra, shifted by lo: step s times weights that reach
        exactly [0, (hi - lo) / s], so their 0/1 combinations are exactly
        0, s, ..., hi - lo."""
        return tuple(
            tuple(step * w for w in range_weights((hi - lo) // step))
            for step, (lo, hi) in zip(self.steps, self.extra_ranges, strict=True)
        )

    @functools.cached_property
    def order_weights(self) -> tuple[tuple[int, ...], ...]:
        """Bit weights of each ordered pair's difference extra_j - extra_i, in
        [0, hi_j - lo_i]."""
        return tuple(
            range_weights(self.extra_ranges[j][1] - self.extra_ranges[i][0])
            for i, j in self.extra_order
        )

    @property
    def bits(self) -> int:
        """Bits in the input: the norm's, then κ projections', the extras', the orders'."""
        return (
            len(self.norm_weights)
            + self.wraparound_checks * len(self.wraparound_weights)
            + sum(len(w) for w in self.extra_weights)
            + sum(len(w) for w in self.order_weights)
        )

    @property
    def outputs(self) -> int:
        """Circuit outputs reduced by the verifiers: norm, κ projections, extras,
        ordered pairs, bits."""
        return 1 + self.wraparound_checks + self.extras + len(self.extra_order) + self.bits

    @functools.cached_property
    def norm_gadget(self) -> SquareGadget:
        """Σ w^2 over the update, arranged as calls x wires."""
        wires = -(-self.dimension // self.calls)
        return SquareGadget(
            wires=wires,
            calls=-(-self.dimension // wires),
            seeds=2 * self.query_points,
            summed=True,
        )

    @functools.cached_property
    def bit_gadget(self) -> SquareGadget:
        """w^2 for every bit, about sqrt(bits) calls x sqrt(bits) wires."""
        wires = math.isqrt(self.bits - 1) + 1
        return SquareGadget(
            wires=wires,
            calls=-(-self.bits // wires),
            seeds=2 * self.query_points,
            summed=False,
        )

    @property
    def bits_offset(self) -> int:
        """Where the bits start in the input vector."""
        return self.measurement_length

    @property
    def proof_offset(self) -> int:
        """Where the proof starts in the input vector."""
        return self.measurement_length + self.bits

    @property
    def input_length(self) -> int:
        """Field elements in each share: measurement, bits, then the two gadgets' proofs."""
        return self.proof_offset + self.norm_gadget.proof_length + self.bit_gadget.proof_length

    @property
    def verifier_length(self) -> int:
        """Extension elements a verifier share holds per query point."""
        return self.norm_gadget.wires + 1 + 2 * self.bit_gadget.wires + 1

    @functools.cached_property
    def digest(self) -> bytes:
        """SHA-256 of every setting; bound into every hash of the protocol."""
        fields = [
            FIELD.modulus,
            self.dimension,
            self.norm_bound,
            self.wraparound_checks,
            self.query_points,
            self.calls,
            self.extras,
            *(v for pair in self.extra_ranges for v in pair),
            *self.steps,
            len(self.extra_order),
            *(v for pair in self.extra_order for v in pair),
        ]
        encoded = b"".join(v.to_bytes(9, "little", signed=True) for v in fields)
        return hashlib.sha256(b"veilfl/bounds/v1/parameters" + encoded).digest()

    def check_pass_bound(self) -> float:
        """Lemma W's bound on one check passing for a wrapped norm: 1/2 when sound."""
        return check_pass_bound(modulus=FIELD.modulus, bound=self.wraparound_bound)

    def completeness_error(self) -> float:
        """The probability that an honest client fails a check (it then redraws its
        blinds, which changes the checks; the retry reveals nothing beyond this)."""
        return self.wraparound_checks * honest_failure_bound(
            norm_bound=self.norm_bound, bound=self.wraparound_bound
        )

    def soundness_error(self, *, trials: int = 1) -> float:
        """An upper bound on P(an invalid contribution is accepted).

        ``trials · ε^κ`` for the Fiat-Shamir wraparound checks (ε from Lemma W; a
        grinding client tries ``trials`` random-oracle queries), plus the FLP's error
        (verifier randomness, chosen after the upload, so not ground), plus the
        consistency check's when more than t aggregators answer (docs/verified-bounds.md).
        """
        if not _is_int(trials) or trials < 1:
            raise ConfigurationError("trials must be a whole number of at least 1.")
        p, k = FIELD.modulus, self.query_points
        wraparound = trials * self.check_pass_bound() ** self.wraparound_checks
        flp = (
            self.norm_gadget.soundness_error(points=k)
            + self.bit_gadget.soundness_error(points=k)
            + float(p) ** (-2 * k)
        )
        largest = max(self.norm_gadget.gadget_nodes, self.bit_gadget.gadget_nodes)
        consistency = max(float((largest - 1) / (p * p - p - 2 * k)) ** k, float(p) ** (-2 * k))
        return min(1.0, wraparound + flp + consistency)

    def max_summands(self) -> int:
        """How many valid contributions can be summed before a coordinate could wrap.

        Every update coordinate of a valid contribution is at most B in magnitude and
        every extra within its range, so a sum of this many decodes exactly.
        """
        largest = max([self.norm_bound, *(max(-lo, hi) for lo, hi in self.extra_ranges)])
        return _HALF // largest

    @classmethod
    def _unchecked(cls, **settings: object) -> BoundsParameters:
        """An instance whose __post_init__ has not run (to probe candidate settings)."""
        candidate = object.__new__(cls)
        for name, value in settings.items():
            object.__setattr__(candidate, name, value)
        return candidate

    @classmethod
    def largest_norm_bound(
        cls,
        *,
        dimension: int,
        extra_ranges: tuple[tuple[int, int], ...] = (),
        wraparound_checks: int = 136,
        query_points: int = 2,
        calls: int = 252,
        trials: int = GRINDING_TRIALS,
        target: float = SOUNDNESS_TARGET,
        extra_steps: tuple[int, ...] = (),
        extra_order: tuple[tuple[int, int], ...] = (),
    ) -> int:
        """The largest B whose soundness error with ``trials`` trials is at most ``target``.

        Raises:
            ConfigurationError: if even B = 1 misses the target.
        """

        def sound(bound: int) -> bool:
            candidate = cls._unchecked(
                dimension=dimension,
                norm_bound=bound,
                extra_ranges=extra_ranges,
                wraparound_checks=wraparound_checks,
                query_points=query_points,
                calls=calls,
                extra_steps=extra_steps,
                extra_order=extra_order,
            )
            try:
                candidate._check_types_and_ranges()
            except ConfigurationError:
                return False
            return candidate.soundness_error(trials=trials) <= target

        if not sound(1):
            raise ConfigurationError("No norm bound reaches the target with these settings.")
        low, high = 1, math.isqrt(FIELD.modulus - 1)
        while low < high:
            middle = (low + high + 1) // 2
            if sound(middle):
                low = middle
            else:
                high = middle - 1
        return low
