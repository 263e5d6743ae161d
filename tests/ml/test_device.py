"""Resolving ``--device``: auto, cpu, cuda and cuda:N, with or without a GPU."""

from __future__ import annotations

import pytest
import torch

from veilfl.errors import ConfigurationError
from veilfl.ml.datasets import synthetic_dataset
from veilfl.ml.device import resolve_device
from veilfl.ml.learner import mnist_learner
from veilfl.protocol.messages import LocalTrainingPlan


def test_auto_takes_the_first_gpu_when_there_is_one() -> None:
    assert resolve_device("auto", cuda_devices=2) == torch.device("cuda", 0)


def test_auto_takes_the_cpu_without_a_gpu() -> None:
    assert resolve_device("auto", cuda_devices=0) == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cpu", " CPU ", torch.device("cpu")])
def test_cpu_is_always_there(spec: str | torch.device) -> None:
    assert resolve_device(spec, cuda_devices=0) == torch.device("cpu")


@pytest.mark.parametrize(("spec", "index"), [("cuda", 0), ("cuda:0", 0), ("cuda:2", 2)])
def test_cuda_names_a_gpu_with_its_index(spec: str, index: int) -> None:
    assert resolve_device(spec, cuda_devices=3) == torch.device("cuda", index)


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_a_gpu_is_a_one_line_configuration_error(spec: str) -> None:
    with pytest.raises(ConfigurationError, match="torch sees no CUDA GPU") as caught:
        resolve_device(spec, cuda_devices=0)
    assert "\n" not in str(caught.value) and "--device cpu" in str(caught.value)


def test_a_gpu_index_past_the_last_says_which_exist() -> None:
    with pytest.raises(ConfigurationError, match=r"only 2 CUDA GPU\(s\) \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2", cuda_devices=2)


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:-1", "mps", ""])
def test_unknown_spellings_are_refused(spec: str) -> None:
    with pytest.raises(ConfigurationError, match="Unknown device"):
        resolve_device(spec, cuda_devices=1)


def test_by_default_it_asks_torch() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device().type == expected


def test_a_learner_on_a_device_trains_there_and_hands_out_cpu_numpy() -> None:
    learner = mnist_learner("simple-cnn", seed=0).on("cpu")
    model = learner.model_fn()
    weights = learner.initial_weights(seed=0)

    update = learner.local_update(
        model,
        weights,
        synthetic_dataset(num_examples=20, seed=1),
        LocalTrainingPlan(batch_size=10, max_batches=1),
        seed=3,
    )

    assert next(model.parameters()).device == learner.device == torch.device("cpu")
    assert all(d.dtype.name == "float32" for d in update.delta.values())
    assert learner.new_model().training


def test_a_learner_refuses_a_gpu_torch_does_not_see() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigurationError, match="no CUDA GPU"):
        mnist_learner().on("cuda")
