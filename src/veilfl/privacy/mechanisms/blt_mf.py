"""Buffered Linear Toeplitz (BLT) matrix factorisation as a
:class:`~veilfl.privacy.mechanisms.base.PrivacyMechanism`, central noise only.

BLT (Dvijotham, McMahan, Pillutla, Steinke and Thakurta 2024;
:mod:`veilfl.privacy.blt`): no sampling; every client takes part in at most K
released rounds at least b apart (the DP-FTRL participation flags), and release t is

    r_t = (C x)_t + z_t,   z_t ~ N(0, (z·C)^2 I) fresh,

with C the lower-triangular Toeplitz strategy c_0 = 1, c_i = sum_j w_j theta_j^(i-1)
of k buffers. Its coefficients reach back over the whole run, so the coordinator
computes (C x)_t with k running sums of the past round sums (:class:`_BltEncoder`) and
decodes the release with k running sums of its outputs
(:class:`~veilfl.privacy.blt.BltNoiseStream`): x_t + (C^-1 z)_t, in O(k d) state
either way, persisted with the run's privacy state.

The strategy is :func:`~veilfl.privacy.blt.optimize_blt` for the K·b rounds over which
the most frequent participant takes its K turns (at most
:data:`~veilfl.privacy.mechanisms.banded_mf.STRATEGY_HORIZON_CAP`), with the buffers
of this mechanism's options: a function of the run's description alone, optimised
once per process. Epsilon is the matrix mechanism's at the strategy's (K, b)
min-separation sensitivity over the releases so far. The aggregators' field needs
integer coefficients, and a BLT's real decays have none exact: distributed noise is
refused, pointing to ``banded``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt

from veilfl.declared import setting
from veilfl.errors import ConfigurationError, StorageError
from veilfl.privacy.mechanisms.banded_mf import STRATEGY_HORIZON_CAP
from veilfl.privacy.mechanisms.base import DealtNoisePlan
from veilfl.privacy.mechanisms.matrix_mechanism import MatrixMechanism
from veilfl.privacy.mechanisms.schedule import (
    ReleaseDecoder,
    ReleaseEncoder,
    ReleaseSchedule,
    ReleaseTerms,
)
from veilfl.privacy.mf_stream import StreamState
from veilfl.privacy.tree import TreeNode

if TYPE_CHECKING:
    from veilfl.privacy.blt import BltNoiseStream, BltStrategy
    from veilfl.privacy.dp_config import DpConfig

__all__ = ["BltMatrixFactorization", "BltOptions", "BltReleaseSchedule"]


@dataclass(frozen=True)
class BltOptions:
    """BLT's own settings.

    Attributes:
        buffers: k, the strategy's buffers (its state is k vectors of the model's size).
    """

    buffers: int = setting(
        default=4,
        flag="--dp-blt-buffers",
        help="BLT: the strategy's buffers (its noise state is this many model-sized vectors)",
        at_least=1,
        at_most=16,
    )


class _BltEncoder(ReleaseEncoder):
    """(C x)_t = x_t + sum_j w_j T_j, then T_j <- theta_j T_j + x_t."""

    def __init__(self, strategy: BltStrategy) -> None:
        self._weights = np.asarray(strategy.weights, dtype=np.float64)
        self._decays = np.asarray(strategy.decays, dtype=np.float64)
        self._parameters = (*strategy.weights, *strategy.decays)
        self._steps = 0
        self._buffers: npt.NDArray[np.float64] | None = None

    def encode(self, round_sum: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """This round's sum plus the weighted buffers of the earlier ones."""
        if self._buffers is None:
            self._buffers = np.zeros((self._weights.size, round_sum.size))
        out: npt.NDArray[np.float64] = round_sum + self._weights @ self._buffers
        self._buffers = self._decays[:, np.newaxis] * self._buffers + round_sum
        self._steps += 1
        return out

    def to_json(self) -> dict[str, Any]:
        """The k buffers (nothing before the first round)."""
        if self._buffers is None:
            return {}
        return StreamState(
            coefficients=self._parameters, steps=self._steps, window=self._buffers.copy()
        ).to_json()

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`to_json`'s buffers.

        Raises:
            StorageError: for buffers of another strategy.
        """
        if not state:
            return
        stream = StreamState.from_json(state)
        if stream.coefficients != self._parameters or stream.window.shape[0] != self._weights.size:
            raise StorageError(
                "The stored BLT encoder state was written for another strategy than this "
                "run's; resume with the veilfl version that started the run."
            )
        self._steps = stream.steps
        self._buffers = np.array(stream.window, dtype=np.float64)


class _BltDecoder(ReleaseDecoder):
    """:class:`~veilfl.privacy.blt.BltNoiseStream` over the releases: C^-1 r."""

    def __init__(self, strategy: BltStrategy) -> None:
        self._strategy = strategy
        self._stream: BltNoiseStream | None = None

    def decode(
        self, terms: ReleaseTerms, release: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """x_t + (C^-1 z)_t."""
        from veilfl.privacy.blt import BltNoiseStream

        if self._stream is None:
            self._stream = BltNoiseStream(strategy=self._strategy, length=release.size)
        return self._stream.correlate(release)

    def to_json(self) -> dict[str, Any]:
        """The stream's buffers (nothing before the first release)."""
        return {} if self._stream is None else self._stream.state().to_json()

    def restore(self, state: dict[str, Any]) -> None:
        """Continue the stream :meth:`to_json` described.

        Raises:
            StorageError: for the state of another strategy.
        """
        from veilfl.privacy.blt import BltNoiseStream

        if not state:
            self._stream = None
            return
        stream = StreamState.from_json(state)
        if stream.coefficients != (*self._strategy.weights, *self._strategy.decays):
            raise StorageError(
                "The stored BLT decoder state was written for another strategy than this "
                "run's; resume with the veilfl version that started the run."
            )
        self._stream = BltNoiseStream.from_state(stream)


