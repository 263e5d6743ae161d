"""BLT behind the mechanism interface, central noise: its epsilon is dp-accounting's
Gaussian mechanism at z over the strategy's sensitivity found by brute force over
every participation pattern; the private backend's decoded round is exactly the round
sum plus (C^-1 z)_t of the run's fresh blocks, across a restart from the stored
state; distributed noise is refused in one line pointing to banded."""

from __future__ import annotations

import itertools

import dp_accounting
import numpy as np
import pytest
from dp_accounting.pld import pld_privacy_accountant
from tests.protocol.test_correlated_release import _backend, _release

from veilfl.errors import ConfigurationError, StorageError
from veilfl.privacy.accountant import RDP_ORDERS
from veilfl.privacy.banded_toeplitz import toeplitz_matrix
from veilfl.privacy.central_tree import CentralTreeNoise
from veilfl.privacy.dp_config import DpConfig
from veilfl.privacy.mechanisms import BltMatrixFactorization, BltOptions, mechanism_named
from veilfl.privacy.run_state import DpRunState
from veilfl.privacy.tree import TreeNode

DELTA = 1e-5


def _blt(placement: str = "central", *, z: float = 1.0, k: int, b: int, **kw: object) -> DpConfig:
    return DpConfig(
        placement=placement,  # type: ignore[arg-type]
        noise_multiplier=z,
        clip_norm=1.0,
        mechanism="blt",
        max_participations=k,
        min_separation=b,
        **kw,  # type: ignore[arg-type]
    )


def _dp_accounting(multiplier: float, accounting: str) -> float:
    event = dp_accounting.GaussianDpEvent(multiplier)
    accountant: dp_accounting.PrivacyAccountant
    if accounting == "rdp":
        accountant = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS))
    else:
        accountant = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-3)
    accountant.compose(event)
    return float(accountant.get_epsilon(DELTA))


def _brute_force_sensitivity(strategy: np.ndarray, *, k: int, b: int) -> float:
    rounds = strategy.shape[0]
    best = 0.0
    for count in range(1, k + 1):
        for pattern in itertools.combinations(range(rounds), count):
            if all(later - earlier >= b for earlier, later in itertools.pairwise(pattern)):
                best = max(best, float(np.linalg.norm(strategy[:, list(pattern)].sum(axis=1))))
    return best


@pytest.mark.parametrize(("k", "b", "rounds"), [(2, 3, 7), (3, 2, 8), (2, 1, 6)])
@pytest.mark.parametrize("accounting", ["rdp", "pld"])
def test_epsilon_is_the_gaussian_mechanism_at_the_strategys_sensitivity(
    k: int, b: int, rounds: int, accounting: str
) -> None:
    dp = _blt(z=2.0, k=k, b=b, accounting=accounting, options=BltOptions(buffers=2))
    mechanism = dp.privacy_mechanism
    assert isinstance(mechanism, BltMatrixFactorization)
    strategy = toeplitz_matrix(mechanism.strategy(dp).coefficients(rounds), rounds)
    sensitivity = _brute_force_sensitivity(strategy, k=k, b=b)
    assert mechanism.sensitivity(dp, rounds=rounds) == pytest.approx(sensitivity, rel=1e-9)
    epsilon = mechanism.planned_epsilon(dp, rounds=rounds, sample_rate=0.1)
    assert epsilon == pytest.approx(_dp_accounting(2.0 / sensitivity, accounting), rel=1e-3)


def test_blt_is_registered_and_distributed_noise_points_to_banded() -> None:
    assert isinstance(mechanism_named("blt"), BltMatrixFactorization)
    with pytest.raises(
        ConfigurationError, match=r"use --dp-mechanism banded with --dp distributed"
    ):
        _blt("distributed", k=2, b=2)


@pytest.mark.parametrize("restart_after", [None, 1, 3])
def test_the_decoded_round_is_the_sum_plus_the_inverse_strategy_of_the_fresh_blocks(
    restart_after: int | None,
) -> None:
    # Arrange
    dp = _blt(z=0.5, k=6, b=1)
    key = bytes(range(32))
    rng = np.random.default_rng(3)  # test data only, not noise
    sums = [rng.normal(size=3) for _ in range(5)]
    backend = _backend(dp, key=key)
    secret = backend.state().tree_noise_key
    assert secret is not None
    # Act: five releases, restarting the backend from its stored state once.
    decoded = []
    for step in range(1, 6):
        decoded.append(_release(backend, step, sums[step - 1]))
        if step == restart_after:
            stored = DpRunState.from_json(backend.state().to_json())
            assert {"encoder", "decoder"} <= set(stored.mechanism_state)
            backend = _backend(dp, key=key, state=stored)
    # Assert: decoded - x = C^-1 z, z the run's fresh blocks (0, t) of sigma z·C.
    noise = CentralTreeNoise(key=secret, stddev=0.5, length=3)
    blocks = np.array([noise.block(TreeNode(0, t)) for t in range(1, 6)])
    strategy = dp.privacy_mechanism.strategy(dp)  # type: ignore[attr-defined]
    inverse = toeplitz_matrix(strategy.inverse_coefficients(5), 5)
    np.testing.assert_allclose(
        np.array(decoded) - np.array(sums), inverse @ blocks, rtol=1e-9, atol=1e-9
    )
    assert not np.allclose(inverse, np.eye(5))  # the noise is correlated


def test_encoder_and_decoder_states_of_another_strategy_are_refused_on_resume() -> None:
    ours = _blt(k=2, b=2, options=BltOptions(buffers=2))
    other = _blt(k=2, b=2, options=BltOptions(buffers=3))
    schedule = other.privacy_mechanism.release_schedule(other, rounds=4)
    encoder, decoder = schedule.encoder(), schedule.decoder()
    assert encoder is not None
    decoder.decode(schedule.terms(1), encoder.encode(np.ones(3)))
    resumed = ours.privacy_mechanism.release_schedule(ours, rounds=4)
    resumed_encoder = resumed.encoder()
    assert resumed_encoder is not None
    with pytest.raises(StorageError, match="another strategy"):
        resumed_encoder.restore(encoder.to_json())
    with pytest.raises(StorageError, match="another strategy"):
        resumed.decoder().restore(decoder.to_json())


def test_the_equivalent_noise_multiplier_is_the_decoded_prefix_noise() -> None:
    dp = _blt(z=1.5, k=2, b=3, options=BltOptions(buffers=2))
    rounds = 9
    mechanism = dp.privacy_mechanism
    strategy = toeplitz_matrix(mechanism.strategy(dp).coefficients(rounds), rounds)  # type: ignore[attr-defined]
    prefix = np.tril(np.ones((rounds, rounds))) @ np.linalg.inv(strategy)
    expected = 1.5 * np.sqrt(np.mean((prefix**2).sum(axis=1)) / ((rounds + 1) / 2))
    ours = mechanism.equivalent_noise_multiplier(dp, rounds=rounds, expected_clients=2)
    assert ours == pytest.approx(expected, rel=1e-9)
    assert ours < 1.5  # less than fresh noise's, which the window-1 default would claim
