"""Models, weight transfer and local SGD training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from veilfl.errors import ConfigurationError, UpdateRejectedError
from veilfl.ml.datasets import load_mnist, synthetic_dataset
from veilfl.ml.models import McMahanCNN, SimpleCNN, build_model, count_parameters
from veilfl.ml.training import TrainConfig, TrainProgress, evaluate, train_local
from veilfl.ml.weights import get_weights, set_weights


def test_mcmahan_cnn_has_the_papers_parameter_count() -> None:
    # 5x5x1x32+32, 5x5x32x64+64, 3136x512+512, 512x10+10
    expected = (25 * 32 + 32) + (25 * 32 * 64 + 64) + (3136 * 512 + 512) + (512 * 10 + 10)
    assert count_parameters(McMahanCNN()) == expected


@pytest.mark.parametrize("name", ["simple-cnn", "mnist-cnn"])
def test_models_map_mnist_images_to_ten_logits(name: str) -> None:
    assert build_model(name)(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match="mnist-cnn, simple-cnn"):
        build_model("resnet")


def test_weights_round_trip_and_mismatch_is_refused() -> None:
    source, target = SimpleCNN(), SimpleCNN()
    set_weights(target, get_weights(source))
    for name, array in get_weights(target).items():
        np.testing.assert_array_equal(array, get_weights(source)[name])
    with pytest.raises(UpdateRejectedError, match="missing"):
        set_weights(target, {"conv1.weight": get_weights(source)["conv1.weight"]})


def test_delta_is_trained_minus_starting_weights_and_progress_is_reported() -> None:
    model = SimpleCNN()
    start = get_weights(model)
    seen: list[TrainProgress] = []
    result = train_local(
        model,
        synthetic_dataset(num_examples=256, seed=0),
        TrainConfig(learning_rate=0.1, batch_size=32, epochs=2, seed=1),
        progress=seen.append,
    )
    after = get_weights(model)
    for name in start:
        np.testing.assert_allclose(result.delta[name], after[name] - start[name], atol=1e-7)
    assert result.num_samples == 256
    assert seen and seen[-1].epoch == 2 and seen[-1].batch == seen[-1].batches_per_epoch


def test_training_is_repeatable_for_a_seed() -> None:
    data = synthetic_dataset(num_examples=128, seed=0)
    initial = get_weights(SimpleCNN())
    deltas = []
    for _ in range(2):
        model = SimpleCNN()
        set_weights(model, initial)
        deltas.append(train_local(model, data, TrainConfig(seed=5, batch_size=16)).delta)
    for name in initial:
        np.testing.assert_array_equal(deltas[0][name], deltas[1][name])


def test_one_epoch_on_real_mnist_learns() -> None:
    torch.manual_seed(0)
    splits = load_mnist()
    model = SimpleCNN()
    test = splits.test.subset(range(1000))
    before = evaluate(model, test)
    result = train_local(
        model,
        splits.train.subset(range(6000)),
        TrainConfig(learning_rate=0.05, momentum=0.9, batch_size=32, seed=0),
    )
    after = evaluate(model, test)
    assert after.accuracy > 0.85 > before.accuracy
    assert after.loss < before.loss
    assert result.mean_loss < before.loss


def test_invalid_training_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        TrainConfig(learning_rate=-1.0)
    with pytest.raises(ConfigurationError):
        TrainConfig(momentum=1.0)
