"""What every matrix-factorisation mechanism shares: its accounting.

A matrix mechanism releases C x + z with z ~ N(0, (z·clip)^2 I) per release; its
epsilon is that of one Gaussian at multiplier z / sensitivity, the sensitivity being
the strategy's min-separation sensitivity under (K, b)
(:mod:`veilfl.privacy.mf_accounting`). Banded MF and BLT differ in their strategy,
their schedule and their noise; they share the three methods here.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Protocol

from veilfl.privacy.mechanisms.base import PrivacyMechanism

if TYPE_CHECKING:
    from veilfl.privacy.dp_config import DpConfig

__all__ = ["MatrixMechanism", "MinSeparationStrategy"]


class MinSeparationStrategy(Protocol):
    """A strategy that knows its sensitivity under min-separation participation."""

    def sensitivity(self, *, rounds: int, max_participations: int, min_separation: int) -> float:
        """Sensitivity over ``rounds`` releases, in units of the clipping norm."""
        ...


class MatrixMechanism(PrivacyMechanism):
    """A mechanism whose release is one Gaussian mechanism on its strategy matrix."""

    @abstractmethod
    def strategy(self, config: DpConfig) -> MinSeparationStrategy:
        """The run's strategy (the one its releases really apply)."""

    def sensitivity(self, config: DpConfig, *, rounds: int) -> float:
        """The strategy's (K, b) min-separation sensitivity over ``rounds`` releases."""
        if rounds < 1:
            return 0.0
        return self.strategy(config).sensitivity(
            rounds=rounds,
            max_participations=config.max_participations or rounds,
            min_separation=config.min_separation,
        )

    def planned_epsilon(self, config: DpConfig, *, rounds: int, sample_rate: float) -> float:
        """:func:`~veilfl.privacy.mf_accounting.matrix_mechanism_epsilon` at the
        strategy's sensitivity (``sample_rate`` unused: no amplification)."""
        from veilfl.privacy.mf_accounting import matrix_mechanism_epsilon

        return matrix_mechanism_epsilon(
            noise_multiplier=config.noise_multiplier,
            sensitivity=self.sensitivity(config, rounds=rounds),
            delta=config.delta,
            accounting=config.accounting,
        )

    def noise_multiplier_for(
        self, config: DpConfig, *, target_epsilon: float, rounds: int, sample_rate: float
    ) -> float:
        """:func:`~veilfl.privacy.mf_accounting.matrix_mechanism_noise_multiplier_for`
        at the strategy's sensitivity over ``rounds``."""
        from veilfl.privacy.mf_accounting import matrix_mechanism_noise_multiplier_for

        return matrix_mechanism_noise_multiplier_for(
            target_epsilon=target_epsilon,
            sensitivity=self.sensitivity(config, rounds=rounds),
            delta=config.delta,
            accounting=config.accounting,
        )
