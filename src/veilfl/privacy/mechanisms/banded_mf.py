"""Banded matrix factorisation as a :class:`~veilfl.privacy.mechanisms.base.PrivacyMechanism`.

Banded MF (Choquette-Choo et al. 2023, "(Amplified) Banded Matrix Factorization: A
unified approach to private training"; McKenna 2024): no sampling; every client takes
part in at most K released rounds at least b apart (``--dp-max-participations``,
``--dp-min-separation``, as DP-FTRL), and release t is

    r_t = (sum_{j<b} c_j x_{t-j}) / 2^bits + z_t,   z_t ~ N(0, (z·C)^2 I) fresh,

with b bands (b = the minimum separation, so two participations never share a
release) and c = round(2^bits · c*) the integer scaling of the strategy c* that
:func:`~veilfl.privacy.banded_toeplitz.optimize_banded_toeplitz` finds. The
coordinator decodes the round sums by forward substitution
(:class:`~veilfl.privacy.mechanisms.schedule.ToeplitzReleaseSchedule`).

The strategy is a deterministic function of the run's description alone (K, b and
this mechanism's options, all in the run's JSON and so its run id): it is optimised
for the K·b rounds over which the most frequent participant takes its K turns (the
run's rounds under round-robin selection; at most :data:`STRATEGY_HORIZON_CAP`), once
per process (cached), so a resumed run, a client's policy check and the report all
use the same one. Every sensitivity and epsilon is the *rounded* strategy's
(:class:`~veilfl.privacy.integer_strategy.IntegerToeplitzStrategy`), which is also what
the aggregators apply in the field under distributed noise; epsilon is the matrix
mechanism's (:func:`~veilfl.privacy.mf_accounting.matrix_mechanism_epsilon`), the same
number against the coordinator and the public under distributed noise.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from veilfl.declared import setting
from veilfl.errors import ConfigurationError
from veilfl.privacy.mechanisms.base import DealtNoisePlan
from veilfl.privacy.mechanisms.matrix_mechanism import MatrixMechanism
from veilfl.privacy.mechanisms.schedule import ReleaseSchedule, ToeplitzReleaseSchedule

if TYPE_CHECKING:
    from veilfl.privacy.dp_config import DpConfig
    from veilfl.privacy.integer_strategy import IntegerToeplitzStrategy

__all__ = ["STRATEGY_HORIZON_CAP", "BandedMatrixFactorization", "BandedOptions"]

STRATEGY_HORIZON_CAP = 2048
"""The most rounds a strategy is optimised over (its coefficients settle long before)."""


@dataclass(frozen=True)
class BandedOptions:
    """Banded MF's own settings.

    Attributes:
        scale_bits: The fixed-point scale of the strategy's coefficients (2^bits):
            more bits follow the optimised strategy more closely; fewer keep the
            aggregators' releases inside the field under distributed noise.
    """

    scale_bits: int = setting(
        default=8,
        flag="--dp-banded-scale-bits",
        help="banded MF: bits of fixed-point scale of the strategy's integer coefficients "
        "(fewer keep distributed releases inside the field)",
        at_least=1,
        at_most=30,
    )


@functools.lru_cache(maxsize=32)
def _rounded_strategy(
    *, horizon: int, bands: int, participations: int, bits: int
) -> IntegerToeplitzStrategy:
    from veilfl.privacy.banded_toeplitz import optimize_banded_toeplitz
    from veilfl.privacy.integer_strategy import IntegerToeplitzStrategy

    optimal = optimize_banded_toeplitz(
        rounds=horizon, bands=bands, max_participations=participations
    )
    return IntegerToeplitzStrategy.rounded(optimal, bits)


class BandedMatrixFactorization(MatrixMechanism):
    """A b-banded Toeplitz strategy, at most K participations b apart."""

    name: ClassVar[str] = "banded"
    title: ClassVar[str] = "Banded MF"
    summary: ClassVar[str] = (
        "banded matrix factorisation (Choquette-Choo et al. 2023), no sampling, bands = "
        "--dp-min-separation, the same epsilon against the coordinator and the public "
        "(with --dp distributed)"
    )
    samples_clients: ClassVar[bool] = False
    placements: ClassVar[frozenset[str]] = frozenset({"central", "distributed"})
    options: ClassVar[type[Any] | None] = BandedOptions

    def strategy(self, config: DpConfig) -> IntegerToeplitzStrategy:
        """The run's rounded strategy (module docstring), optimised once per process.

        Raises:
            ConfigurationError: without ``--dp-max-participations``.
        """
        if config.max_participations is None:
            raise ConfigurationError("--dp-mechanism banded needs --dp-max-participations.")
        options = config.options if isinstance(config.options, BandedOptions) else BandedOptions()
        k, b = config.max_participations, config.min_separation
        return _rounded_strategy(
            horizon=min(k * b, STRATEGY_HORIZON_CAP),
            bands=b,
            participations=k,
            bits=options.scale_bits,
        )

    def release_schedule(self, config: DpConfig, *, rounds: int) -> ReleaseSchedule:
        """The rounded strategy's integer coefficients, over the scale 2^bits under
        central noise (the coordinator releases C' x + z) and over 1 under distributed
        noise (the aggregators release C_int a + z_int and do not divide: the decoder's
        forward substitution then needs no scale)."""
        strategy = self.strategy(config)
        scale = 1 if config.placement == "distributed" else 2**strategy.bits
        return ToeplitzReleaseSchedule(coefficients=strategy.coefficients, scale=scale)

    def dealt_noise(
        self, config: DpConfig, *, per_update_bound: float, expected_clients: float
    ) -> DealtNoisePlan:
        """A fresh block per release of sigma = z·B·2^bits on the update coordinates
        (the integer strategy's scale), combined by the ``"toeplitz"`` schedule; no bit
        (fixed C)."""
        strategy = self.strategy(config)
        return DealtNoisePlan(
            schedule=ToeplitzReleaseSchedule.name,
            update_stddev=strategy.noise_stddev(
                noise_multiplier=config.noise_multiplier, per_update_bound=per_update_bound
            ),
            coefficients=strategy.coefficients,
        )

    def equivalent_noise_multiplier(
        self, config: DpConfig, *, rounds: int, expected_clients: float
    ) -> float:
        """The decoded noise is C'^-1 z under either placement (the aggregators' C_int^-1
        z_int is the same in units of the bound), so: blocks of z through the rounded
        strategy at its fixed-point scale (the interface's default would read the
        dealt blocks' 2^bits scale against the central schedule)."""
        from veilfl.privacy.noise_advisor import equivalent_multiplier

        strategy = self.strategy(config)
        schedule = ToeplitzReleaseSchedule(
            coefficients=strategy.coefficients, scale=2**strategy.bits
        )
        return equivalent_multiplier(config.noise_multiplier, schedule, rounds=rounds)

    def derivation_note(
        self, config: DpConfig, *, target_epsilon: float, rounds: int, sample_rate: float
    ) -> str:
        """What the derived multiplier spends, and the strategy's shape."""
        return (
            f"noise multiplier {config.noise_multiplier:.4f} spends epsilon "
            f"{target_epsilon:.3f} over {rounds} {self.title} rounds (K "
            f"{config.max_participations or 1}, b {config.min_separation} bands, sensitivity "
            f"{self.sensitivity(config, rounds=rounds):.3f}, {config.accounting.upper()})"
        )
