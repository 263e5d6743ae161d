"""Server learning-rate schedules against an independent, step-by-step computation."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.errors import ConfigurationError
from veilfl.strategy.schedule import LR_SCHEDULES, LearningRateSchedule
from veilfl.strategy.settings import LrScheduleConfig


def _oracle(
    name: str, t: int, *, total: int, warmup: int, final: float, gamma: float, size: int
) -> float:
    """The multiplier as the formulas in the module docstring read, written apart."""
    if t < warmup:
        return (t + 1) / warmup
    after = t - warmup
    p = min(1.0, after / (total - warmup))
    if name == "constant":
        return 1.0
    if name == "cosine":
        return final + (1 - final) * (1 + math.cos(math.pi * p)) / 2
    if name == "linear":
        return final + (1 - final) * (1 - p)
    assert name == "step"
    value = 1.0
    for _ in range(after // size):
        value *= gamma
    return value


@settings(max_examples=80, deadline=None)
@given(
    name=st.sampled_from(sorted(LR_SCHEDULES)),
    total=st.integers(2, 60),
    warmup_share=st.floats(0, 0.9),
    final=st.floats(0, 1),
    gamma=st.floats(0.05, 1),
    size=st.integers(1, 12),
)
def test_every_schedule_matches_the_formula_at_every_step(
    name: str, total: int, warmup_share: float, final: float, gamma: float, size: int
) -> None:
    warmup = int(warmup_share * total)
    schedule = LearningRateSchedule(
        name=name,
        total_steps=total,
        warmup_steps=warmup,
        final_fraction=final,
        decay_factor=gamma,
        step_size=size,
    )

    for t in range(total + 3):
        expected = _oracle(name, t, total=total, warmup=warmup, final=final, gamma=gamma, size=size)
        assert schedule.multiplier(t) == pytest.approx(expected, rel=1e-12, abs=1e-15)
        assert schedule.rate(0.5, t) == pytest.approx(0.5 * expected, rel=1e-12, abs=1e-15)


def test_the_schedules_have_the_shape_their_names_promise() -> None:
    def values(name: str, **more: float) -> list[float]:
        schedule = LearningRateSchedule(name=name, total_steps=10, **more)  # type: ignore[arg-type]
        return [schedule.multiplier(t) for t in range(10)]

    assert values("constant") == [1.0] * 10
    cosine, linear = values("cosine", final_fraction=0.1), values("linear", final_fraction=0.1)
    for decaying in (cosine, linear):
        assert decaying[0] == 1.0
        assert all(a > b for a, b in itertools.pairwise(decaying))
        assert decaying[-1] > 0.1
    assert linear[5] == pytest.approx(1 - 0.9 * 0.5)
    assert cosine[5] == pytest.approx(0.1 + 0.9 * 0.5)
    assert values("step", decay_factor=0.5, step_size=3) == [
        1,
        1,
        1,
        0.5,
        0.5,
        0.5,
        0.25,
        0.25,
        0.25,
        0.125,
    ]
    warm = LearningRateSchedule(name="linear", total_steps=10, warmup_steps=4)
    assert [warm.multiplier(t) for t in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_a_run_description_builds_its_schedule_over_the_runs_releases() -> None:
    config = LrScheduleConfig(name="cosine", warmup_rounds=2, final_fraction=0.2)

    schedule = config.build(total_steps=20)

    assert (schedule.name, schedule.total_steps, schedule.warmup_steps) == ("cosine", 20, 2)
    assert schedule.final_fraction == 0.2
    assert LrScheduleConfig().is_constant and not config.is_constant
    assert not LrScheduleConfig(warmup_rounds=1).is_constant


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (dict(name="exponential"), r"^--server-lr-schedule 'exponential' is not known; choose"),
        (dict(warmup_rounds=-1), r"^--server-lr-warmup must be at least 0; got -1\.$"),
        (dict(final_fraction=1.5), r"^--server-lr-final-fraction must be at least 0 and at most 1"),
        (dict(decay_factor=0.0), r"^--server-lr-decay must be more than 0 and at most 1; got 0"),
        (dict(step_rounds=0), r"^--server-lr-step-rounds must be at least 1; got 0\.$"),
    ],
)
def test_bad_schedule_settings_are_refused_in_one_line_naming_the_flag(
    config: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        LrScheduleConfig(**config)  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)


def test_a_warmup_as_long_as_the_run_is_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"^--server-lr-warmup 5 covers all 5 rounds"):
        LrScheduleConfig(warmup_rounds=5).build(total_steps=5)


def test_a_negative_step_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="counted from 0"):
        LearningRateSchedule().multiplier(-1)
