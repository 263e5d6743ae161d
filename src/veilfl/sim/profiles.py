"""Heterogeneous clients for simulations: speeds, dropouts, late joiners.

Seeded (``numpy.random.default_rng``): these draws are simulation settings, not
secrets or DP noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from veilfl.errors import ConfigurationError

__all__ = ["ClientProfiles"]


@dataclass(frozen=True)
class ClientProfiles:
    """Per-client training time, dropout chance and join time.

    Training takes ``base_seconds · speed_i · jitter`` virtual seconds, where
    ``speed_i ~ LogNormal(0, speed_sigma)`` is fixed per client (some are always
    slow) and ``jitter ~ LogNormal(0, jitter_sigma)`` varies per task.

    Attributes:
        base_seconds: Median training time of one task.
        speed_sigma: Spread of client speeds (log-normal sigma).
        jitter_sigma: Spread of one client's task times.
        dropout: Chance a task is never finished.
        late_fraction: Fraction of clients that join late.
        late_by_seconds: Late joiners join uniformly within this many seconds.
        seed: Seeds every draw.
    """

    base_seconds: float = 10.0
    speed_sigma: float = 0.5
    jitter_sigma: float = 0.2
    dropout: float = 0.0
    late_fraction: float = 0.0
    late_by_seconds: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.base_seconds <= 0 or self.speed_sigma < 0 or self.jitter_sigma < 0:
            raise ConfigurationError("Client profile times and spreads must be positive.")
        if not 0 <= self.dropout < 1 or not 0 <= self.late_fraction <= 1:
            raise ConfigurationError("dropout must be in [0, 1) and late_fraction in [0, 1].")

    def speeds(self, count: int) -> np.ndarray:
        """Each client's fixed speed factor."""
        return np.random.default_rng([self.seed, 1]).lognormal(0.0, self.speed_sigma, count)

    def join_times(self, count: int) -> np.ndarray:
        """Each client's join time (0 for the punctual ones)."""
        rng = np.random.default_rng([self.seed, 2])
        late = rng.random(count) < self.late_fraction
        return np.where(late, rng.uniform(0.0, self.late_by_seconds, count), 0.0)

    def task_rng(self) -> np.random.Generator:
        """The generator of per-task jitter and dropouts."""
        return np.random.default_rng([self.seed, 3])
