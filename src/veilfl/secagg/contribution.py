"""A client's contribution to a secure sum: what it holds, how it is encoded, proven,
shared and sealed, and how a sum of contributions decodes.

A contribution is ``d + 6`` integers (the *measurement*):

* the weighted update ``w·Δ``, clipped to L2 norm ``norm_bound``, scaled to integer units
  and rounded stochastically (unbiased), with L2 norm at most the integer bound B the
  field allows a sound proof for (:meth:`BoundsParameters.largest_norm_bound`);
* the FedAvg weight w in [0, 1], as ``round(w · 1024)``;
* the weighted, range-clipped training loss ``w · min(loss, 16) / 16``, likewise, and
  proven to be at most the weight coordinate: a client's loss moves the decoded
  ``Σ w·loss`` by at most ``16·w``, as an honest client's worst loss would, so a
  client of weight 0 adds no loss at all and the mean loss ``Σ w·loss / Σ w`` stays a
  weighted mean of values in [0, 16];
* the client's federated evaluation of the model it received (zeros when it evaluated
  nothing, and under DP, where it is not reported): the examples n, at most
  :data:`EVAL_MAX_EXAMPLES` (a larger evaluation counts as that many examples, its
  means unchanged), the summed loss with the mean loss range-clipped to [0, 16], and
  the correct predictions, all three in units of ``1/EVAL_UNITS`` of an example (the
  loss in units of ``16/EVAL_UNITS``), with the count and the correct predictions on
  whole examples; the loss sum and the correct count are proven to be at most the
  count, so a client can neither claim more right answers than examples nor a loss
  above 16 per example, and its evaluation weighs as many examples as it says;
* the clipped-or-not bit as ``2b - 1``, exactly -1 or +1 (so the sum is twice the sum of
  ``b - 1/2``, the sensitivity-1/2 form the accountant charges under adaptive DP
  clipping). The proof admits nothing else: a 0 would let a client stay out of the
  count it is charged for. Clients that report no bit (no adaptive clipping) send +1, a
  constant that carries no information; the sum is then never read.

None of it travels in the clear. The client proves, in zero knowledge, that the update's
norm is at most B, each extra lies in its range (on its step) and the loss is at most
the weight, the evaluation's loss sum and correct count at most its count
(:mod:`veilfl.secagg.bounds`), shares
the measurement t-of-m (t - 1 aggregators get a 32-byte seed) and seals aggregator j's
share to j's HPKE key, binding run, round, client and j. Since every valid measurement is
bounded, a sum of up to :meth:`ContributionLayout.max_summands` of them never wraps: the
aggregators refuse longer participant lists.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.envelope import PublicKey, ShareContext, seal
from veilfl.crypto.field import MERSENNE_31, FieldArray
from veilfl.errors import ConfigurationError
from veilfl.secagg.bounds_messages import ContributionShare
from veilfl.secagg.bounds_parameters import BoundsParameters, calls_for_dimension
from veilfl.secagg.bounds_prover import prove_contribution
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.strategy.federated_evaluation import FederatedEvaluation

__all__ = [
    "EVAL_MAX_EXAMPLES",
    "EVAL_UNITS",
    "EXTRA_COORDINATES",
    "EXTRA_UNITS",
    "LOSS_RANGE",
    "ContributionLayout",
    "DecodedSum",
    "SealedShare",
    "contribution_binding",
    "seal_contribution",
]

#: Coordinates after the update: the FedAvg weight, the weighted loss, the evaluation's
#: count, loss sum and correct count, the clipped bit (last).
EXTRA_COORDINATES = 6
#: Integer units of 1.0 in the weight and loss coordinates.
EXTRA_UNITS = 1024
#: Losses are clipped to [0, LOSS_RANGE] and divided by it before sharing.
LOSS_RANGE = 16.0
#: Integer units of one example in the evaluation coordinates.
EVAL_UNITS = 8
#: The most examples one client's federated evaluation counts for under secure
#: aggregation (its coordinates then reach 2^15, so 32,767 contributions sum unwrapped).
EVAL_MAX_EXAMPLES = 4096
_EVAL_RANGE = (0, EVAL_MAX_EXAMPLES * EVAL_UNITS)
_EXTRA_RANGES = ((0, EXTRA_UNITS), (0, EXTRA_UNITS), _EVAL_RANGE, _EVAL_RANGE, _EVAL_RANGE, (-1, 1))
# Whole examples for the count and the correct count; the bit is -1 or +1, never 0.
_EXTRA_STEPS = (1, 1, EVAL_UNITS, 1, EVAL_UNITS, 2)
# The weighted loss is at most the weight; the evaluation's loss sum (at most 16 per
# example) and correct count are at most its count.
_EXTRA_ORDER = ((1, 0), (3, 2), (4, 2))
_ROUNDING_TRIES = 8


@functools.lru_cache(maxsize=32)
def _bounds(dimension: int, wraparound_checks: int) -> BoundsParameters:
    calls = calls_for_dimension(dimension)
    bound = BoundsParameters.largest_norm_bound(
        dimension=dimension,
        extra_ranges=_EXTRA_RANGES,
        extra_steps=_EXTRA_STEPS,
        extra_order=_EXTRA_ORDER,
        wraparound_checks=wraparound_checks,
        calls=calls,
    )
    return BoundsParameters(
        dimension=dimension,
        norm_bound=bound,
        extra_ranges=_EXTRA_RANGES,
        extra_steps=_EXTRA_STEPS,
        extra_order=_EXTRA_ORDER,
        wraparound_checks=wraparound_checks,
        calls=calls,
    )


def contribution_binding(run_id: str, round_id: int, client_id: str) -> bytes:
    """The context a contribution's proof is bound to (run, round, client)."""
    return b"\x00".join(
        [b"veilfl-contribution-v1", run_id.encode(), b"%d" % round_id, client_id.encode()]
    )


