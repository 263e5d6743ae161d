"""PLD accounting: never looser than RDP, still an upper bound, exact when unsampled."""

from __future__ import annotations

import logging

import dp_accounting
import pytest
from dp_accounting import gaussian_mechanism
from dp_accounting.pld import pld_privacy_accountant

from veilfl.errors import ConfigurationError
from veilfl.privacy.accountant import (
    PLD_DISCRETIZATION,
    ClientLevelAccountant,
    epsilon_for,
    epsilon_of,
    noise_multiplier_for,
    unsampled_noise_multiplier,
)
from veilfl.privacy.ledger import PrivacyLedger

GRID = [(q, z, rounds) for q in (0.001, 0.01, 0.1) for z in (0.7, 1.1, 3.0) for rounds in (1, 1000)]


def _raw_pld(q: float, z: float, rounds: int, *, interval: float) -> float:
    """dp-accounting's PLD accountant alone, at a given discretisation."""
    event: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(z)
    if q < 1:
        event = dp_accounting.PoissonSampledDpEvent(q, event)
    accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=interval)
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(accountant.get_epsilon(1e-5))


@pytest.mark.parametrize(("q", "z", "rounds"), GRID)
def test_pld_is_never_looser_than_rdp_on_a_grid(q: float, z: float, rounds: int) -> None:
    args = {"noise_multiplier": z, "sample_rate": q, "rounds": rounds, "delta": 1e-5}
    rdp = epsilon_for(**args, accounting="rdp")  # type: ignore[arg-type]
    pld = epsilon_for(**args, accounting="pld")  # type: ignore[arg-type]
    assert pld <= rdp
    # On this grid the discretised PLD is itself below RDP: the minimum is not hiding it.
    assert _raw_pld(q, z, rounds, interval=PLD_DISCRETIZATION) <= rdp


@pytest.mark.parametrize(("q", "z", "rounds"), [(0.01, 1.1, 1000), (0.1, 2.0, 30)])
def test_pld_is_tighter_than_rdp_and_still_an_upper_bound(q: float, z: float, rounds: int) -> None:
    args = {"noise_multiplier": z, "sample_rate": q, "rounds": rounds, "delta": 1e-5}
    pld = epsilon_for(**args, accounting="pld")  # type: ignore[arg-type]
    assert pld < 0.95 * epsilon_for(**args, accounting="rdp")  # type: ignore[arg-type]
    # A finer pessimistic discretisation is closer to the truth and never above ours.
    assert _raw_pld(q, z, rounds, interval=1e-4) <= pld + 1e-9


def test_where_discretised_pld_drifts_above_rdp_the_smaller_bound_is_reported() -> None:
    # Many rounds that each lose very little: pessimistic rounding accumulates.
    q, z, rounds = 0.001, 3.0, 10_000
    rdp = epsilon_for(noise_multiplier=z, sample_rate=q, rounds=rounds, delta=1e-5)
    assert _raw_pld(q, z, rounds, interval=PLD_DISCRETIZATION) > rdp
    reported = epsilon_for(
        noise_multiplier=z, sample_rate=q, rounds=rounds, delta=1e-5, accounting="pld"
    )
    assert reported == rdp


@pytest.mark.parametrize(("z", "rounds"), [(1.1, 10), (3.0, 40), (0.8, 1)])
def test_unsampled_rounds_are_one_gaussian_computed_exactly(z: float, rounds: int) -> None:
    ledger = PrivacyLedger.from_released_rounds(rounds, noise_multiplier=z, sample_rate=1.0)
    assert unsampled_noise_multiplier(ledger) == pytest.approx(z / rounds**0.5)
    exact = epsilon_of(ledger, delta=1e-5, accounting="pld")
    # Oracle: the analytic Gaussian of the composed multiplier, and a fine PLD.
    assert exact == pytest.approx(
        gaussian_mechanism.get_epsilon_gaussian(z / rounds**0.5, 1e-5), abs=1e-9
    )
    assert exact == pytest.approx(_raw_pld(1.0, z, rounds, interval=1e-4), rel=2e-3)
    assert exact < epsilon_of(ledger, delta=1e-5, accounting="rdp")


def test_noise_for_a_target_is_smaller_under_pld_and_spends_at_most_the_target() -> None:
    args = {"target_epsilon": 2.0, "sample_rate": 0.1, "rounds": 40, "delta": 1e-5}
    z_rdp = noise_multiplier_for(**args)  # type: ignore[arg-type]
    z_pld = noise_multiplier_for(**args, accounting="pld")  # type: ignore[arg-type]
    assert z_pld < z_rdp
    spent = epsilon_for(
        noise_multiplier=z_pld, sample_rate=0.1, rounds=40, delta=1e-5, accounting="pld"
    )
    assert 1.98 <= spent <= 2.0


def test_the_accountant_reports_which_accounting_it_uses() -> None:
    pld = ClientLevelAccountant(noise_multiplier=1.0, sample_rate=0.1, delta=1e-5, accounting="pld")
    rdp = ClientLevelAccountant(noise_multiplier=1.0, sample_rate=0.1, delta=1e-5)
    for accountant in (pld, rdp):
        for _ in range(4):
            accountant.record_round()
    assert (pld.accounting, rdp.accounting) == ("pld", "rdp")
    assert pld.epsilon < rdp.epsilon
    assert pld.to_json()["accounting"] == "pld"


def test_unknown_accounting_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="rdp"):
        epsilon_for(
            noise_multiplier=1.0,
            sample_rate=0.1,
            rounds=3,
            delta=1e-5,
            accounting="guess",  # type: ignore[arg-type]
        )


def test_the_librarys_convergence_warnings_are_silenced_but_no_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    # q = 0.5, z = 1: RDP order 1.75 does not converge, which dp-accounting logs.
    sampled = dp_accounting.PoissonSampledDpEvent(0.5, dp_accounting.GaussianDpEvent(1.0))
    epsilon = epsilon_of(dp_accounting.SelfComposedDpEvent(sampled, 5), delta=1e-5)
    logging.getLogger("veilfl.privacy").warning("ours")
    logging.getLogger("absl").warning("another absl user's")
    assert epsilon > 0
    assert [r.getMessage() for r in caplog.records] == ["ours", "another absl user's"]
