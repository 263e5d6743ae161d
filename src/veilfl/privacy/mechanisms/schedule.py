"""What each release of a linear noise mechanism is: a release schedule.

Every mechanism here releases, at step t (the t-th released round, counted from 1),

    r_t = (sum_{j=0}^{w-1} c_{t,j} * x_{t-j}) / s  +  noise(added blocks) - noise(removed blocks),

with x_t the round's clipped sum, w the schedule's window (how many past round sums a
release combines), c_{t,j} integer coefficients and s an integer scale (a fixed-point
scaled strategy matrix, exact in the aggregators' field; s = 1 when the coefficients
are whole), and noise blocks that are each drawn once, from a run secret or by the
aggregators, and reused where several releases carry them. The coordinator turns the
release into the round's estimate with a stateful :class:`ReleaseDecoder`.

* DP-FedAvg's fresh noise (McMahan et al. 2018): window 1, c = (1,), block (0, t)
  added at step t, nothing removed.
* DP-FTRL's tree (Kairouz et al. 2021): window 1, c = (1,), the block entering the
  cover added and the blocks leaving it removed (:func:`~veilfl.privacy.tree.cover_change`):
  the releases are the changes of the noised prefix sum.
* A banded matrix factorisation (Choquette-Choo et al. 2023) with a b-banded lower
  triangular C: window b, c_{t,j} = round(s * C[t, t-j]), fresh block (0, t) per step,
  and a decoder ``xhat_t = (s * r_t - sum_{j>=1} c_{t,j} xhat_{t-j}) / c_{t,0}`` with
  O(b d) state (the last b - 1 estimates): :class:`ToeplitzReleaseSchedule` for a
  Toeplitz C (banded Toeplitz, or a BLT's coefficients).

This module is pure: no I/O, no randomness. The noise itself is drawn in one place
per placement (the coordinator's central noise, the aggregators' dealing, or the
client under local noise).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from veilfl.errors import ConfigurationError, StorageError
from veilfl.privacy.mf_stream import StreamingDecoder, StreamState
from veilfl.privacy.tree import TreeNode, cover_change

__all__ = [
    "FreshNoiseSchedule",
    "ReleaseDecoder",
    "ReleaseEncoder",
    "ReleaseSchedule",
    "ReleaseTerms",
    "StatelessDecoder",
    "ToeplitzReleaseSchedule",
    "TreeNoiseSchedule",
    "dealt_schedule_named",
]


@dataclass(frozen=True)
class ReleaseTerms:
    """What release ``step`` combines.

    Attributes:
        step: The release (the t-th released round, from 1).
        coefficients: c_{t,0}, c_{t,1}, ...: integer weights of this round's sum and
            of the previous rounds' sums (at most the schedule's window).
        scale: s, the integer the coefficients were scaled by (1: whole coefficients).
        added: Noise blocks this release adds.
        removed: Noise blocks this release subtracts (drawn for earlier releases).
    """

    step: int
    coefficients: tuple[int, ...]
    scale: int
    added: tuple[TreeNode, ...]
    removed: tuple[TreeNode, ...] = ()

    def __post_init__(self) -> None:
        if self.step < 1 or not self.coefficients or self.coefficients[0] == 0 or self.scale < 1:
            raise ConfigurationError(
                "A release needs a step >= 1, a non-zero coefficient on its own round's "
                "sum and a positive scale."
            )


class ReleaseDecoder(ABC):
    """The coordinator's side of a schedule: turns releases into round estimates.

    It is stateful (a banded schedule keeps its last estimates); :meth:`to_json` and
    :meth:`restore` carry that state across a restart.
    """

    @abstractmethod
    def decode(
        self, terms: ReleaseTerms, release: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """The round's estimate from release ``terms.step`` (steps in order)."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The decoder's state, JSON-ready."""

    @abstractmethod
    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`to_json`'s state."""