@dataclass(frozen=True)
class DecodedSum:
    """A reconstructed sum of contributions, in model units.

    Attributes:
        weighted_delta_sum: ``Σ w·Δ``.
        total_weight: ``Σ w``.
        weighted_loss: ``Σ w·min(loss, 16)``.
        unclipped_sum: ``Σ (b - 1/2)`` of the clipped-or-not bits (0 without them).
        evaluation: The summed federated evaluations; None when no client evaluated.
    """

    weighted_delta_sum: npt.NDArray[np.float64]
    total_weight: float
    weighted_loss: float
    unclipped_sum: float
    evaluation: FederatedEvaluation | None = None


@dataclass(frozen=True)
class ContributionLayout:
    """Encoding and proof parameters of contributions to a model of ``dimension``
    parameters under ``config``.

    Raises:
        ConfigurationError: if the model is too large for a sound norm proof at this
            field (more than about 7.7 million parameters).
    """

    dimension: int
    config: SecureAggregationConfig

    def __post_init__(self) -> None:
        if self.dimension < 1:
            raise ConfigurationError("A model needs at least one parameter.")
        self.scale  # noqa: B018  (raises for a model too large to encode)

    @property
    def bounds(self) -> BoundsParameters:
        """The proof's parameters (B is the largest sound integer norm bound)."""
        return _bounds(self.dimension, self.config.wraparound_checks)

    @property
    def measurement_length(self) -> int:
        """``d + 6``: what aggregators sum."""
        return self.dimension + EXTRA_COORDINATES

    @property
    def scale(self) -> float:
        """Integer units per model unit: ``norm_bound`` maps to a norm whose stochastic
        rounding stays within B with room to spare (rounding adds about √d/2)."""
        bound = self.bounds.norm_bound
        target = math.sqrt(max((0.95 * bound) ** 2 - self.dimension / 4, 0.0))
        if target < bound / 8:
            raise ConfigurationError(
                f"A model of {self.dimension} parameters is too large for a sound norm proof "
                f"in GF(2^31 - 1) (rounding alone would exceed the bound {bound}); use a "
                "smaller model or more wraparound checks."
            )
        return target / self.config.norm_bound

    def max_summands(self) -> int:
        """How many valid contributions can be summed without wrapping the field."""
        return self.bounds.max_summands()

    @property
    def rounding_noise(self) -> float:
        """The expected L2 norm, in model units, of the noise stochastic rounding adds to
        one contribution: each coordinate's rounding has variance at most 1/4 integer
        units (1/6 on average over uniform fractional parts), so about sqrt(d / 6) / scale.
        It is unbiased and averages down over clients, but against a norm bound set
        far above the updates' real norms it can drown them."""
        return math.sqrt(self.dimension / 6) / self.scale

    def precision_warning(self) -> str | None:
        """A one-line warning when rounding noise is a large part of the norm bound
        (over half of it), with what to change; None otherwise."""
        noise = self.rounding_noise
        bound = self.config.norm_bound
        if noise <= bound / 2:
            return None
        return (
            f"secure aggregation encodes each weighted update of {self.dimension:,} "
            f"parameters in steps of {1 / self.scale:.3g} (the proof's integer norm bound "
            f"{self.bounds.norm_bound} over --norm-bound {bound:g}), so rounding adds noise "
            f"of norm about {noise:.3g} per client, {noise / bound:.0%} of the bound; set "
            "--norm-bound close to the updates' real norms (a clipped update loses less than "
            "a drowned one), or use a smaller model"
        )

    def encode(
        self,
        weighted_update: npt.NDArray[np.floating],
        *,
        weight: float,
        loss: float,
        unclipped: bool | None,
        rng: CsprngStream,
        evaluation: FederatedEvaluation | None = None,
    ) -> npt.NDArray[np.int64]:
        """The measurement for ``w·Δ`` (already clipped to ``norm_bound``).

        Args:
            weighted_update: ``w·Δ``, clipped.
            weight: w, in [0, 1].
            loss: The training loss (clipped to [0, 16]; at most the weight once weighted).
            unclipped: Under adaptive clipping, whether the update needed no clipping;
                None when the run asks for no bit (then +1 is sent, a constant).
            rng: Randomness for the stochastic rounding.
            evaluation: The client's federated evaluation of the model it received,
                or None (zeros are sent). Over more than :data:`EVAL_MAX_EXAMPLES`
                examples it counts as that many, with the same means.

        Raises:
            ConfigurationError: if the update has the wrong length, its norm exceeds the
                bound, or the weight is outside [0, 1].
        """
        update = np.asarray(weighted_update, dtype=np.float64)
        if update.shape != (self.dimension,):
            raise ConfigurationError(
                f"The update has {update.size} values; the model has {self.dimension}."
            )
        norm = float(np.linalg.norm(update))
        if not norm <= self.config.norm_bound * (1 + 1e-9):
            raise ConfigurationError(
                f"The weighted update's norm {norm:.6g} exceeds the norm bound "
                f"{self.config.norm_bound}; clip it first."
            )
        if not 0.0 <= weight <= 1.0:
            raise ConfigurationError(f"A contribution's weight must be in [0, 1]; got {weight}.")
        scaled = update * self.scale
        limit = self.bounds.norm_bound**2
        rounded = _stochastic_round(scaled, rng)
        for _ in range(_ROUNDING_TRIES - 1):
            if float(np.dot(rounded, rounded)) <= limit:
                break
            rounded = _stochastic_round(scaled, rng)
        else:  # never seen in practice: round to nearest at a scale that cannot exceed B
            shrink = (self.bounds.norm_bound - math.sqrt(self.dimension) / 2) / max(
                float(np.linalg.norm(scaled)), 1e-300
            )
            rounded = np.rint(scaled * min(1.0, shrink)).astype(np.int64)
        weight_units = round(weight * EXTRA_UNITS)
        loss_units = round(weight * min(max(loss, 0.0), LOSS_RANGE) / LOSS_RANGE * EXTRA_UNITS)
        extras = np.array(
            [
                weight_units,
                min(loss_units, weight_units),
                *_evaluation_units(evaluation, rng),
                -1 if unclipped is False else 1,
            ],
            dtype=np.int64,
        )
        return np.concatenate([rounded, extras])

    def decode_sum(self, field_sum: FieldArray) -> DecodedSum:
        """A reconstructed field sum of valid contributions, in model units."""
        signed = np.asarray(field_sum, dtype=np.uint64).astype(np.int64)
        half = (MERSENNE_31.modulus - 1) // 2
        np.subtract(signed, MERSENNE_31.modulus, out=signed, where=signed > half)
        d = self.dimension
        weight, loss, count, loss_sum, correct, bits = (float(v) for v in signed[d:])
        evaluation = None
        if count > 0:
            evaluation = FederatedEvaluation(
                examples=count / EVAL_UNITS,
                loss_sum=loss_sum / EVAL_UNITS * LOSS_RANGE,
                correct=min(correct, count) / EVAL_UNITS,
            )
        return DecodedSum(
            weighted_delta_sum=signed[:d].astype(np.float64) / self.scale,
            total_weight=weight / EXTRA_UNITS,
            weighted_loss=loss / EXTRA_UNITS * LOSS_RANGE,
            unclipped_sum=bits / 2,
            evaluation=evaluation,
        )


