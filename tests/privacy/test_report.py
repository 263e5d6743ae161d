"""Two observers: the public gets amplification only from secret Poisson sampling; the
coordinator, which knows the sample, never does."""

from __future__ import annotations

import math

import dp_accounting
import pytest

from veilfl.errors import ConfigurationError
from veilfl.privacy.accountant import RDP_ORDERS, epsilon_for
from veilfl.privacy.ledger import PrivacyLedger
from veilfl.privacy.report import coordinator_ledger, dp_fedavg_report
from veilfl.privacy.sampling import withheld_release_probability

# Issue 11: z = 1.1, q = 0.01, 1,000 rounds; a client takes part in about 10 of them.
ISSUE_LEDGER = PrivacyLedger.from_released_rounds(1000, noise_multiplier=1.1, sample_rate=0.01)


def _unsampled_rdp(z: float, rounds: int) -> float:
    """Oracle: dp-accounting composing ``rounds`` plain Gaussian mechanisms."""
    accountant = dp_accounting.rdp.RdpAccountant(
        list(RDP_ORDERS), dp_accounting.NeighboringRelation.REPLACE_SPECIAL
    )
    accountant.compose(dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), rounds))
    return float(accountant.get_epsilon(1e-5))


def test_the_coordinator_gets_no_amplification_under_distributed_noise() -> None:
    report = dp_fedavg_report(
        placement="distributed",
        ledger=ISSUE_LEDGER,
        delta=1e-5,
        accounting="rdp",
        max_participations=10,
        secret_poisson_sampling=True,
        secure_aggregation=True,
    )
    public = epsilon_for(noise_multiplier=1.1, sample_rate=0.01, rounds=1000, delta=1e-5)
    assert report.epsilon_public == pytest.approx(public)
    assert report.epsilon_coordinator == pytest.approx(_unsampled_rdp(1.1, 10), rel=1e-9)
    # The issue's figures: 1.7 reported, about 16.9 against the coordinator.
    assert (round(report.epsilon_public, 1), round(report.epsilon_coordinator, 1)) == (1.7, 16.9)
    assert report.adjacency == "zero-out"


def test_central_noise_gives_no_finite_epsilon_against_the_coordinator() -> None:
    report = dp_fedavg_report(
        placement="central",
        ledger=ISSUE_LEDGER,
        delta=1e-5,
        accounting="pld",
        max_participations=10,
        secret_poisson_sampling=True,
        secure_aggregation=False,
    )
    assert report.epsilon_coordinator is None
    assert "none against the coordinator" in report.summary()
    assert any("noiseless sum and every update" in a for a in report.assumptions)
    assert report.to_json()["epsilon_coordinator"] is None


def test_a_sample_the_public_can_know_gives_it_no_amplification_either() -> None:
    report = dp_fedavg_report(
        placement="local",
        ledger=ISSUE_LEDGER,
        delta=1e-5,
        accounting="rdp",
        max_participations=14,
        secret_poisson_sampling=False,
        secure_aggregation=False,
    )
    assert (
        report.epsilon_public
        == report.epsilon_coordinator
        == pytest.approx(_unsampled_rdp(1.1, 14), rel=1e-9)
    )


def test_pld_reports_are_never_above_rdp_reports() -> None:
    common = {
        "placement": "distributed",
        "ledger": ISSUE_LEDGER,
        "delta": 1e-5,
        "max_participations": 10,
        "secret_poisson_sampling": True,
        "secure_aggregation": True,
    }
    rdp = dp_fedavg_report(accounting="rdp", **common)  # type: ignore[arg-type]
    pld = dp_fedavg_report(accounting="pld", **common)  # type: ignore[arg-type]
    assert pld.epsilon_public < rdp.epsilon_public
    assert pld.epsilon_coordinator is not None and rdp.epsilon_coordinator is not None
    assert pld.epsilon_coordinator < rdp.epsilon_coordinator
    assert pld.accounting == "pld" and "PLD" in pld.summary()


def test_withheld_rounds_raise_delta_under_add_remove_only() -> None:
    beta = withheld_release_probability(
        population=200, sample_rate=0.1, min_contributions=6, attempts=100
    )
    central = dp_fedavg_report(
        placement="central",
        ledger=PrivacyLedger.from_released_rounds(100, noise_multiplier=2.0, sample_rate=0.1),
        delta=1e-5,
        accounting="rdp",
        max_participations=16,
        secret_poisson_sampling=True,
        secure_aggregation=True,
        withheld_probability=beta,
    )
    assert 0 < beta < 1e-3
    assert central.delta == pytest.approx(1e-5 + math.exp(central.epsilon_public) * beta)
    distributed = dp_fedavg_report(
        placement="distributed",
        ledger=PrivacyLedger.from_released_rounds(100, noise_multiplier=2.0, sample_rate=0.1),
        delta=1e-5,
        accounting="rdp",
        max_participations=16,
        secret_poisson_sampling=True,
        secure_aggregation=True,
        withheld_probability=beta,
    )
    assert distributed.delta == 1e-5  # zero-out: withholding does not depend on the client


def test_the_coordinator_ledger_charges_the_smallest_multiplier() -> None:
    ledger = (
        PrivacyLedger()
        .record(noise_multiplier=2.0, sample_rate=0.1, count=5)
        .record(noise_multiplier=1.5, sample_rate=0.1, count=5)
    )
    seen = coordinator_ledger(ledger, max_participations=3)
    assert seen == PrivacyLedger.from_released_rounds(3, noise_multiplier=1.5, sample_rate=1.0)
    with pytest.raises(ConfigurationError):
        coordinator_ledger(ledger, max_participations=11)


def test_distributed_noise_without_secure_aggregation_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="secure aggregation"):
        dp_fedavg_report(
            placement="distributed",
            ledger=ISSUE_LEDGER,
            delta=1e-5,
            accounting="rdp",
            max_participations=10,
            secret_poisson_sampling=True,
            secure_aggregation=False,
        )


def test_a_large_epsilon_with_a_withheld_term_gives_delta_one_not_an_overflow() -> None:
    # A tiny cohort with little noise: epsilon in the thousands, where e^eps overflows.
    ledger = PrivacyLedger.from_released_rounds(3, noise_multiplier=0.01, sample_rate=0.5)
    report = dp_fedavg_report(
        placement="central",
        ledger=ledger,
        delta=1e-5,
        accounting="rdp",
        max_participations=3,
        secret_poisson_sampling=True,
        secure_aggregation=False,
        withheld_probability=1e-3,
    )
    assert report.epsilon_public > 1000
    assert report.delta == 1.0
