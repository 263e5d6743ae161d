"""Banded matrix factorisation behind the mechanism interface: its epsilon is
dp-accounting's Gaussian mechanism at z over the *rounded* strategy's sensitivity,
found here by brute force over every participation pattern; z for a target epsilon
reaches it; through the real coordinator the decoded model is theta_0 plus the
prefix sum over n; and a simulated run trains and reports the mechanism's epsilon."""

from __future__ import annotations

import itertools
import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant
from tests.protocol.test_private_ftrl import START, _plaintext_round

from veilfl.errors import StorageError
from veilfl.ml.datasets import synthetic_dataset
from veilfl.ml.learner import mnist_learner
from veilfl.ml.partition import partition_iid
from veilfl.privacy.accountant import RDP_ORDERS
from veilfl.privacy.dp_config import DpConfig
from veilfl.privacy.mechanisms import (
    BandedMatrixFactorization,
    BandedOptions,
    ToeplitzReleaseSchedule,
    mechanism_named,
)
from veilfl.protocol.assembly import build_coordinator
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.sim.simulator import SimulationConfig, simulate

DELTA = 1e-5


def _banded(
    placement: str = "central", *, z: float = 1.0, k: int, b: int, **kw: object
) -> DpConfig:
    return DpConfig(
        placement=placement,  # type: ignore[arg-type]
        noise_multiplier=z,
        clip_norm=10.0,
        mechanism="banded",
        max_participations=k,
        min_separation=b,
        **kw,  # type: ignore[arg-type]
    )


def _brute_force_sensitivity(
    coefficients: tuple[int, ...], scale: int, *, rounds: int, k: int, b: int
) -> float:
    """max over participation patterns (at most k rounds, b apart) of ||sum of C' columns||."""
    strategy = np.zeros((rounds, rounds))
    for row in range(rounds):
        for j, c in enumerate(coefficients):
            if row - j >= 0:
                strategy[row, row - j] = c / scale
    best = 0.0
    for count in range(1, k + 1):
        for pattern in itertools.combinations(range(rounds), count):
            if all(later - earlier >= b for earlier, later in itertools.pairwise(pattern)):
                best = max(best, float(np.linalg.norm(strategy[:, list(pattern)].sum(axis=1))))
    return best


def _dp_accounting(multiplier: float, accounting: str) -> float:
    event = dp_accounting.GaussianDpEvent(multiplier)
    accountant: dp_accounting.PrivacyAccountant
    if accounting == "rdp":
        accountant = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS))
    else:
        accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-3)
    accountant.compose(event)
    return float(accountant.get_epsilon(DELTA))


def test_banded_is_registered_with_its_own_options() -> None:
    mechanism = mechanism_named("banded")
    assert isinstance(mechanism, BandedMatrixFactorization)
    assert _banded(k=2, b=3).options == BandedOptions()
    assert not mechanism.samples_clients


@pytest.mark.parametrize(("k", "b", "rounds"), [(2, 3, 7), (3, 2, 8), (1, 4, 5)])
@pytest.mark.parametrize("accounting", ["rdp", "pld"])
def test_epsilon_is_the_gaussian_mechanism_at_the_rounded_strategys_sensitivity(
    k: int, b: int, rounds: int, accounting: str
) -> None:
    # Arrange: few scale bits, so that the rounded strategy differs from the optimum.
    dp = _banded(z=2.0, k=k, b=b, accounting=accounting, options=BandedOptions(scale_bits=4))
    mechanism = dp.privacy_mechanism
    schedule = mechanism.release_schedule(dp, rounds=rounds)
    assert isinstance(schedule, ToeplitzReleaseSchedule)
    terms = schedule.terms(rounds)
    # Act
    epsilon = mechanism.planned_epsilon(dp, rounds=rounds, sample_rate=0.1)
    # Assert
    sensitivity = _brute_force_sensitivity(terms.coefficients, terms.scale, rounds=rounds, k=k, b=b)
    assert len(terms.coefficients) == b and terms.scale == 2**4
    assert mechanism.sensitivity(dp, rounds=rounds) == pytest.approx(sensitivity, rel=1e-9)
    assert epsilon == pytest.approx(_dp_accounting(2.0 / sensitivity, accounting), rel=1e-3)
    assert math.isinf(mechanism.epsilon_against_coordinator(dp, rounds=rounds, expected_clients=2))


def test_the_noise_multiplier_for_a_target_reaches_it_and_no_less_does() -> None:
    dp = _banded(k=3, b=2)
    mechanism = dp.privacy_mechanism
    z = mechanism.noise_multiplier_for(dp, target_epsilon=2.0, rounds=6, sample_rate=1.0)
    spent = mechanism.planned_epsilon(_banded(z=z, k=3, b=2), rounds=6, sample_rate=1.0)
    below = mechanism.planned_epsilon(_banded(z=0.99 * z, k=3, b=2), rounds=6, sample_rate=1.0)
    assert spent <= 2.0 < below