class BltReleaseSchedule(ReleaseSchedule):
    """Release t: (C x)_t from the encoder's buffers plus a fresh block (0, t); c_0 = 1.

    Args:
        strategy: The BLT strategy.
    """

    name = "blt"

    def __init__(self, strategy: BltStrategy) -> None:
        self._strategy = strategy

    @property
    def window(self) -> int:
        """1: the earlier round sums enter through the encoder's buffers, not a window."""
        return 1

    def terms(self, step: int) -> ReleaseTerms:
        """c_0 = 1 on this round's sum, and fresh block (0, step)."""
        return ReleaseTerms(step=step, coefficients=(1,), scale=1, added=(TreeNode(0, step),))

    def encoder(self) -> ReleaseEncoder:
        """k running sums of the past round sums."""
        return _BltEncoder(self._strategy)

    def decoder(self) -> ReleaseDecoder:
        """k running sums of the past estimates."""
        return _BltDecoder(self._strategy)


@functools.lru_cache(maxsize=32)
def _strategy(*, horizon: int, buffers: int, participations: int, separation: int) -> BltStrategy:
    from veilfl.privacy.blt import optimize_blt

    return optimize_blt(
        rounds=horizon,
        buffers=buffers,
        max_participations=participations,
        min_separation=separation,
    )


class BltMatrixFactorization(MatrixMechanism):
    """A BLT strategy under central noise, at most K participations b apart."""

    name: ClassVar[str] = "blt"
    title: ClassVar[str] = "BLT"
    summary: ClassVar[str] = (
        "buffered linear Toeplitz matrix factorisation (Dvijotham et al. 2024), no "
        "sampling, central noise only"
    )
    samples_clients: ClassVar[bool] = False
    placements: ClassVar[frozenset[str]] = frozenset({"central"})
    options: ClassVar[type[Any] | None] = BltOptions

    def check(self, config: DpConfig) -> None:
        """Refuse distributed noise pointing to ``banded``, then the default checks.

        Raises:
            ConfigurationError: naming the flag and what to do.
        """
        if config.placement == "distributed":
            raise ConfigurationError(
                "--dp-mechanism blt adds central noise only (the aggregators' field needs "
                "integer coefficients); use --dp-mechanism banded with --dp distributed."
            )
        super().check(config)

    def strategy(self, config: DpConfig) -> BltStrategy:
        """The run's BLT strategy (module docstring), optimised once per process.

        Raises:
            ConfigurationError: without ``--dp-max-participations``.
        """
        if config.max_participations is None:
            raise ConfigurationError("--dp-mechanism blt needs --dp-max-participations.")
        options = config.options if isinstance(config.options, BltOptions) else BltOptions()
        k, b = config.max_participations, config.min_separation
        return _strategy(
            horizon=min(k * b, STRATEGY_HORIZON_CAP),
            buffers=options.buffers,
            participations=k,
            separation=b,
        )

    def release_schedule(self, config: DpConfig, *, rounds: int) -> ReleaseSchedule:
        """:class:`BltReleaseSchedule` of the run's strategy."""
        return BltReleaseSchedule(self.strategy(config))

    def dealt_noise(
        self, config: DpConfig, *, per_update_bound: float, expected_clients: float
    ) -> DealtNoisePlan:
        """Refused: see :meth:`check`."""
        raise ConfigurationError(
            "--dp-mechanism blt adds central noise only; use --dp-mechanism banded with "
            "--dp distributed."
        )

    def equivalent_noise_multiplier(
        self, config: DpConfig, *, rounds: int, expected_clients: float
    ) -> float:
        """z · sqrt(mean_t ||row t of A C^-1||^2 / mean_t t): the decoded noise is
        C^-1 z, which the interface's default (window 1, fresh blocks) would miss."""
        import math

        errors = self.strategy(config).prefix_squared_errors(rounds)
        return config.noise_multiplier * math.sqrt(float(np.mean(errors)) / ((rounds + 1) / 2))
