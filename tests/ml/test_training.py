"""Local SGD training and evaluation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from veilfl.errors import ConfigurationError, DataError
from veilfl.ml.datasets import ArrayDataset, MnistSplits, synthetic_dataset
from veilfl.ml.models import SimpleCNN
from veilfl.ml.training import (
    EvalResult,
    TrainConfig,
    TrainProgress,
    evaluate,
    train_local,
)
from veilfl.ml.weights import get_weights, set_weights
from veilfl.tensors import Weights


def _linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))


def _train_from(
    initial: Weights, make: Callable[[], nn.Module], data: ArrayDataset, config: TrainConfig
) -> Weights:
    model = make()
    set_weights(model, initial)
    return train_local(model, data, config).delta


def test_delta_is_trained_minus_starting_weights() -> None:
    model = SimpleCNN()
    start = get_weights(model)

    result = train_local(
        model,
        synthetic_dataset(num_examples=256, seed=0),
        TrainConfig(learning_rate=0.1, batch_size=32, epochs=2, seed=1),
    )

    after = get_weights(model)
    assert list(result.delta) == list(start)
    for name in start:
        assert result.delta[name].dtype == np.float32
        np.testing.assert_array_equal(result.delta[name], after[name] - start[name])
    assert any(np.abs(d).sum() > 0 for d in result.delta.values())
    assert result.num_samples == 256
    assert math.isfinite(result.mean_loss) and result.seconds > 0


def test_progress_is_reported_at_most_twenty_times_per_epoch() -> None:
    seen: list[TrainProgress] = []

    train_local(
        _linear(),
        synthetic_dataset(num_examples=410, seed=0),
        TrainConfig(batch_size=5, epochs=2, seed=0),  # 82 batches per epoch
        progress=seen.append,
    )

    for epoch in (1, 2):
        reports = [p for p in seen if p.epoch == epoch]
        assert 1 <= len(reports) <= 20
        assert reports[-1].batch == reports[-1].batches_per_epoch == 82
        assert [p.batch for p in reports] == sorted(p.batch for p in reports)
        assert all(p.epochs == 2 and p.running_loss > 0 for p in reports)


def test_a_single_batch_epoch_reports_once() -> None:
    seen: list[TrainProgress] = []
    train_local(
        _linear(),
        synthetic_dataset(num_examples=10, seed=0),
        TrainConfig(seed=0),
        progress=seen.append,
    )
    assert seen == [TrainProgress(1, 1, 1, 1, seen[0].running_loss)]


def test_training_is_repeatable_for_a_seed_and_differs_for_another() -> None:
    data = synthetic_dataset(num_examples=96, seed=0)
    initial = get_weights(SimpleCNN())

    first = _train_from(initial, SimpleCNN, data, TrainConfig(seed=5, batch_size=16))
    again = _train_from(initial, SimpleCNN, data, TrainConfig(seed=5, batch_size=16))
    other = _train_from(initial, SimpleCNN, data, TrainConfig(seed=6, batch_size=16))

    for name in initial:
        np.testing.assert_array_equal(first[name], again[name])
    assert any(not np.array_equal(first[name], other[name]) for name in initial)


def test_the_seed_also_fixes_randomness_inside_the_model() -> None:
    def with_dropout() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(28 * 28, 10))

    data = synthetic_dataset(num_examples=64, seed=0)
    initial = get_weights(with_dropout())
    model = with_dropout()
    set_weights(model, initial)
    state = torch.get_rng_state()

    first = train_local(model, data, TrainConfig(seed=1, batch_size=8)).delta

    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is untouched
    torch.manual_seed(123)  # and does not matter
    again = _train_from(initial, with_dropout, data, TrainConfig(seed=1, batch_size=8))
    for name in initial:
        np.testing.assert_array_equal(first[name], again[name])


def test_unseeded_runs_shuffle_differently() -> None:
    data = synthetic_dataset(num_examples=64, seed=0)
    initial = get_weights(_linear())
    first = _train_from(initial, _linear, data, TrainConfig(batch_size=8))
    second = _train_from(initial, _linear, data, TrainConfig(batch_size=8))
    assert any(not np.array_equal(first[name], second[name]) for name in initial)


def test_max_batches_caps_the_steps_and_the_sample_count() -> None:
    seen: list[TrainProgress] = []

    result = train_local(
        _linear(),
        synthetic_dataset(num_examples=1000, seed=0),
        TrainConfig(batch_size=10, max_batches=3, epochs=2, seed=0),
        progress=seen.append,
    )

    assert result.num_samples == 30
    assert {p.batches_per_epoch for p in seen} == {3}


def test_momentum_changes_the_trajectory() -> None:
    data = synthetic_dataset(num_examples=64, seed=0)
    initial = get_weights(_linear())
    plain = _train_from(initial, _linear, data, TrainConfig(seed=0, batch_size=8))
    heavy = _train_from(initial, _linear, data, TrainConfig(seed=0, batch_size=8, momentum=0.9))
    assert not np.array_equal(plain["1.weight"], heavy["1.weight"])


def test_training_and_evaluation_keep_the_models_mode() -> None:
    model = _linear().eval()
    data = synthetic_dataset(num_examples=8, seed=0)
    train_local(model, data, TrainConfig(seed=0))
    assert not model.training
    model.train()
    evaluate(model, data)
    assert model.training


def test_read_only_data_trains_without_warnings() -> None:
    data = synthetic_dataset(num_examples=16, seed=0)
    data.images.flags.writeable = False
    data.labels.flags.writeable = False
    train_local(_linear(), data, TrainConfig(seed=0))
    evaluate(_linear(), data)


def test_empty_data_is_refused() -> None:
    empty = synthetic_dataset(num_examples=0, seed=0)
    with pytest.raises(DataError, match="empty"):
        train_local(_linear(), empty, TrainConfig())
    with pytest.raises(DataError, match="empty"):
        evaluate(_linear(), empty)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_batches": 0}, "max_batches"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**64}, "seed"),
    ],
)
def test_invalid_training_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        TrainConfig(**kwargs)


def test_evaluate_on_a_known_tiny_case() -> None:
    # A model whose logits are (0, ln 3) whatever the input: p(class 1) = 3/4.
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([0.0, math.log(3.0)]))
    data = ArrayDataset(
        images=np.zeros((4, 1), dtype=np.float32), labels=np.array([1, 1, 0, 1], dtype=np.int64)
    )
    expected_loss = (3 * -math.log(0.75) - math.log(0.25)) / 4

    for batch_size in (1, 3, 1000):
        result = evaluate(model, data, batch_size=batch_size)
        assert result.accuracy == 0.75 and result.num_samples == 4
        assert result.loss == pytest.approx(expected_loss, rel=1e-6)
    assert isinstance(result, EvalResult)
    with pytest.raises(ConfigurationError, match="batch_size"):
        evaluate(model, data, batch_size=0)


def test_one_epoch_on_real_mnist_learns(mnist: MnistSplits) -> None:
    torch.manual_seed(0)
    model = SimpleCNN()
    test = mnist.test.subset(range(2000))
    before = evaluate(model, test)

    result = train_local(
        model,
        mnist.train.subset(range(6000)),
        TrainConfig(learning_rate=0.05, momentum=0.9, batch_size=32, seed=0),
    )

    after = evaluate(model, test)
    assert before.accuracy < 0.3 and after.accuracy > 0.85
    assert after.loss < before.loss and result.mean_loss < before.loss
    assert result.num_samples == 6000


def _softmax_cross_entropy_gradient(
    weight: np.ndarray, bias: np.ndarray, x: np.ndarray, label: int
) -> tuple[np.ndarray, np.ndarray]:
    """d/dW and d/db of cross-entropy for logits W x + b, in float64."""
    logits = weight @ x + bias
    p = np.exp(logits - logits.max())
    p /= p.sum()
    p[label] -= 1.0
    return np.outer(p, x), p


@pytest.mark.parametrize("mu", [0.0, 0.7])
def test_fedprox_adds_mu_times_the_distance_from_the_start_to_the_gradient(mu: float) -> None:
    # Two identical examples, batch 1: two SGD steps; the proximal term is zero at the
    # first step and mu (w1 - w0) at the second (Li et al. 2020).
    rng = np.random.default_rng(0)
    x = rng.random(3).astype(np.float32)
    data = ArrayDataset(images=np.stack([x, x]), labels=np.array([1, 1], dtype=np.int64))
    model = nn.Linear(3, 2)
    w0 = {k: v.astype(np.float64) for k, v in get_weights(model).items()}
    lr = 0.5

    delta = train_local(
        model, data, TrainConfig(learning_rate=lr, batch_size=1, proximal_mu=mu, seed=0)
    ).delta

    gw, gb = _softmax_cross_entropy_gradient(w0["weight"], w0["bias"], x.astype(np.float64), 1)
    w1, b1 = w0["weight"] - lr * gw, w0["bias"] - lr * gb
    gw, gb = _softmax_cross_entropy_gradient(w1, b1, x.astype(np.float64), 1)
    w2 = w1 - lr * (gw + mu * (w1 - w0["weight"]))
    b2 = b1 - lr * (gb + mu * (b1 - w0["bias"]))
    np.testing.assert_allclose(delta["weight"], w2 - w0["weight"], atol=1e-6)
    np.testing.assert_allclose(delta["bias"], b2 - w0["bias"], atol=1e-6)


def test_fedprox_pulls_local_training_towards_the_global_model() -> None:
    data = synthetic_dataset(num_examples=64, seed=2)
    start = get_weights(SimpleCNN())
    norms = []
    for mu in (0.0, 1.0, 10.0):
        delta = _train_from(
            start,
            SimpleCNN,
            data,
            TrainConfig(learning_rate=0.1, batch_size=8, epochs=2, proximal_mu=mu, seed=5),
        )
        norms.append(
            math.sqrt(sum(float((d.astype(np.float64) ** 2).sum()) for d in delta.values()))
        )
    assert norms[0] > norms[1] > norms[2] > 0


@pytest.mark.parametrize("mu", [-0.1, math.inf, math.nan])
def test_proximal_mu_must_be_a_non_negative_number(mu: float) -> None:
    with pytest.raises(ConfigurationError, match="proximal_mu"):
        TrainConfig(proximal_mu=mu)
