"""Privacy accounting for client-level DP: the sampled Gaussian mechanism over rounds.

Each round samples clients with probability q and releases the sum of their clipped
updates plus Gaussian noise of standard deviation z·C: a Poisson-subsampled Gaussian
mechanism with noise multiplier z. Over rounds these compose; the accountant is
Google's ``dp-accounting`` Rényi-DP accountant (Mironov 2017; Mironov, Talwar and
Zhang 2019), not formulas of our own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import dp_accounting

from veilfl.errors import ConfigurationError, PrivacyError

__all__ = ["RDP_ORDERS", "ClientLevelAccountant", "epsilon_for", "noise_multiplier_for"]

#: Rényi orders the accountant optimises over (TensorFlow Privacy's list, from 1.75:
#: smaller fractional orders rarely give the best bound and do not always converge).
RDP_ORDERS: tuple[float, ...] = (
    1.75,
    2.0,
    2.25,
    2.5,
    3.0,
    3.5,
    4.0,
    4.5,
    *map(float, range(5, 64)),
    128.0,
    256.0,
    512.0,
)


def _event(*, noise_multiplier: float, sample_rate: float, rounds: int) -> dp_accounting.DpEvent:
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sample_rate < 1.0:
        gaussian = dp_accounting.PoissonSampledDpEvent(sample_rate, gaussian)
    return dp_accounting.SelfComposedDpEvent(gaussian, rounds)


def _check(noise_multiplier: float, sample_rate: float, delta: float) -> None:
    if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
        raise ConfigurationError("The noise multiplier must be a positive number.")
    if not 0 < sample_rate <= 1:
        raise ConfigurationError("The client sampling rate must be in (0, 1].")
    if not 0 < delta < 1:
        raise ConfigurationError("delta must be in (0, 1).")


def epsilon_for(*, noise_multiplier: float, sample_rate: float, rounds: int, delta: float) -> float:
    """Epsilon at ``delta`` after ``rounds`` rounds of the sampled Gaussian mechanism."""
    _check(noise_multiplier, sample_rate, delta)
    if rounds == 0:
        return 0.0
    accountant = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS))
    accountant.compose(
        _event(noise_multiplier=noise_multiplier, sample_rate=sample_rate, rounds=rounds)
    )
    return float(accountant.get_epsilon(delta))


def noise_multiplier_for(
    *, target_epsilon: float, sample_rate: float, rounds: int, delta: float
) -> float:
    """The smallest noise multiplier (to 0.1%) spending ``target_epsilon`` in ``rounds``.

    Raises:
        ConfigurationError: for a non-positive target or too many rounds.
    """
    if not target_epsilon > 0:
        raise ConfigurationError("The target epsilon must be positive.")
    low, high = 1e-3, 1.0

    def spent(z: float) -> float:
        return epsilon_for(noise_multiplier=z, sample_rate=sample_rate, rounds=rounds, delta=delta)

    while spent(high) > target_epsilon:
        high *= 2
        if high > 1e5:
            raise ConfigurationError(
                f"No noise multiplier reaches epsilon {target_epsilon} in {rounds} rounds."
            )
    while high - low > 1e-3 * high:
        middle = (low + high) / 2
        low, high = (middle, high) if spent(middle) > target_epsilon else (low, middle)
    return high


@dataclass
class ClientLevelAccountant:
    """Tracks epsilon round by round and says when the budget is spent.

    Attributes:
        noise_multiplier: z (noise standard deviation over clipping norm).
        sample_rate: q, the chance that a client takes part in a round.
        delta: The delta at which epsilon is reported.
        target_epsilon: The budget; None for no budget.
        rounds: Rounds released so far.
    """

    noise_multiplier: float
    sample_rate: float
    delta: float
    target_epsilon: float | None = None
    rounds: int = field(default=0)

    def __post_init__(self) -> None:
        _check(self.noise_multiplier, self.sample_rate, self.delta)

    @property
    def epsilon(self) -> float:
        """Epsilon spent so far."""
        return epsilon_for(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            rounds=self.rounds,
            delta=self.delta,
        )

    def epsilon_after(self, rounds: int) -> float:
        """Epsilon after ``rounds`` rounds in total."""
        return epsilon_for(
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            rounds=rounds,
            delta=self.delta,
        )

    def can_release(self) -> bool:
        """Whether one more round stays within the budget."""
        return self.target_epsilon is None or self.epsilon_after(
            self.rounds + 1
        ) <= self.target_epsilon * (1 + 1e-9)

    def record_round(self) -> float:
        """Count one released round; return epsilon spent so far.

        Raises:
            PrivacyError: if the round would exceed the budget.
        """
        if not self.can_release():
            raise PrivacyError(
                f"Releasing round {self.rounds + 1} would spend more than epsilon "
                f"{self.target_epsilon}; training stops here."
            )
        self.rounds += 1
        return self.epsilon
