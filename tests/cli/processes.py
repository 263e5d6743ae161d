"""Test support: a tiny MNIST in IDX files (so commands start in seconds), and
``veilfl`` commands as subprocesses whose stderr can be waited on."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from veilfl.ml.datasets import synthetic_dataset

__all__ = ["VeilflProcess", "write_tiny_mnist"]

SRC = Path(__file__).resolve().parents[2] / "src"


def write_tiny_mnist(folder: Path, *, train: int = 240, test: int = 60) -> Path:
    """The four MNIST IDX files, holding a small learnable synthetic set."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, count, seed in (("train", train, 0), ("t10k", test, 1)):
        data = synthetic_dataset(num_examples=count, seed=seed)
        pixels = np.round(data.images[:, 0] * 255).astype(np.uint8)
        images = struct.pack(">HBB3I", 0, 8, 3, count, 28, 28) + pixels.tobytes()
        labels = struct.pack(">HBBI", 0, 8, 1, count) + data.labels.astype(np.uint8).tobytes()
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(images)
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)
    return folder


class VeilflProcess:
    """``python -m veilfl ARGS`` in folder ``cwd``, its stdout and stderr in one file."""

    def __init__(self, args: list[str], *, cwd: Path) -> None:
        self.err_path = cwd / f"stderr-{args[0]}-{time.monotonic_ns()}.txt"
        self._err = self.err_path.open("wb")
        env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "veilfl", *args],
            cwd=cwd,
            env=env,
            stdout=self._err,
            stderr=subprocess.STDOUT,
        )

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        """Wait until the output shows ``text``.

        Raises:
            AssertionError: if the process ends first or the time runs out.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode}:\n{self.stderr()}")
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not seen within {timeout} s:\n{self.stderr()}")

    def stop(self, signum: int, timeout: float = 60.0) -> int:
        """Send ``signum`` and wait for the exit code."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self._err.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._err.close()
