"""Train many clients' copies of one model at once, with ``torch.func``.

:func:`train_batched` computes exactly what :func:`~veilfl.ml.training.train_local`
computes for each client (the same shuffles from the same seeds, SGD with momentum,
FedProx's proximal term, epochs, batch size and step cap), but for K clients in one
pass: their parameters are stacked along a new leading axis and
``torch.func.vmap(torch.func.grad_and_value(...))`` over
``torch.func.functional_call`` takes every client's gradient step together. On a GPU
that turns K small, launch-bound trainings into one wide one.

Clients may differ in data size, hyper-parameters, epochs and starting weights. Each
step every client gets a batch of the widest batch size, padded and masked: padded
examples count for nothing in the loss, so the gradient is the mean over the real
ones, as in sequential training. A client with fewer steps (less data, fewer epochs,
a smaller step cap) sits out the remaining steps: its weights and momentum are held,
not updated.

The results match sequential training to floating-point tolerance, not bitwise:
vmap turns the K convolutions into one grouped convolution, whose sums run in
another order.

Only stateless, deterministic models batch: no buffers (batch-norm statistics), no
dropout or other randomness, every parameter trainable and none shared;
:func:`batching_obstacle` says what stands in the way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from veilfl.errors import ConfigurationError, DataError
from veilfl.ml.datasets import ArrayDataset
from veilfl.ml.training import TrainConfig, TrainResult, shuffle_seeds
from veilfl.ml.weights import get_weights
from veilfl.tensors import Weights

__all__ = ["BatchedClient", "batching_obstacle", "train_batched"]

_RANDOM_MODULES: tuple[type[nn.Module], ...] = (
    nn.modules.dropout._DropoutNd,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
)


@dataclass(frozen=True, eq=False)
class BatchedClient:
    """One client's share of a batched training call.

    Attributes:
        data: Its training data.
        weights: Where its training starts (the global model it was sent).
        config: Its SGD settings; ``config.seed`` must be set, so that its shuffles
            are the ones sequential training would draw.
    """

    data: ArrayDataset
    weights: Weights
    config: TrainConfig


def batching_obstacle(model: nn.Module) -> str | None:
    """Why ``model`` cannot be trained batched, in a phrase; None if it can."""
    if any(True for _ in model.buffers()):
        return "it has buffers (such as batch-norm statistics)"
    for module in model.modules():
        if isinstance(module, _RANDOM_MODULES):
            return f"it uses {type(module).__name__}, which is random or keeps statistics"
    names = [name for name, _ in model.named_parameters()]
    if not names:
        return "it has no parameters"
    if any(not p.requires_grad for p in model.parameters()):
        return "some of its parameters are frozen"
    if set(names) != set(get_weights(model)):
        return "it shares parameters between layers"
    return None


def _stack_data(
    clients: Sequence[BatchedClient], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[K, N, ...]`` and labels ``[K, N]``, zero-padded to the largest N."""
    largest = max(len(c.data) for c in clients)
    shape = clients[0].data.images.shape[1:]
    images = np.zeros((len(clients), largest, *shape), dtype=np.float32)
    labels = np.zeros((len(clients), largest), dtype=np.int64)
    for k, client in enumerate(clients):
        if client.data.images.shape[1:] != shape:
            raise DataError(
                f"Clients trained together need examples of one shape; got {shape} and "
                f"{client.data.images.shape[1:]}."
            )
        images[k, : len(client.data)] = client.data.images
        labels[k, : len(client.data)] = client.data.labels
    return torch.from_numpy(images).to(device), torch.from_numpy(labels).to(device)


