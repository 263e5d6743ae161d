"""DP-FTRL's tree noise added by the coordinator itself (central placement).

The tree mechanism (Dwork et al. 2010; Chan, Shi and Song 2011; DP-FTRL, Kairouz et
al. 2021) gives every dyadic block of rounds Gaussian noise N(0, (z·C)² I) once, and
the noised prefix sum after step t carries the noise of the blocks that cover [1, t]
(:func:`~veilfl.privacy.tree.cover`). Released step by step, the prefix sum changes
by the round's sum plus the noise of the block that enters the cover minus the noise
of the blocks that leave it (:func:`~veilfl.privacy.tree.cover_change`); the changes
telescope to the noised prefix sum.

Each block's noise is drawn from a :class:`~veilfl.crypto.csprng.CsprngStream` keyed
by SHA-256 of a 32-byte run secret and the block, so it is the same whenever it is
needed again (when it leaves the cover, or after a restart) and the coordinator keeps
no noise vectors at all, only the secret. The secret is as sensitive as the noiseless
sums the coordinator already sees under central placement: whoever holds it can
remove the noise from every released model. It is kept in the coordinator's run
store (:class:`~veilfl.privacy.run_state.DpRunState`) so that a restarted run
continues the same tree.
"""

from __future__ import annotations

import hashlib
import math
import struct

import numpy as np
import numpy.typing as npt

from veilfl.crypto.csprng import KEY_LENGTH, CsprngStream
from veilfl.errors import ConfigurationError
from veilfl.privacy.mechanisms.schedule import ReleaseSchedule, TreeNoiseSchedule
from veilfl.privacy.noise import gaussian
from veilfl.privacy.tree import TreeNode, cover

__all__ = ["CentralTreeNoise"]


class CentralTreeNoise:
    """Block noise derived from a run secret.

    Args:
        key: The run's 32-byte secret.
        stddev: Each block's noise standard deviation (z·C, in update units).
        length: Coordinates per vector.
        schedule: Which blocks each release adds and removes (default: the tree's;
            a window-1 schedule, :mod:`veilfl.privacy.mechanisms.schedule`).

    Raises:
        ConfigurationError: for a key that is not 32 bytes, a negative or non-finite
            standard deviation or a length below 1.
    """

    def __init__(
        self,
        *,
        key: bytes,
        stddev: float,
        length: int,
        schedule: ReleaseSchedule | None = None,
    ) -> None:
        if len(key) != KEY_LENGTH:
            raise ConfigurationError(f"The tree-noise secret must be {KEY_LENGTH} bytes.")
        if not (stddev >= 0 and math.isfinite(stddev)) or length < 1:
            raise ConfigurationError(
                "Tree noise needs a finite standard deviation >= 0 and at least one coordinate."
            )
        self._key = key
        self._stddev = stddev
        self._length = length
        self._schedule = schedule or TreeNoiseSchedule()

    def __repr__(self) -> str:  # never print the secret
        return f"CentralTreeNoise(stddev={self._stddev:g}, length={self._length})"

    def block(self, node: TreeNode) -> npt.NDArray[np.float64]:
        """The noise of block ``node`` (the same on every call)."""
        label = b"veilfl tree block" + struct.pack("<II", node.level, node.index)
        stream = CsprngStream(key=hashlib.sha256(self._key + label).digest())
        return gaussian(stream, sigma=self._stddev, count=self._length)

    def change(self, step: int) -> npt.NDArray[np.float64]:
        """How the noise of the released prefix sum changes at ``step``: the entering
        block's noise minus the leaving blocks'."""
        terms = self._schedule.terms(step)
        total = np.zeros(self._length, dtype=np.float64)
        for node in terms.added:
            total = total + self.block(node)
        for node in terms.removed:
            total = total - self.block(node)
        return total

    def prefix(self, step: int) -> npt.NDArray[np.float64]:
        """The noise the prefix sum carries after ``step`` steps (the cover's)."""
        total = np.zeros(self._length, dtype=np.float64)
        for node in cover(step):
            total = total + self.block(node)
        return total
