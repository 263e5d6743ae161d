"""Sample-level DP-SGD on a client (Abadi et al. 2016), through Opacus.

Per-example gradients are clipped to ``max_grad_norm`` and Gaussian noise of standard
deviation ``noise_multiplier * max_grad_norm`` is added to each batch's gradient sum;
batches are Poisson-sampled. Opacus's RDP accountant tracks the client's own epsilon
across every round it trains. The noise itself comes from veilfl's CSPRNG (AES-CTR
keyed from ``os.urandom``) rather than torch's Mersenne Twister: Opacus's own secure
mode needs ``torchcsprng``, which is not available for current torch releases.
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from opacus import PrivacyEngine
from opacus.optimizers.optimizer import DPOptimizer, _check_processed_flag, _mark_as_processed
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import ConfigurationError
from veilfl.ml.datasets import ArrayDataset
from veilfl.ml.device import resolve_device
from veilfl.ml.learner import Learner, TrainOutcome, evaluate_array_dataset
from veilfl.ml.models import build_model
from veilfl.ml.weights import get_weights, set_weights
from veilfl.privacy.noise import gaussian
from veilfl.protocol.messages import LocalTrainingPlan

__all__ = ["DpSgdConfig", "DpSgdTrainer", "dp_sgd_learner"]


@dataclass(frozen=True)
class DpSgdConfig:
    """Sample-level DP-SGD settings.

    Attributes:
        noise_multiplier: Noise standard deviation over ``max_grad_norm``.
        max_grad_norm: Per-example gradient clipping norm.
        delta: The delta at which the client reports epsilon.
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise ConfigurationError("DP-SGD needs a positive noise multiplier.")
        if not (self.max_grad_norm > 0 and math.isfinite(self.max_grad_norm)):
            raise ConfigurationError("DP-SGD needs a positive gradient clipping norm.")
        if not 0 < self.delta < 1:
            raise ConfigurationError("delta must be in (0, 1).")


def _use_csprng_noise(optimizer: DPOptimizer, rng: CsprngStream) -> None:
    """Make ``optimizer`` draw its Gaussian noise from ``rng``."""

    def add_noise(self: DPOptimizer) -> None:
        std = self.noise_multiplier * self.max_grad_norm
        for p in self.params:
            _check_processed_flag(p.summed_grad)
            summed = p.summed_grad
            noise = gaussian(rng, sigma=std, count=summed.numel()).astype(np.float32)
            noise_t = torch.from_numpy(noise).to(summed.device).view_as(summed)
            p.grad = (summed + noise_t).view_as(p)
            _mark_as_processed(p.summed_grad)

    optimizer.add_noise = types.MethodType(add_noise, optimizer)


class DpSgdTrainer:
    """One client's DP-SGD across rounds; its privacy engine keeps the accountant.

    Args:
        model_fn: Builds the model architecture.
        config: DP-SGD settings.
        seed: Seeds batch sampling (not the noise, which is always from the CSPRNG).
    """

    def __init__(
        self, model_fn: Callable[[], nn.Module], config: DpSgdConfig, *, seed: int | None = None
    ) -> None:
        self._model_fn = model_fn
        self._config = config
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Opacus warns about secure_mode; see module doc
            self._engine = PrivacyEngine(accountant="rdp")
        self._rng = CsprngStream()
        self._seed = seed

    @property
    def epsilon(self) -> float:
        """The client's epsilon so far, at the configured delta."""
        if not self._engine.accountant.history:
            return 0.0
        return float(self._engine.get_epsilon(self._config.delta))

    def train(self, model: nn.Module, data: ArrayDataset, plan: LocalTrainingPlan) -> TrainOutcome:
        """Train ``model`` in place with DP-SGD (on its device); report the client's
        epsilon so far."""
        device = next(model.parameters()).device
        private_copy = self._model_fn().to(device)
        set_weights(private_copy, get_weights(model))
        generator = torch.Generator()
        if self._seed is not None:
            generator.manual_seed(self._seed)
        loader = DataLoader(
            TensorDataset(torch.from_numpy(data.images), torch.from_numpy(data.labels)),
            batch_size=plan.batch_size,
            generator=generator,
        )
        optimizer = torch.optim.SGD(
            private_copy.parameters(), lr=plan.learning_rate, momentum=plan.momentum
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Opacus warns about secure_mode; see module doc
            module, dp_optimizer, private_loader = self._engine.make_private(
                module=private_copy,
                optimizer=optimizer,
                data_loader=loader,
                noise_multiplier=self._config.noise_multiplier,
                max_grad_norm=self._config.max_grad_norm,
            )
        _use_csprng_noise(dp_optimizer, self._rng)
        module.train()
        losses: list[float] = []
        for _ in range(plan.epochs):
            for batch, (images, labels) in enumerate(private_loader):
                if plan.max_batches is not None and batch >= plan.max_batches:
                    break
                if len(labels) == 0:
                    continue
                dp_optimizer.zero_grad()
                images, labels = images.to(device), labels.to(device)
                loss = nn.functional.cross_entropy(module(images), labels)
                loss.backward()  # type: ignore[no-untyped-call]
                dp_optimizer.step()
                losses.append(float(loss.detach()))
        set_weights(model, get_weights(private_copy))
        return TrainOutcome(
            num_samples=len(data),
            mean_loss=float(np.mean(losses)) if losses else float("nan"),
            epsilon=self.epsilon,
        )


def dp_sgd_learner(
    model_name: str,
    config: DpSgdConfig,
    *,
    seed: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[Learner[ArrayDataset], DpSgdTrainer]:
    """A learner that trains with DP-SGD on ``device``, and the trainer that holds its
    accountant.

    Raises:
        ConfigurationError: for an unknown device or a GPU torch does not see.
    """
    trainer = DpSgdTrainer(lambda: build_model(model_name), config, seed=seed)
    learner: Learner[ArrayDataset] = Learner(
        model_fn=lambda: build_model(model_name),
        train_fn=trainer.train,
        evaluate_fn=evaluate_array_dataset,
        device=resolve_device(device),
    )
    return learner, trainer