def test_the_strategy_depends_on_the_runs_description_alone() -> None:
    first = _banded(k=3, b=4).privacy_mechanism.release_schedule(_banded(k=3, b=4), rounds=12)
    resumed = BandedMatrixFactorization().release_schedule(_banded(k=3, b=4), rounds=5)
    assert first.terms(12) == resumed.terms(12)


def test_with_negligible_noise_the_decoded_model_is_theta_0_plus_the_prefix_sum_over_n() -> None:
    core = build_coordinator(
        RunSpec(
            model_name="tiny",
            rounds=RoundConfig(num_rounds=4, clients_per_round=2, min_clients=2),
            server_learning_rate=0.5,
            dp=_banded(z=1e-12, k=4, b=1, min_clients=2),
            population=2,
        ),
        initial_weights=START,
        run_id="r",
    ).coordinator
    deltas = {"a": np.array([1.0, 0.0, 0.0]), "b": np.array([0.0, 2.0, 0.0])}
    for _ in range(4):
        assert sorted(_plaintext_round(core, deltas, now=0.0)) == ["a", "b"]
    # theta_0 + eta * (4 rounds of [1, 2, 0]) / n = 0.5 * [4, 8, 0] / 2.
    np.testing.assert_allclose(core.global_model().weights["w"], [1.0, 2.0, 0.0], atol=1e-5)


@pytest.mark.parametrize("placement", ["central", "distributed"])
def test_a_simulated_run_trains_and_reports_the_mechanisms_epsilon(placement: str) -> None:
    dp = _banded(placement, z=0.5, k=2, b=2, min_clients=5)
    data = synthetic_dataset(num_examples=1000, seed=0)
    clients = [data.subset(p) for p in partition_iid(len(data), 20, seed=0)]
    result = simulate(
        mnist_learner("simple-cnn", seed=0),
        client_data=clients,
        test_data=synthetic_dataset(num_examples=200, seed=1),
        config=SimulationConfig(
            RunSpec(
                model_name="simulation",
                rounds=RoundConfig(num_rounds=3, fraction=0.5, min_clients=5),
                plan=LocalTrainingPlan(max_batches=2),
                dp=dp,
            ),
            secure=(
                SecureAggregationConfig(norm_bound=dp.clip_norm)
                if placement == "distributed"
                else None
            ),
        ),
    )
    assert len(result.history) == 3
    assert all(m.test_loss is not None and math.isfinite(m.test_loss) for m in result.history)
    planned = [
        dp.privacy_mechanism.planned_epsilon(dp, rounds=r, sample_rate=1.0) for r in (1, 2, 3)
    ]
    assert [m.epsilon for m in result.history] == pytest.approx(planned)
    coordinator = [m.epsilon_coordinator for m in result.history]
    assert coordinator == (pytest.approx(planned) if placement == "distributed" else [None] * 3)
    assert result.history[0].epsilon < result.history[-1].epsilon


def test_a_decoder_state_of_another_strategy_is_refused_on_resume() -> None:
    # Arrange: the state of a run whose strategy came out differently.
    ours = _banded(k=2, b=3, options=BandedOptions(scale_bits=10))
    other = _banded(k=2, b=3, options=BandedOptions(scale_bits=6))
    schedule = other.privacy_mechanism.release_schedule(other, rounds=4)
    decoder = schedule.decoder()
    decoder.decode(schedule.terms(1), np.ones(3))
    stored = decoder.to_json()
    # Act / Assert
    resumed = ours.privacy_mechanism.release_schedule(ours, rounds=4).decoder()
    with pytest.raises(StorageError, match="another strategy"):
        resumed.restore(stored)


@pytest.mark.parametrize("placement", ["central", "distributed"])
def test_the_equivalent_noise_multiplier_is_the_decoded_prefix_noise_of_the_rounded_strategy(
    placement: str,
) -> None:
    # Arrange: the oracle decodes with dense matrices: prefix noise A C'^-1 z.
    dp = _banded(placement, z=1.5, k=2, b=3, options=BandedOptions(scale_bits=5))
    rounds = 9
    schedule = dp.privacy_mechanism.release_schedule(dp, rounds=rounds)
    terms = schedule.terms(rounds)
    bits_scale = 2**5
    strategy = np.zeros((rounds, rounds))
    for row in range(rounds):
        for j, c in enumerate(terms.coefficients):
            if row - j >= 0:
                strategy[row, row - j] = c / bits_scale
    prefix = np.tril(np.ones((rounds, rounds))) @ np.linalg.inv(strategy)
    expected = 1.5 * math.sqrt(np.mean((prefix**2).sum(axis=1)) / ((rounds + 1) / 2))
    # Act
    ours = dp.privacy_mechanism.equivalent_noise_multiplier(dp, rounds=rounds, expected_clients=2)
    # Assert
    assert ours == pytest.approx(expected, rel=1e-9)
