"""Matrix-mechanism epsilon against dp-accounting's Gaussian mechanism directly."""

from __future__ import annotations

import math

import dp_accounting
import pytest
from dp_accounting.pld import pld_privacy_accountant

from veilfl.errors import ConfigurationError
from veilfl.privacy.accountant import RDP_ORDERS
from veilfl.privacy.mf_accounting import (
    matrix_mechanism_epsilon,
    matrix_mechanism_noise_multiplier_for,
)

DELTA = 1e-5


def _dp_accounting(multiplier: float, accounting: str) -> float:
    """One GaussianDpEvent, through dp-accounting's own accountants."""
    event = dp_accounting.GaussianDpEvent(multiplier)
    accountant: dp_accounting.PrivacyAccountant
    if accounting == "rdp":
        accountant = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS))
    else:
        accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-3)
    accountant.compose(event)
    return float(accountant.get_epsilon(DELTA))


@pytest.mark.parametrize(("z", "sensitivity"), [(2.0, math.sqrt(3)), (5.0, 2.25), (0.9, 1.0)])
@pytest.mark.parametrize("accounting", ["rdp", "pld"])
def test_epsilon_is_the_gaussian_mechanism_at_z_over_sensitivity(
    z: float, sensitivity: float, accounting: str
) -> None:
    ours = matrix_mechanism_epsilon(
        noise_multiplier=z,
        sensitivity=sensitivity,
        delta=DELTA,
        accounting=accounting,  # type: ignore[arg-type]
    )
    theirs = _dp_accounting(z / sensitivity, accounting)
    if accounting == "rdp":
        assert ours == pytest.approx(theirs, rel=1e-9)
    else:  # exact curve vs a pessimistic discretisation: ours is at most, and close
        assert theirs * 0.98 <= ours <= theirs * (1 + 1e-9)


def test_a_row_normalised_factor_spends_more_than_it_claims() -> None:
    # The example: a client in rounds {0, 10, 20} of pfl's strategy moves the
    # release by about 2.25 clip, not sqrt(3) clip.
    z = matrix_mechanism_noise_multiplier_for(
        target_epsilon=2.0, sensitivity=math.sqrt(3), delta=DELTA
    )
    claimed = matrix_mechanism_epsilon(noise_multiplier=z, sensitivity=math.sqrt(3), delta=DELTA)
    true = matrix_mechanism_epsilon(noise_multiplier=z, sensitivity=2.25, delta=DELTA)
    assert claimed <= 2.0 < 2.5 < true


@pytest.mark.parametrize("target", [0.5, 2.0, 8.0])
@pytest.mark.parametrize("accounting", ["rdp", "pld"])
def test_the_noise_for_a_target_is_the_smallest_that_meets_it(
    target: float, accounting: str
) -> None:
    args = {"sensitivity": 1.7, "delta": DELTA, "accounting": accounting}

    z = matrix_mechanism_noise_multiplier_for(target_epsilon=target, **args)  # type: ignore[arg-type]

    assert matrix_mechanism_epsilon(noise_multiplier=z, **args) <= target  # type: ignore[arg-type]
    assert matrix_mechanism_epsilon(noise_multiplier=z * 0.997, **args) > target  # type: ignore[arg-type]


def test_the_noise_scales_with_the_sensitivity() -> None:
    one = matrix_mechanism_noise_multiplier_for(target_epsilon=2.0, sensitivity=1.0, delta=DELTA)
    three = matrix_mechanism_noise_multiplier_for(target_epsilon=2.0, sensitivity=3.0, delta=DELTA)
    assert three == pytest.approx(3 * one, rel=3e-3)


def test_zero_sensitivity_spends_nothing() -> None:
    assert matrix_mechanism_epsilon(noise_multiplier=1.0, sensitivity=0.0, delta=DELTA) == 0.0


@pytest.mark.parametrize(
    ("z", "sensitivity", "delta"), [(0.0, 1.0, DELTA), (1.0, -1.0, DELTA), (1.0, 1.0, 0.0)]
)
def test_invalid_arguments_are_refused(z: float, sensitivity: float, delta: float) -> None:
    with pytest.raises(ConfigurationError):
        matrix_mechanism_epsilon(noise_multiplier=z, sensitivity=sensitivity, delta=delta)


@pytest.mark.parametrize(("target", "sensitivity"), [(0.0, 1.0), (1.0, 0.0)])
def test_an_impossible_target_is_refused(target: float, sensitivity: float) -> None:
    with pytest.raises(ConfigurationError):
        matrix_mechanism_noise_multiplier_for(
            target_epsilon=target, sensitivity=sensitivity, delta=DELTA
        )
