"""Batched training against the obvious oracle: each client trained on its own with
train_local (uneven data sizes, momentum, FedProx, epochs, step caps, batch sizes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from veilfl.errors import ConfigurationError, DataError
from veilfl.ml.batched_training import BatchedClient, batching_obstacle, train_batched
from veilfl.ml.datasets import ArrayDataset, synthetic_dataset
from veilfl.ml.models import SimpleCNN
from veilfl.ml.training import TrainConfig, TrainResult, train_local
from veilfl.ml.weights import get_weights, set_weights


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def _data(n: int, seed: int) -> ArrayDataset:
    return synthetic_dataset(num_examples=n, seed=seed, num_classes=3, image_shape=(1, 4, 4))


def _one_at_a_time(make: type[nn.Module] | object, client: BatchedClient) -> TrainResult:
    model = make()  # type: ignore[operator]
    set_weights(model, client.weights)
    return train_local(model, client.data, client.config)


def _assert_same(batched: TrainResult, sequential: TrainResult, *, atol: float) -> None:
    assert batched.num_samples == sequential.num_samples
    assert batched.mean_loss == pytest.approx(sequential.mean_loss, rel=1e-5)
    assert list(batched.delta) == list(sequential.delta)
    for name, expected in sequential.delta.items():
        assert batched.delta[name].dtype == np.float32
        np.testing.assert_allclose(batched.delta[name], expected, rtol=1e-4, atol=atol)


client_settings = st.tuples(
    st.integers(1, 30),  # examples
    st.sampled_from([0.0, 0.5, 0.9]),  # momentum
    st.sampled_from([0.0, 0.1, 1.0]),  # FedProx mu
    st.integers(1, 3),  # epochs
    st.sampled_from([None, 1, 2]),  # max_batches
    st.sampled_from([4, 8]),  # batch size
)


@settings(max_examples=25, deadline=None)
@given(clients=st.lists(client_settings, min_size=1, max_size=4), seed=st.integers(0, 2**32))
def test_batched_equals_sequential_for_each_client(
    clients: list[tuple[int, float, float, int, int | None, int]], seed: int
) -> None:
    model = _tiny()
    start = get_weights(model)
    batch = [
        BatchedClient(
            data=_data(n, seed + k),
            weights=start if k % 2 == 0 else get_weights(_tiny()),
            config=TrainConfig(
                learning_rate=0.1,
                momentum=momentum,
                proximal_mu=mu,
                epochs=epochs,
                max_batches=cap,
                batch_size=size,
                seed=seed + 100 * k,
            ),
        )
        for k, (n, momentum, mu, epochs, cap, size) in enumerate(clients)
    ]

    results = train_batched(model, batch)

    assert len(results) == len(batch)
    for client, result in zip(batch, results, strict=True):
        _assert_same(result, _one_at_a_time(_tiny, client), atol=1e-6)
    assert get_weights(model).keys() == start.keys()
    for name in start:  # the architecture model is left as it was
        np.testing.assert_array_equal(get_weights(model)[name], start[name])


def test_a_convolutional_net_with_uneven_clients_momentum_and_fedprox() -> None:
    torch.manual_seed(0)  # one initial model every run: float32 sums in another order
    model = SimpleCNN()  # differ by a few 1e-6 on some draws, so the draw is fixed
    start = get_weights(model)
    batch = [
        BatchedClient(
            data=synthetic_dataset(num_examples=n, seed=k),
            weights=start,
            config=TrainConfig(
                learning_rate=0.05, momentum=m, proximal_mu=mu, epochs=2, batch_size=8, seed=k
            ),
        )
        for k, (n, m, mu) in enumerate([(23, 0.0, 0.0), (40, 0.9, 0.0), (7, 0.5, 0.3)])
    ]

    results = train_batched(model, batch)

    for client, result in zip(batch, results, strict=True):
        _assert_same(result, _one_at_a_time(SimpleCNN, client), atol=1e-6)


def test_different_seeds_train_differently() -> None:
    model = _tiny()
    start = get_weights(model)
    data = _data(20, 0)
    batch = [
        BatchedClient(data, start, TrainConfig(learning_rate=0.1, batch_size=4, seed=s))
        for s in (1, 2)
    ]
    first, second = train_batched(model, batch)
    assert any(not np.array_equal(first.delta[n], second.delta[n]) for n in start)


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (nn.Sequential(nn.Flatten(), nn.Linear(16, 3), nn.Dropout(0.5)), "Dropout"),
        (nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(16, 3)), "buffers"),
    ],
)
def test_models_with_randomness_or_statistics_cannot_be_batched(
    model: nn.Module, reason: str
) -> None:
    assert reason in (batching_obstacle(model) or "")
    client = BatchedClient(_data(4, 0), get_weights(model), TrainConfig(seed=0))
    with pytest.raises(ConfigurationError, match="cannot be trained batched"):
        train_batched(model, [client])


def test_frozen_and_shared_parameters_cannot_be_batched() -> None:
    frozen = _tiny()
    next(frozen.parameters()).requires_grad_(False)
    shared = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    shared[1].weight = shared[0].weight
    assert "frozen" in (batching_obstacle(frozen) or "")
    assert "shares" in (batching_obstacle(shared) or "")
    assert batching_obstacle(_tiny()) is None and batching_obstacle(SimpleCNN()) is None


def test_every_client_needs_data_and_a_seed() -> None:
    model = _tiny()
    empty = ArrayDataset(
        images=np.zeros((0, 1, 4, 4), dtype=np.float32), labels=np.zeros(0, dtype=np.int64)
    )
    with pytest.raises(DataError, match="empty"):
        train_batched(model, [BatchedClient(empty, get_weights(model), TrainConfig(seed=1))])
    with pytest.raises(ConfigurationError, match="seed"):
        train_batched(model, [BatchedClient(_data(4, 0), get_weights(model), TrainConfig())])
    assert train_batched(model, []) == []
