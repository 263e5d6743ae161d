"""DP-FTRL: tree-aggregated noise whose guarantee needs no secret sampling.

DP-FTRL (Kairouz, McMahan, Song, Thakkar, Thakurta and Xu 2021, "Practical and
Private (Deep) Learning without Sampling or Shuffling") trains on noised *prefix
sums* of the clipped round sums, released by the tree mechanism
(:mod:`veilfl.privacy.tree`): every dyadic block of rounds gets Gaussian noise of
standard deviation z·C once, and the prefix sum after t rounds is the sum of the
noised blocks that cover [1, t]. Nothing in the analysis depends on who was sampled
or on keeping the sample secret, so the epsilon against the coordinator (which
knows who took part) and against the public is one number.

Participation. A client may take part in at most K rounds (``max_participations``),
any two of them at least ``min_separation`` = b rounds apart (rounds r and r' with
|r - r'| >= b; b = 1 allows consecutive rounds). The coordinator's selection, or the
clients themselves, must enforce this; the guarantee is void for a client that
takes part more often.

Sensitivity (zero-out adjacency: the client's updates replaced by zero, Kairouz et
al. 2021, Definition 1.1). The release is the vector of all noised blocks completed
so far. A client with clipped updates x_1..x_K (each of L2 norm <= C) in rounds
r_1 < ... < r_K changes block v by the sum of the x_i with r_i in v, of norm at
most C n_v, where n_v counts its rounds in v. So the squared sensitivity of the
whole release is at most C^2 sum_v n_v^2. At tree level l the blocks are disjoint,
so sum_v n_v = K (at most), and a block of 2^l rounds holds at most
min(K, ceil(2^l / b)) rounds spaced b apart; hence
sum_v n_v^2 <= max_v n_v * sum_v n_v <= K min(K, ceil(2^l / b)), and

    sensitivity^2 <= K C^2 * sum over levels l = 0..floor(log2 T) of min(K, ceil(2^l / b)).

For K = 1 this is C^2 (floor(log2 T) + 1), the single-epoch bound of Kairouz et al.
(Appendix D) and of ``dp_accounting``'s ``SingleEpochTreeAggregationDpEvent``.

Epsilon. Each block is a Gaussian mechanism with noise z·C and sensitivity C n_v;
their noises are independent. The updates are chosen adaptively (round t's updates
depend on the models released before it), so the release is an adaptive composition
of Gaussian mechanisms. Gaussian DP composes adaptively and exactly: mechanisms that
are mu_i-GDP compose to sqrt(sum mu_i^2)-GDP (Dong, Roth and Su 2022, "Gaussian
Differential Privacy"), which here is sqrt(sum_v n_v^2) / z, and that bound holds
even when which blocks a client lands in is itself chosen adaptively, as long as the
sum is bounded for every pattern, as it is above (Smith and Thakurta 2022, "Fully
Adaptive Composition for Gaussian Differential Privacy"). mu-GDP is exactly the
privacy curve of one Gaussian mechanism with multiplier 1/mu, i.e.
z / sqrt(sum bound); ``"pld"`` evaluates that curve in closed form and ``"rdp"``
bounds it through Rényi DP (which also composes adaptively). Denisov, McMahan,
Rush, Smith and Thakurta 2022 ("Improved Differential Privacy for SGD via Optimal
Private Linear Operators on Adaptive Streams") make the same argument for the
whole family of linear noise mechanisms to which the tree belongs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from veilfl.errors import ConfigurationError
from veilfl.privacy.accountant import Accounting, epsilon_of
from veilfl.privacy.ledger import PrivacyLedger
from veilfl.privacy.report import PrivacyReport
from veilfl.privacy.tree import levels_used

__all__ = [
    "TreeDpConfig",
    "dp_ftrl_epsilon",
    "dp_ftrl_noise_multiplier_for",
    "dp_ftrl_report",
    "tree_sensitivity",
]


def _check_participation(rounds: int, max_participations: int, min_separation: int) -> None:
    if rounds < 0 or max_participations < 1 or min_separation < 1:
        raise ConfigurationError(
            "DP-FTRL needs rounds >= 0, at least 1 participation and a separation of at "
            f"least 1 round; got {rounds}, {max_participations} and {min_separation}."
        )


def tree_sensitivity(*, rounds: int, max_participations: int, min_separation: int) -> float:
    """The L2 sensitivity of the tree release after ``rounds`` rounds, in units of C.

    ``sqrt(K * sum_l min(K, ceil(2^l / b)))`` over the levels that complete within
    ``rounds`` (see the module docstring for the proof), with K capped at the
    ceil(rounds / b) participations that fit.

    Raises:
        ConfigurationError: for rounds < 0, K < 1 or b < 1.
    """
    _check_participation(rounds, max_participations, min_separation)
    most = min(max_participations, math.ceil(rounds / min_separation))
    total = sum(
        min(most, math.ceil(2**level / min_separation)) for level in range(levels_used(rounds))
    )
    return math.sqrt(most * total)


def dp_ftrl_epsilon(
    *,
    noise_multiplier: float,
    rounds: int,
    max_participations: int,
    min_separation: int,
    delta: float,
    accounting: Accounting = "pld",
) -> float:
    """Epsilon of the tree release after ``rounds`` rounds, against everyone.

    Args:
        noise_multiplier: z, each block's noise standard deviation over C.
        rounds: Rounds released so far (or planned).
        max_participations: K.
        min_separation: b.
        delta: The delta epsilon is stated at.
        accounting: ``"pld"`` (exact for one Gaussian) or ``"rdp"``.

    Raises:
        ConfigurationError: for invalid arguments.
    """
    sensitivity = tree_sensitivity(
        rounds=rounds, max_participations=max_participations, min_separation=min_separation
    )
    if sensitivity == 0:
        return 0.0
    one_gaussian = PrivacyLedger.from_released_rounds(
        1, noise_multiplier=noise_multiplier / sensitivity, sample_rate=1.0
    )
    return epsilon_of(one_gaussian, delta=delta, accounting=accounting, adjacency="zero-out")


def dp_ftrl_noise_multiplier_for(
    *,
    target_epsilon: float,
    rounds: int,
    max_participations: int,
    min_separation: int,
    delta: float,
    accounting: Accounting = "pld",
) -> float:
    """The smallest block noise multiplier z (to 0.1%) that spends at most
    ``target_epsilon`` over ``rounds`` rounds.

    Raises:
        ConfigurationError: for a non-positive target or invalid arguments.
    """
    if not target_epsilon > 0:
        raise ConfigurationError("The target epsilon must be positive.")

    def spent(z: float) -> float:
        return dp_ftrl_epsilon(
            noise_multiplier=z,
            rounds=rounds,
            max_participations=max_participations,
            min_separation=min_separation,
            delta=delta,
            accounting=accounting,
        )

    low, high = 1e-3, 1.0
    while spent(high) > target_epsilon:
        low, high = high, high * 2
        if high > 1e6:
            raise ConfigurationError(f"No noise multiplier reaches epsilon {target_epsilon}.")
    while high - low > 1e-3 * high:
        middle = (low + high) / 2
        low, high = (middle, high) if spent(middle) > target_epsilon else (low, middle)
    return high


@dataclass(frozen=True)
class TreeDpConfig:
    """DP-FTRL settings of a run.

    Attributes:
        noise_multiplier: z, each tree block's noise standard deviation over C.
        clip_norm: C.
        rounds: T, the rounds planned (the tree's length).
        max_participations: K, the most rounds one client may take part in.
        min_separation: b, the fewest rounds between two of a client's rounds.
        delta: The delta epsilon is stated at.
        accounting: ``"pld"`` or ``"rdp"``.

    Raises:
        ConfigurationError: for invalid values.
    """

    noise_multiplier: float
    clip_norm: float
    rounds: int
    max_participations: int
    min_separation: int
    delta: float = 1e-5
    accounting: Accounting = "pld"

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise ConfigurationError("DP-FTRL needs a positive noise multiplier.")
        if not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise ConfigurationError("DP-FTRL needs a positive clipping norm.")
        if self.rounds < 1:
            raise ConfigurationError("DP-FTRL needs at least one round.")
        _check_participation(self.rounds, self.max_participations, self.min_separation)
        if not 0 < self.delta < 1:
            raise ConfigurationError("delta must be in (0, 1).")

    def block_stddev(self, per_update_bound: float) -> float:
        """Each block's total noise standard deviation, in the units in which one
        client's update is bounded by ``per_update_bound`` (C for floats; C·scale +
        sqrt(d)/2 for fixed-point integers, where rounding can lengthen an update)."""
        return self.noise_multiplier * per_update_bound

    def epsilon(self, rounds: int | None = None) -> float:
        """Epsilon after ``rounds`` released rounds (default: all planned)."""
        return dp_ftrl_epsilon(
            noise_multiplier=self.noise_multiplier,
            rounds=self.rounds if rounds is None else rounds,
            max_participations=self.max_participations,
            min_separation=self.min_separation,
            delta=self.delta,
            accounting=self.accounting,
        )


def dp_ftrl_report(
    config: TreeDpConfig, *, rounds_released: int, noise_from_aggregators: bool
) -> PrivacyReport:
    """The privacy report of a DP-FTRL run.

    Args:
        config: The settings.
        rounds_released: Tree steps released so far.
        noise_from_aggregators: True when the block noise is generated and
            Shamir-shared by the aggregators (:mod:`veilfl.secagg.tree_noise`) and
            the coordinator only ever reconstructs noised releases; False when the
            coordinator adds it (it then sees noiseless sums).
    """
    epsilon = config.epsilon(rounds_released)
    assumptions = [
        f"Each client takes part in at most {config.max_participations} rounds, at least "
        f"{config.min_separation} rounds apart; its updates are clipped to C.",
        "Zero-out adjacency: the noise protects what a client sent, not that it sent.",
        "No sampling assumption: the same epsilon holds against an observer who knows "
        "who took part.",
    ]
    if noise_from_aggregators:
        assumptions.append(
            "Fewer than t aggregators collude with the coordinator; each aggregator adds "
            "1/(m - t + 1) of every block's noise variance, so the honest ones add all of it."
        )
    else:
        assumptions.append("The coordinator adds the noise and sees noiseless sums: trust it.")
    return PrivacyReport(
        mechanism="DP-FTRL, tree aggregation"
        + (", noise from the aggregators" if noise_from_aggregators else ", central noise"),
        accounting=config.accounting,
        delta=config.delta,
        epsilon_public=epsilon,
        epsilon_coordinator=epsilon if noise_from_aggregators else None,
        adjacency="zero-out",
        assumptions=tuple(assumptions),
    )