def _evaluation_units(
    evaluation: FederatedEvaluation | None, rng: CsprngStream
) -> tuple[int, int, int]:
    """The count, loss-sum and correct-count coordinates of one client's evaluation."""
    if evaluation is None or evaluation.examples < 1:
        return 0, 0, 0
    examples = min(round(evaluation.examples), EVAL_MAX_EXAMPLES)
    mean_loss = min(max(evaluation.loss, 0.0), LOSS_RANGE)  # finite, as loss_sum is
    correct = min(round(evaluation.accuracy * examples), examples)
    count_units = examples * EVAL_UNITS
    scaled_loss = np.array([examples * mean_loss / LOSS_RANGE * EVAL_UNITS])
    loss_units = min(int(_stochastic_round(scaled_loss, rng)[0]), count_units)
    return count_units, loss_units, correct * EVAL_UNITS


def _stochastic_round(values: npt.NDArray[np.float64], rng: CsprngStream) -> npt.NDArray[np.int64]:
    floor = np.floor(values)
    up = rng.uniform_unit(values.size).reshape(values.shape) < (values - floor)
    return (floor + up).astype(np.int64)


@dataclass(frozen=True)
class SealedShare:
    """Share ``aggregator_index`` of one client's contribution, sealed to that aggregator."""

    aggregator_index: int
    envelope: bytes


