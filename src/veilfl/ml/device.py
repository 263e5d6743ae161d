"""Which torch device to train and evaluate on: ``--device auto|cpu|cuda[:N]``.

:func:`resolve_device` turns the command-line spelling into a ``torch.device``.
``auto`` takes the first CUDA GPU when torch sees one and the CPU otherwise; asking
for CUDA where torch sees none is a :class:`~veilfl.errors.ConfigurationError`, not
a silent fall-back to the CPU.

The device only decides where a model's arithmetic runs. Weights that leave a
learner are always float32 numpy arrays on the CPU, so the wire format, secure
aggregation and differential privacy are the same on every device.
"""

from __future__ import annotations

import re

import torch

from veilfl.errors import ConfigurationError

__all__ = ["DEVICE_HELP", "resolve_device"]

DEVICE_HELP = (
    "where to train and evaluate: auto (a CUDA GPU when torch sees one, else the CPU), "
    "cpu, cuda or cuda:N"
)
"""Help text for a ``--device`` command-line option."""

_CUDA = re.compile(r"cuda(?::(\d+))?")


def resolve_device(
    spec: str | torch.device = "auto",
    *,
    cuda_devices: int | None = None,
) -> torch.device:
    """The torch device that ``spec`` names.

    Args:
        spec: ``auto``, ``cpu``, ``cuda`` (the first GPU), ``cuda:N``, or a
            ``torch.device``; case and surrounding spaces are ignored.
        cuda_devices: How many CUDA GPUs to assume; None asks torch (how many it
            sees, 0 for a CPU-only build of torch). For tests.

    Returns:
        ``cpu`` or ``cuda:N`` (always with an index).

    Raises:
        ConfigurationError: for an unknown spelling, or for CUDA where there is no
            such GPU, saying what torch sees and what to do.
    """
    text = str(spec).strip().lower()
    available = _cuda_count() if cuda_devices is None else cuda_devices
    if text == "auto":
        return torch.device("cuda", 0) if available > 0 else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = _CUDA.fullmatch(text)
    if match is None:
        raise ConfigurationError(
            f"Unknown device {str(spec)!r}; use auto, cpu, cuda or cuda:N (N from 0)."
        )
    index = int(match.group(1) or 0)
    if available == 0:
        raise ConfigurationError(
            f"Device {text} was asked for but torch sees no CUDA GPU (torch "
            f"{torch.__version__}); use --device cpu or auto, or install a CUDA build "
            "of torch on a machine with a GPU."
        )
    if index >= available:
        raise ConfigurationError(
            f"Device {text} was asked for but torch sees only {available} CUDA GPU(s) "
            f"(cuda:0 to cuda:{available - 1}); pick one of those or use auto."
        )
    return torch.device("cuda", index)


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
