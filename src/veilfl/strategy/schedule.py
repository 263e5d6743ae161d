"""Server learning-rate schedules: η_t as a pure function of the server step t.

A run's server learning rate η (``--server-lr``) is the peak; a schedule scales it by a
multiplier in (0, 1] that depends on nothing but the step index ``t`` (the number of
rounds or buffers the server has applied before this one, counted from 0) and the
run's number of releases ``T``, never on a clock, so a resumed run continues the same
sequence. Every schedule may start with a linear warm-up over ``W`` steps,
``(t + 1) / W`` for ``t < W`` (Goyal et al. 2017); after it, with ``p = (t - W) / (T -
W)`` the progress through the rest of the run:

* ``constant``: 1.
* ``cosine``: ``f + (1 - f) (1 + cos(π p)) / 2`` (Loshchilov and Hutter 2017, one cycle).
* ``linear``: ``1 - (1 - f) p``.
* ``step``: ``γ ** floor((t - W) / s)``, the rate multiplied by γ every ``s`` steps.

``f`` is the final fraction (the multiplier the decay approaches at the end of the run)
and ``γ`` the decay factor. A new schedule is one function added to
:data:`LR_SCHEDULES`.

Under differential privacy the schedule only rescales released, noised estimates: it is
post-processing and leaves the privacy guarantee unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from veilfl.errors import ConfigurationError

__all__ = ["LR_SCHEDULES", "LearningRateSchedule"]


@dataclass(frozen=True)
class LearningRateSchedule:
    """A learning-rate schedule over a run of ``total_steps`` server steps.

    Attributes:
        name: A key of :data:`LR_SCHEDULES` (``constant``, ``cosine``, ``linear``,
            ``step``).
        total_steps: T, the rounds (or buffers) the run releases; at least 1.
        warmup_steps: W, the steps of linear warm-up; at least 0.
        final_fraction: f, the multiplier ``cosine`` and ``linear`` decay towards, in
            [0, 1].
        decay_factor: γ, what ``step`` multiplies the rate by, in (0, 1].
        step_size: s, the steps between two ``step`` decays; at least 1.

    Raises:
        ConfigurationError: for an unknown name or a value out of range.
    """

    name: str = "constant"
    total_steps: int = 1
    warmup_steps: int = 0
    final_fraction: float = 0.0
    decay_factor: float = 0.5
    step_size: int = 10

    def __post_init__(self) -> None:
        if self.name not in LR_SCHEDULES:
            raise ConfigurationError(
                f"The learning-rate schedule {self.name!r} is not known; choose one of "
                f"{', '.join(sorted(LR_SCHEDULES))}."
            )
        if self.total_steps < 1 or self.warmup_steps < 0 or self.step_size < 1:
            raise ConfigurationError(
                "A learning-rate schedule needs at least 1 step, no negative warm-up and a "
                f"step size of at least 1; got {self.total_steps}, {self.warmup_steps} and "
                f"{self.step_size}."
            )
        if not 0 <= self.final_fraction <= 1:
            raise ConfigurationError(
                f"The final fraction must lie in [0, 1]; got {self.final_fraction}."
            )
        if not 0 < self.decay_factor <= 1:
            raise ConfigurationError(
                f"The decay factor must lie in (0, 1]; got {self.decay_factor}."
            )

    @property
    def is_constant(self) -> bool:
        """Whether every step has multiplier 1 (no warm-up, no decay)."""
        return self.name == "constant" and self.warmup_steps == 0

    def multiplier(self, step: int) -> float:
        """η_t / η for step ``t`` (counted from 0); steps past the run keep the last
        decay.

        Raises:
            ConfigurationError: for a negative step.
        """
        if step < 0:
            raise ConfigurationError(f"A server step is counted from 0; got {step}.")
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return LR_SCHEDULES[self.name](self, step - self.warmup_steps)

    def rate(self, base: float, step: int) -> float:
        """η_t = ``base`` × :meth:`multiplier`."""
        return base * self.multiplier(step)

    def progress(self, since_warmup: int) -> float:
        """p in [0, 1]: how far the decay has gone after ``since_warmup`` steps."""
        remaining = self.total_steps - self.warmup_steps
        return 1.0 if remaining <= 0 else min(1.0, since_warmup / remaining)


def _constant(schedule: LearningRateSchedule, since_warmup: int) -> float:
    return 1.0


def _cosine(schedule: LearningRateSchedule, since_warmup: int) -> float:
    f = schedule.final_fraction
    return f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * schedule.progress(since_warmup)))


def _linear(schedule: LearningRateSchedule, since_warmup: int) -> float:
    return 1.0 - (1.0 - schedule.final_fraction) * schedule.progress(since_warmup)


def _step(schedule: LearningRateSchedule, since_warmup: int) -> float:
    return float(schedule.decay_factor ** (since_warmup // schedule.step_size))


LR_SCHEDULES: dict[str, Callable[[LearningRateSchedule, int], float]] = {
    "constant": _constant,
    "cosine": _cosine,
    "linear": _linear,
    "step": _step,
}
"""The schedules by name: each takes the schedule and the steps since warm-up ended
and gives the multiplier of the server learning rate."""