def _epoch_plan(
    orders: list[npt.NDArray[np.int64] | None],
    steps: list[int],
    batch_sizes: list[int],
    width: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Example indices ``[S, K, width]`` and their mask for one epoch: step s of client
    k takes ``order[s*B_k : (s+1)*B_k]`` (shorter at the end), padded to ``width``."""
    most = max(steps)
    index = np.full((most, len(orders), width), -1, dtype=np.int64)
    for k, order in enumerate(orders):
        if order is None:
            continue
        size = batch_sizes[k]
        taken = np.full(steps[k] * size, -1, dtype=np.int64)
        used = order[: steps[k] * size]
        taken[: len(used)] = used
        index[: steps[k], k, :size] = taken.reshape(steps[k], size)
    mask = (index >= 0).astype(np.float32)
    return np.maximum(index, 0), mask


def _per_client(values: list[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device)


def _view(vector: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A ``[K]`` vector shaped to broadcast against a ``[K, ...]`` tensor."""
    return vector.view(-1, *([1] * (like.dim() - 1)))


def train_batched(
    model: nn.Module,
    clients: Sequence[BatchedClient],
    *,
    device: torch.device | str | None = None,
) -> list[TrainResult]:
    """Train every client's copy of ``model`` together; one result per client, in order.

    Each result equals, to floating-point tolerance, what
    :func:`~veilfl.ml.training.train_local` returns for that client's model, data and
    config. ``model`` serves only as the architecture; its own weights are unchanged.

    Args:
        model: The architecture (see :func:`batching_obstacle`).
        clients: Data, starting weights and settings of each client.
        device: Where to train; None uses the model's device.

    Returns:
        Per client: the delta (float32, CPU), examples per epoch, mean loss, and the
        wall time of the whole batched call.

    Raises:
        ConfigurationError: if the model cannot be batched or a client has no seed.
        DataError: if a client has no data, or examples differ in shape.
    """
    obstacle = batching_obstacle(model)
    if obstacle is not None:
        raise ConfigurationError(
            f"This model cannot be trained batched: {obstacle}; train its clients one "
            "at a time (SequentialExecutor)."
        )
    if not clients:
        return []
    if any(len(c.data) == 0 for c in clients):
        raise DataError("Cannot train on an empty data set; give every client some examples.")
    if any(c.config.seed is None for c in clients):
        raise ConfigurationError("Batched training needs a seed for every client's shuffles.")
    started = time.perf_counter()
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    names = [name for name, _ in model.named_parameters()]
    params = {
        name: torch.from_numpy(
            np.stack([np.asarray(c.weights[name], dtype=np.float32) for c in clients])
        ).to(device)
        for name in names
    }
    configs = [c.config for c in clients]
    sizes = [len(c.data) for c in clients]
    batch_sizes = [c.batch_size for c in configs]
    steps = [
        math.ceil(n / c.batch_size)
        if c.max_batches is None
        else min(math.ceil(n / c.batch_size), c.max_batches)
        for n, c in zip(sizes, configs, strict=True)
    ]
    epochs = [c.epochs for c in configs]
    width = max(batch_sizes)
    lr = _per_client([c.learning_rate for c in configs], device)
    momentum = _per_client([c.momentum for c in configs], device)
    mu = _per_client([c.proximal_mu for c in configs], device)
    use_momentum = any(c.momentum > 0 for c in configs)
    use_prox = any(c.proximal_mu > 0 for c in configs)
    anchor = {n: p.clone() for n, p in params.items()} if use_prox else {}
    velocity = {n: torch.zeros_like(p) for n, p in params.items()} if use_momentum else {}
    generators = [
        torch.Generator().manual_seed(shuffle_seeds(int(c.seed or 0))[0]) for c in configs
    ]
    images, labels = _stack_data(clients, device)
    rows = torch.arange(len(clients), device=device).unsqueeze(1)
    total_loss = torch.zeros(len(clients), dtype=torch.float64, device=device)

    def loss_of(
        p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, m: torch.Tensor
    ) -> torch.Tensor:
        logits = torch.func.functional_call(model, p, (x,))
        losses = nn.functional.cross_entropy(logits, y, reduction="none")
        return (losses * m).sum() / m.sum().clamp(min=1.0)

    step_fn: Any = torch.func.vmap(torch.func.grad_and_value(loss_of))
    was_training = model.training
    model.train()
    try:
        for epoch in range(max(epochs)):
            orders = [
                torch.randperm(n, generator=g).numpy() if epoch < e else None
                for n, g, e in zip(sizes, generators, epochs, strict=True)
            ]
            live = [s if o is not None else 0 for s, o in zip(steps, orders, strict=True)]
            index_np, mask_np = _epoch_plan(orders, live, batch_sizes, width)
            index = torch.from_numpy(index_np).to(device)
            mask = torch.from_numpy(mask_np).to(device)
            active_np = np.arange(index_np.shape[0])[:, None] < np.array(live)[None, :]
            active = torch.from_numpy(active_np).to(device)
            for step in range(index_np.shape[0]):
                batch = index[step]
                grads, losses = step_fn(
                    params, images[rows, batch], labels[rows, batch], mask[step]
                )
                everyone = bool(active_np[step].all())
                on = active[step]
                total_loss += torch.where(on, losses.detach(), 0.0)
                with torch.no_grad():
                    for name in names:
                        p, g = params[name], grads[name]
                        if use_prox:
                            g = g + _view(mu, p) * (p - anchor[name])
                        if use_momentum:
                            v = _view(momentum, p) * velocity[name] + g
                            if not everyone:
                                v = torch.where(_view(on, p), v, velocity[name])
                            velocity[name] = v
                            g = v
                        updated = p - _view(lr, p) * g
                        if not everyone:
                            updated = torch.where(_view(on, p), updated, p)
                        params[name] = updated
    except RuntimeError as exc:
        if "random" in str(exc).lower():
            raise ConfigurationError(
                "This model draws random numbers in training (dropout or the like), so its "
                "clients cannot be trained batched; train them one at a time "
                "(SequentialExecutor)."
            ) from exc
        raise
    finally:
        model.train(was_training)
    trained = {name: tensor.detach().to("cpu").numpy() for name, tensor in params.items()}
    losses_cpu = total_loss.to("cpu").numpy()
    seconds = time.perf_counter() - started
    results = []
    for k, client in enumerate(clients):
        delta = {
            name: (trained[name][k] - np.asarray(client.weights[name], dtype=np.float32)).astype(
                np.float32
            )
            for name in client.weights
        }
        results.append(
            TrainResult(
                delta=delta,
                num_samples=min(sizes[k], steps[k] * batch_sizes[k]),
                mean_loss=float(losses_cpu[k]) / (steps[k] * epochs[k]),
                seconds=seconds,
            )
        )
    return results
