"""Bounds parameters: the conditions of the security argument are enforced, and the
derived quantities (range weights, largest sound B, summands, layout) are right."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.errors import ConfigurationError
from veilfl.secagg.bounds_parameters import (
    GRINDING_TRIALS,
    MAX_DIMENSION,
    SOUNDNESS_TARGET,
    BoundsParameters,
    calls_for_dimension,
    range_weights,
)
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout

P = 2**31 - 1


@settings(max_examples=100, deadline=None)
@given(width=st.integers(0, 300))
def test_range_weights_reach_exactly_zero_to_width(width: int) -> None:
    weights = range_weights(width)
    sums = {
        sum(w for w, bit in zip(weights, bits, strict=True) if bit)
        for bits in itertools.product((0, 1), repeat=len(weights))
    }
    assert sums == set(range(width + 1))
    assert len(weights) == width.bit_length()


def test_the_bound_pine_conditions_allow_is_refused_and_the_largest_sound_one_named() -> None:
    d = 1_663_370
    largest = BoundsParameters.largest_norm_bound(dimension=d)
    with pytest.raises(ConfigurationError, match=f"largest sound B here is {largest}"):
        BoundsParameters(dimension=d, norm_bound=26_754)
    accepted = BoundsParameters(dimension=d, norm_bound=largest)
    assert accepted.soundness_error(trials=GRINDING_TRIALS) <= SOUNDNESS_TARGET
    assert 2.0**64 * accepted.check_pass_bound() ** 136 <= SOUNDNESS_TARGET
    with pytest.raises(ConfigurationError):
        BoundsParameters(dimension=d, norm_bound=largest + 1)
    # More checks buy a larger sound B (a wrapped norm then may pass a check more often).
    assert BoundsParameters.largest_norm_bound(dimension=d, wraparound_checks=256) > largest


def test_soundness_grows_with_the_grinding_budget_and_completeness_is_tiny() -> None:
    params = BoundsParameters(dimension=1_000, norm_bound=1_000)
    errors = [params.soundness_error(trials=2**k) for k in (0, 32, 64)]
    assert errors[0] < errors[1] < errors[2] <= SOUNDNESS_TARGET
    assert params.completeness_error() <= 2.0**-64
    with pytest.raises(ConfigurationError):
        params.soundness_error(trials=0)


def test_max_summands_is_the_most_that_cannot_wrap() -> None:
    params = BoundsParameters(dimension=10, norm_bound=1_000, extra_ranges=((-5_000, 20),))
    n = params.max_summands()
    assert n * 5_000 <= (P - 1) // 2 < (n + 1) * 5_000
    assert BoundsParameters(dimension=10, norm_bound=1_000).max_summands() == (P - 1) // 2 // 1_000


def test_layout_adds_up_and_the_digest_binds_every_setting() -> None:
    params = BoundsParameters(dimension=100, norm_bound=50, extra_ranges=((0, 7), (3, 3)))
    assert params.extra_weights == ((1, 2, 4), ())
    assert params.bits == (len(params.norm_weights) + 136 * len(params.wraparound_weights) + 3)
    assert params.input_length == (
        102 + params.bits + params.norm_gadget.proof_length + params.bit_gadget.proof_length
    )
    assert params.norm_gadget.calls * params.norm_gadget.wires >= 100
    assert params.bit_gadget.calls * params.bit_gadget.wires >= params.bits
    variants = [
        BoundsParameters(dimension=101, norm_bound=50, extra_ranges=((0, 7), (3, 3))),
        BoundsParameters(dimension=100, norm_bound=51, extra_ranges=((0, 7), (3, 3))),
        BoundsParameters(dimension=100, norm_bound=50, extra_ranges=((0, 7), (3, 4))),
        BoundsParameters(dimension=100, norm_bound=50, extra_ranges=((0, 7),)),
        BoundsParameters(
            dimension=100, norm_bound=50, extra_ranges=((0, 7), (3, 3)), wraparound_checks=137
        ),
        BoundsParameters(dimension=100, norm_bound=50, extra_ranges=((0, 7), (3, 3)), calls=7),
        BoundsParameters(
            dimension=100, norm_bound=50, extra_ranges=((0, 7), (3, 3)), query_points=3
        ),
        BoundsParameters(
            dimension=100, norm_bound=50, extra_ranges=((0, 7), (3, 3)), extra_steps=(7, 1)
        ),
        BoundsParameters(
            dimension=100, norm_bound=50, extra_ranges=((0, 7), (3, 3)), extra_order=((0, 1),)
        ),
        BoundsParameters(
            dimension=100, norm_bound=50, extra_ranges=((0, 7), (3, 3)), extra_order=((1, 0),)
        ),
    ]
    assert len({params.digest, *(v.digest for v in variants)}) == 1 + len(variants)


def test_steps_and_orders_add_their_bits_and_outputs() -> None:
    # A sign bit in {-1, +1} is one proof bit of weight 2; 0 <= loss <= weight in
    # [0, 1024] adds the 11 bits of the difference, in [0, 1024], and one output.
    plain = BoundsParameters(dimension=10, norm_bound=50, extra_ranges=((0, 1024), (0, 1024)))
    signed = BoundsParameters(
        dimension=10, norm_bound=50, extra_ranges=((-1, 1),), extra_steps=(2,)
    )
    ordered = BoundsParameters(
        dimension=10,
        norm_bound=50,
        extra_ranges=((0, 1024), (0, 1024)),
        extra_order=((1, 0),),
    )
    assert signed.extra_weights == ((2,),)
    assert ordered.order_weights == (range_weights(1024),)
    assert ordered.bits == plain.bits + len(range_weights(1024))
    assert ordered.outputs == plain.outputs + 1 + len(range_weights(1024))


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"dimension": 0, "norm_bound": 5}, "at least 1"),
        ({"dimension": True, "norm_bound": 5}, "at least 1"),
        ({"dimension": 2**23, "norm_bound": 5}, "At most"),
        ({"dimension": 5, "norm_bound": 46_341}, "B\\^2 must be below p"),
        ({"dimension": 5, "norm_bound": 5, "extra_ranges": ((3, 2),)}, "extra range"),
        ({"dimension": 5, "norm_bound": 5, "extra_ranges": ((0, P),)}, "extra range"),
        ({"dimension": 5, "norm_bound": 5, "extra_ranges": ((0.5, 2),)}, "extra range"),
        (
            {"dimension": 5, "norm_bound": 5, "extra_ranges": ((-1, 1),), "extra_steps": (3,)},
            "divides its range",
        ),
        (
            {"dimension": 5, "norm_bound": 5, "extra_ranges": ((-1, 1),), "extra_steps": (0,)},
            "at least 1",
        ),
        (
            {"dimension": 5, "norm_bound": 5, "extra_ranges": ((-1, 1),), "extra_steps": (1, 1)},
            "one extra step per extra",
        ),
        (
            {"dimension": 5, "norm_bound": 5, "extra_ranges": ((0, 1),), "extra_order": ((0, 0),)},
            "two different extra indices",
        ),
        (
            {"dimension": 5, "norm_bound": 5, "extra_ranges": ((0, 1),), "extra_order": ((0, 1),)},
            "two different extra indices",
        ),
        (
            {
                "dimension": 5,
                "norm_bound": 5,
                "extra_ranges": ((5, 9), (0, 4)),
                "extra_order": ((0, 1),),
            },
            "must be satisfiable",
        ),
        (
            {
                "dimension": 5,
                "norm_bound": 5,
                "extra_ranges": ((-(P // 2), P // 2), (-(P // 2), P // 2)),
                "extra_order": ((0, 1),),
            },
            "below p",
        ),
        ({"dimension": 5, "norm_bound": 5, "wraparound_checks": 64}, "2\\^-64"),
        ({"dimension": 5, "norm_bound": 5, "query_points": 1}, "2\\^-64"),
        ({"dimension": 100_000, "norm_bound": 1_400, "calls": 100_000}, "exact float64"),
    ],
)
def test_settings_outside_the_argument_are_refused(settings_: dict, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        BoundsParameters(**settings_)


@pytest.mark.parametrize(
    ("dimension", "calls"),
    [(12, 4), (21_840, 28), (100_000, 60), (1_663_370, 252), (MAX_DIMENSION, 508)],
)
def test_runs_size_the_norm_gadget_to_the_model(dimension: int, calls: int) -> None:
    # Arrange: the layout both clients and aggregators derive from the model size.
    config = SecureAggregationConfig(norm_bound=10.0, max_samples_per_client=600)
    # Act
    bounds = ContributionLayout(dimension, config).bounds
    # Assert: n = P + 2k is a power of two near sqrt(d) / 5, and the run stays sound.
    assert calls_for_dimension(dimension) == calls == bounds.calls
    assert bounds.soundness_error(trials=GRINDING_TRIALS) <= SOUNDNESS_TARGET
