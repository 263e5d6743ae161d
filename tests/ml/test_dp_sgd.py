"""A DP-SGD client trains, reports its epsilon, and draws its noise from the CSPRNG."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from opacus.accountants.analysis import rdp

from veilfl.errors import ConfigurationError
from veilfl.ml.datasets import synthetic_dataset
from veilfl.ml.dp_sgd import DpSgdConfig, dp_sgd_learner
from veilfl.protocol.messages import LocalTrainingPlan

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_dp_sgd_client_trains_and_reports_a_growing_epsilon() -> None:
    data = synthetic_dataset(num_examples=512, seed=0)
    config = DpSgdConfig(noise_multiplier=1.1, max_grad_norm=1.0, delta=1e-5)
    learner, trainer = dp_sgd_learner("simple-cnn", config, seed=0)
    model = learner.model_fn()
    start = learner.initial_weights(seed=0)
    plan = LocalTrainingPlan(learning_rate=0.1, batch_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = learner.local_update(model, start, data, plan)
        second = learner.local_update(model, start, data, plan)
    assert first.epsilon is not None and second.epsilon is not None
    assert 0 < first.epsilon < second.epsilon == trainer.epsilon
    # The epsilon is Opacus's RDP accounting of the steps taken: 2 epochs of 8 batches.
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    curve = rdp.compute_rdp(q=64 / 512, noise_multiplier=1.1, steps=16, orders=orders)
    expected, _ = rdp.get_privacy_spent(orders=orders, rdp=curve, delta=1e-5)
    assert second.epsilon == pytest.approx(float(expected), rel=0.05)
    assert any(np.abs(d).sum() > 0 for d in second.delta.values())


def test_dp_sgd_noise_comes_from_the_csprng(monkeypatch: pytest.MonkeyPatch) -> None:
    import veilfl.ml.dp_sgd as dp_sgd

    calls: list[float] = []
    real = dp_sgd.gaussian

    def counting(rng, *, sigma, count):  # type: ignore[no-untyped-def]
        calls.append(sigma)
        return real(rng, sigma=sigma, count=count)

    monkeypatch.setattr(dp_sgd, "gaussian", counting)
    learner, _ = dp_sgd_learner("simple-cnn", DpSgdConfig(noise_multiplier=2.0, max_grad_norm=0.5))
    learner.local_update(
        learner.model_fn(),
        learner.initial_weights(seed=0),
        synthetic_dataset(num_examples=64, seed=0),
        LocalTrainingPlan(batch_size=32, max_batches=1),
    )
    assert calls and all(sigma == pytest.approx(1.0) for sigma in calls)


def test_dp_sgd_without_noise_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="positive noise multiplier"):
        DpSgdConfig(noise_multiplier=0.0, max_grad_norm=1.0)
