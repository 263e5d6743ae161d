"""The built-in models and their registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from veilfl.errors import ConfigurationError
from veilfl.ml.models import MODELS, McMahanCNN, SimpleCNN, build_model, count_parameters


def test_mcmahan_cnn_has_the_papers_parameter_count() -> None:
    # conv 5x5x1x32 + 32, conv 5x5x32x64 + 64, fc 3136x512 + 512, fc 512x10 + 10
    expected = (25 * 32 + 32) + (25 * 32 * 64 + 64) + (3136 * 512 + 512) + (512 * 10 + 10)
    assert count_parameters(McMahanCNN()) == expected == 1_663_370


def test_simple_cnn_has_the_classic_parameter_count() -> None:
    # conv 5x5x1x10 + 10, conv 5x5x10x20 + 20, fc 320x50 + 50, fc 50x10 + 10
    expected = (25 * 10 + 10) + (25 * 10 * 20 + 20) + (320 * 50 + 50) + (50 * 10 + 10)
    assert count_parameters(SimpleCNN()) == expected == 21_840


def test_count_parameters_skips_frozen_ones() -> None:
    model = nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    assert count_parameters(model) == 6


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_map_mnist_images_to_ten_logits(name: str) -> None:
    model = build_model(name)
    logits = model(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 10)
    assert not torch.allclose(logits.sum(dim=1), torch.ones(3))  # logits, not probabilities


def test_the_registry_names_both_models_and_builds_fresh_ones() -> None:
    assert set(MODELS) == {"simple-cnn", "mnist-cnn"}
    assert isinstance(build_model("mnist-cnn"), McMahanCNN)
    first, second = build_model("simple-cnn"), build_model("simple-cnn")
    assert isinstance(first, SimpleCNN) and first is not second
    assert not torch.equal(first.conv1.weight, second.conv1.weight)


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"Unknown model 'resnet'.*mnist-cnn, simple-cnn"):
        build_model("resnet")