class ReleaseEncoder(ABC):
    """The central combination of round sums for a schedule whose strategy is not a
    finite window of coefficients (a BLT's reaches back over the whole run, in O(k d)
    state): release t's signal ``(C x)_t``, computed by the coordinator under central
    noise. :meth:`to_json` and :meth:`restore` carry its state across a restart."""

    @abstractmethod
    def encode(self, round_sum: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``(C x)_t`` from this round's sum (steps in order)."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The encoder's state, JSON-ready (secret: it sums past round sums)."""

    @abstractmethod
    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`to_json`'s state."""


class StatelessDecoder(ReleaseDecoder):
    """The decoder of a window-1 schedule with unit coefficient: the release is the
    estimate (the tree's prefix-sum change, or a fresh-noise sum)."""

    def decode(
        self, terms: ReleaseTerms, release: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """``release`` itself (after checking the schedule is window 1, c = (1,))."""
        if terms.coefficients != (1,) or terms.scale != 1:
            raise ConfigurationError("A stateless decoder needs a unit, window-1 release.")
        return release

    def to_json(self) -> dict[str, Any]:
        """No state."""
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        """No state to restore."""


class ReleaseSchedule(ABC):
    """Which round sums and which noise blocks each release combines.

    Implementations are pure and deterministic: the aggregators, the coordinator and a
    test's oracle all ask the same object.
    """

    name: str
    """How the aggregators' noise state names it (``"tree"``, ``"fresh"``)."""

    @property
    @abstractmethod
    def window(self) -> int:
        """How many round sums (this one and earlier ones) a release combines."""

    @abstractmethod
    def terms(self, step: int) -> ReleaseTerms:
        """What release ``step`` combines."""

    def decoder(self) -> ReleaseDecoder:
        """A new coordinator-side decoder (stateless for window-1 schedules)."""
        return StatelessDecoder()

    def encoder(self) -> ReleaseEncoder | None:
        """A new central encoder, for a strategy that no window of coefficients
        describes; None (the default): the terms' coefficients over the window."""
        return None


class FreshNoiseSchedule(ReleaseSchedule):
    """Every release carries its own noise block (0, step): DP-FedAvg's schedule.

    Steps need only increase (a DP-FedAvg release is numbered by its round id).
    """

    name = "fresh"

    @property
    def window(self) -> int:
        """1."""
        return 1

    def terms(self, step: int) -> ReleaseTerms:
        """Round ``step``'s sum plus block (0, step)."""
        return ReleaseTerms(step=step, coefficients=(1,), scale=1, added=(TreeNode(0, step),))


class TreeNoiseSchedule(ReleaseSchedule):
    """The binary tree's prefix-sum changes: DP-FTRL's schedule."""

    name = "tree"

    @property
    def window(self) -> int:
        """1."""
        return 1

    def terms(self, step: int) -> ReleaseTerms:
        """Round ``step``'s sum plus the entering block minus the leaving ones."""
        change = cover_change(step)
        return ReleaseTerms(
            step=step,
            coefficients=(1,),
            scale=1,
            added=(change.added,),
            removed=tuple(change.removed),
        )


class ToeplitzReleaseSchedule(ReleaseSchedule):
    """A lower-triangular Toeplitz strategy in fixed point: release t is
    ``(sum_j c_j x_{t-j}) / scale + z_t`` with a fresh block z_t, decoded by forward
    substitution (:class:`~veilfl.privacy.mf_stream.StreamingDecoder`, O(b d) state).

    The coefficients are the integer ones the field uses (``round(scale · C)``, see
    :class:`~veilfl.privacy.integer_strategy.IntegerToeplitzStrategy`), so central and
    distributed noise release the same rounded strategy, whose sensitivity is what the
    mechanism must account for. A banded strategy has b coefficients; a BLT's Toeplitz
    coefficients truncated to the rounds planned are one too.

    Args:
        coefficients: c_0 .. c_(b-1), integers, c_0 > 0.
        scale: The fixed-point scale (2^bits); 1 for whole coefficients.

    Raises:
        ConfigurationError: for no coefficients, c_0 <= 0 or a scale below 1.
    """

    name = "toeplitz"

    def __init__(self, *, coefficients: tuple[int, ...], scale: int) -> None:
        if not coefficients or coefficients[0] <= 0 or scale < 1:
            raise ConfigurationError(
                "A Toeplitz schedule needs integer coefficients with c_0 > 0 and a scale >= 1."
            )
        self._coefficients = tuple(int(c) for c in coefficients)
        self._scale = int(scale)

    @property
    def window(self) -> int:
        """b, the strategy's bands."""
        return len(self._coefficients)

    def terms(self, step: int) -> ReleaseTerms:
        """This round's and the last b - 1 rounds' sums with the coefficients, and
        fresh block (0, step)."""
        return ReleaseTerms(
            step=step,
            coefficients=self._coefficients[: min(step, self.window)],
            scale=self._scale,
            added=(TreeNode(0, step),),
        )

    def decoder(self) -> ReleaseDecoder:
        """Forward substitution over the last b - 1 estimates."""
        return _ToeplitzDecoder(self._coefficients)


class _ToeplitzDecoder(ReleaseDecoder):
    """:class:`~veilfl.privacy.mf_stream.StreamingDecoder` on ``scale · release``."""

    def __init__(self, coefficients: tuple[int, ...]) -> None:
        self._coefficients = coefficients
        self._stream: StreamingDecoder | None = None

    def decode(
        self, terms: ReleaseTerms, release: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """xhat_t = (scale · r_t - sum_{j>=1} c_j xhat_{t-j}) / c_0."""
        if self._stream is None:
            self._stream = StreamingDecoder(coefficients=self._coefficients, length=release.size)
        return self._stream.decode(terms.scale * release)

    def to_json(self) -> dict[str, Any]:
        """The stream's state (nothing before the first release)."""
        return {} if self._stream is None else self._stream.state().to_json()

    def restore(self, state: dict[str, Any]) -> None:
        """Continue the stream :meth:`to_json` described.

        Raises:
            StorageError: for the state of another strategy (a resumed run whose
                strategy came out differently).
        """
        if not state:
            self._stream = None
            return
        stream = StreamState.from_json(state)
        if stream.coefficients != self._coefficients:
            raise StorageError(
                "The stored decoder state was written for another strategy than this run's; "
                "resume with the veilfl version that started the run."
            )
        self._stream = StreamingDecoder.from_state(stream)


_DEALT_SCHEDULES: dict[str, ReleaseSchedule] = {
    FreshNoiseSchedule.name: FreshNoiseSchedule(),
    TreeNoiseSchedule.name: TreeNoiseSchedule(),
}


def dealt_schedule_named(name: str, *, coefficients: tuple[int, ...] = ()) -> ReleaseSchedule:
    """The schedule the aggregators deal by ``name``: ``"tree"``, ``"fresh"``, or
    ``"toeplitz"`` with its integer ``coefficients`` (at scale 1: the aggregators
    release ``sum_j c_j a_(t-j) + z_t`` and never divide).

    Raises:
        ConfigurationError: for another name, listing the known ones; for coefficients
            with a window-1 schedule, or a ``"toeplitz"`` schedule without them.
    """
    if name == ToeplitzReleaseSchedule.name:
        return ToeplitzReleaseSchedule(coefficients=coefficients, scale=1)
    if coefficients:
        raise ConfigurationError(
            f"The {name!r} noise schedule takes no coefficients; only 'toeplitz' does."
        )
    try:
        return _DEALT_SCHEDULES[name]
    except KeyError:
        known = [*_DEALT_SCHEDULES, ToeplitzReleaseSchedule.name]
        raise ConfigurationError(
            f"Unknown noise schedule {name!r}; use {' or '.join(map(repr, known))}."
        ) from None