def seal_contribution(
    measurement: npt.NDArray[np.int64],
    *,
    layout: ContributionLayout,
    public_keys: Sequence[PublicKey],
    run_id: str,
    round_id: int,
    client_id: str,
    rng: CsprngStream,
) -> list[SealedShare]:
    """Prove, share and seal a measurement, one envelope per aggregator.

    Raises:
        ConfigurationError: if the number of keys is not m, or the measurement is not
            valid (an honest client never sends an invalid one).
    """
    config = layout.config
    if len(public_keys) != config.num_aggregators:
        raise ConfigurationError(
            f"Secure aggregation needs {config.num_aggregators} aggregator keys; "
            f"got {len(public_keys)}."
        )
    shares: list[ContributionShare] = prove_contribution(
        measurement,
        params=layout.bounds,
        threshold=config.threshold,
        num_shares=config.num_aggregators,
        binding=contribution_binding(run_id, round_id, client_id),
        rng=rng,
    )
    return [
        SealedShare(
            aggregator_index=share.index,
            envelope=seal(
                share.to_bytes(),
                public_keys[share.index - 1],
                context=ShareContext(
                    run_id=run_id,
                    round_id=round_id,
                    client_id=client_id,
                    aggregator_index=share.index,
                ),
            ),
        )
        for share in shares
    ]
