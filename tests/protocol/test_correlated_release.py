"""The private backend of an unsampled mechanism releases what its schedule says and
decodes it with the schedule's decoder, whatever the window: a throwaway two-band
schedule (the shape of banded MF), registered by this test alone, releases
``(c_0 x_t + c_1 x_{t-1}) / s + z_t`` under central noise and decodes
``xhat_t = (s r_t - c_1 xhat_{t-1}) / c_0``; the noise cancels between two runs with
the same secret, so the signal is decoded exactly, and a restarted backend continues
the same releases from its stored state."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import pytest

from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import ConfigurationError
from veilfl.privacy.accountant import exact_gaussian_epsilon
from veilfl.privacy.dp_config import DpConfig
from veilfl.privacy.mechanisms import (
    DealtNoisePlan,
    PrivacyMechanism,
    ReleaseDecoder,
    ReleaseSchedule,
    ReleaseTerms,
    ToeplitzReleaseSchedule,
    register_mechanism,
    unregister_mechanism,
)
from veilfl.privacy.participation import ParticipationLimits
from veilfl.privacy.run_state import DpRunState
from veilfl.privacy.tree import TreeNode
from veilfl.protocol.aggregation import PlaintextAggregation
from veilfl.protocol.private_ftrl import FtrlAggregation
from veilfl.strategy.aggregate import Aggregate
from veilfl.tensors import spec_of

COEFFICIENTS = (4, 3)
SCALE = 4
"""C's rows are (1, 0.75) in fixed point 2^2: c = round(4 C)."""


class _TwoBandDecoder(ReleaseDecoder):
    def __init__(self) -> None:
        self._last: npt.NDArray[np.float64] | None = None

    def decode(
        self, terms: ReleaseTerms, release: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        numerator = terms.scale * release
        if self._last is not None and len(terms.coefficients) > 1:
            numerator = numerator - terms.coefficients[1] * self._last
        self._last = numerator / terms.coefficients[0]
        return self._last

    def to_json(self) -> dict[str, Any]:
        return {} if self._last is None else {"last": self._last.tolist()}

    def restore(self, state: dict[str, Any]) -> None:
        self._last = None if "last" not in state else np.asarray(state["last"], np.float64)


class _TwoBandSchedule(ReleaseSchedule):
    name = "two-band"

    @property
    def window(self) -> int:
        return 2

    def terms(self, step: int) -> ReleaseTerms:
        coefficients = COEFFICIENTS if step > 1 else COEFFICIENTS[:1]
        return ReleaseTerms(step, coefficients, SCALE, added=(TreeNode(0, step),))

    def decoder(self) -> ReleaseDecoder:
        return _TwoBandDecoder()


class _TwoBand(PrivacyMechanism):
    """A mechanism as small as a plug-in can be: its schedule, its noise and its
    accounting; the checks, z's derivation, the report and the coordinator's epsilon
    are the interface's defaults for a mechanism that limits participation."""

    name: ClassVar[str] = "two-band"
    title: ClassVar[str] = "Two-band"
    summary: ClassVar[str] = "a throwaway two-band mechanism"
    samples_clients: ClassVar[bool] = False
    placements: ClassVar[frozenset[str]] = frozenset({"central"})

    def __init__(self, schedule: ReleaseSchedule) -> None:
        self.schedule = schedule

    def release_schedule(self, config: DpConfig, *, rounds: int) -> ReleaseSchedule:
        return self.schedule

    def dealt_noise(
        self, config: DpConfig, *, per_update_bound: float, expected_clients: float
    ) -> DealtNoisePlan:
        raise ConfigurationError("The two-band mechanism adds central noise only.")

    def sensitivity(self, config: DpConfig, *, rounds: int) -> float:
        b, k = config.min_separation, config.max_participations or rounds
        column = math.hypot(*COEFFICIENTS) / SCALE
        return math.sqrt(min(k, math.ceil(rounds / b))) * column

    def planned_epsilon(self, config: DpConfig, *, rounds: int, sample_rate: float) -> float:
        sensitivity = self.sensitivity(config, rounds=rounds)
        if sensitivity == 0:
            return 0.0
        return exact_gaussian_epsilon(config.noise_multiplier / sensitivity, delta=config.delta)


@pytest.fixture(
    params=[_TwoBandSchedule(), ToeplitzReleaseSchedule(coefficients=COEFFICIENTS, scale=SCALE)],
    ids=["by-hand", "toeplitz"],
)
def two_band(request: pytest.FixtureRequest) -> Iterator[PrivacyMechanism]:
    mechanism = register_mechanism(_TwoBand(request.param))
    yield mechanism
    unregister_mechanism(mechanism.name)


def _backend(dp: DpConfig, *, key: bytes, state: DpRunState | None = None) -> FtrlAggregation:
    steps = 0 if state is None else state.ledger.rounds
    return FtrlAggregation(
        PlaintextAggregation(spec_of({"w": np.zeros(3, np.float32)}), uniform_weights=True),
        dp,
        rounds=6,
        expected_clients=1.0,
        limits=ParticipationLimits(max_participations=6, min_separation=1, steps=steps),
        rng=CsprngStream(key=key),
        state=state,
    )


def _release(backend: FtrlAggregation, step: int, round_sum: np.ndarray) -> np.ndarray:
    inner = Aggregate(round_sum.astype(np.float64), 1.0, (f"c{step}",), (0,))
    return backend.privatize(inner, step=step).weighted_delta_sum


def test_a_windowed_schedule_decodes_the_round_sums_and_resumes_from_its_state(
    two_band: PrivacyMechanism,
) -> None:
    # Arrange: two runs with the same secret, different round sums.
    dp = DpConfig(
        placement="central",
        noise_multiplier=0.5,
        clip_norm=1.0,
        mechanism=two_band.name,
        max_participations=6,
        min_separation=1,
    )
    key = bytes(range(32))
    rng = np.random.default_rng(5)  # test data only, not noise
    sums = [rng.normal(size=3) for _ in range(5)]
    other = [rng.normal(size=3) for _ in range(5)]
    first, second = _backend(dp, key=key), _backend(dp, key=key)
    # Act: three releases, a restart of the first from its stored state, two more.
    decoded, decoded_other = [], []
    for step in range(1, 4):
        decoded.append(_release(first, step, sums[step - 1]))
        decoded_other.append(_release(second, step, other[step - 1]))
    stored = DpRunState.from_json(first.state().to_json())
    resumed = _backend(dp, key=key, state=stored)
    for step in range(4, 6):
        decoded.append(_release(resumed, step, sums[step - 1]))
        decoded_other.append(_release(second, step, other[step - 1]))
    # Assert: the noise is the same in both and cancels; the signal decodes exactly.
    for ours, theirs, x, y in zip(decoded, decoded_other, sums, other, strict=True):
        np.testing.assert_allclose(ours - theirs, x - y, atol=1e-9)
    assert not np.allclose(decoded[0], sums[0])  # and there is noise
    assert set(stored.mechanism_state) == {"decoder", "recent_sums"}
    # ... and the interface's defaults report the mechanism's own accounting.
    report = resumed.report()
    assert report.epsilon_public == two_band.planned_epsilon(dp, rounds=5, sample_rate=1.0)
    assert report.epsilon_coordinator is None  # central noise: the coordinator sees sums
    assert math.isinf(two_band.epsilon_against_coordinator(dp, rounds=5, expected_clients=1))


@pytest.mark.parametrize("restart_after", [0, 1, 2, 4])
def test_the_toeplitz_decoder_is_the_forward_substitution_across_a_restart(
    restart_after: int,
) -> None:
    # Arrange: the by-hand decoder is the oracle.
    schedule = ToeplitzReleaseSchedule(coefficients=(8, -3, 2), scale=8)
    rng = np.random.default_rng(restart_after)
    releases = [rng.normal(size=4) for _ in range(6)]
    oracle: list[np.ndarray] = []
    for step, release in enumerate(releases, start=1):
        numerator = 8 * release
        for j, c in enumerate((-3, 2), start=1):
            if step - j >= 1:
                numerator = numerator - c * oracle[step - j - 1]
        oracle.append(numerator / 8)
    # Act
    decoder = schedule.decoder()
    decoded = []
    for step, release in enumerate(releases, start=1):
        if step == restart_after + 1:
            state = decoder.to_json()
            decoder = schedule.decoder()
            decoder.restore(state)
        decoded.append(decoder.decode(schedule.terms(step), release))
    # Assert
    np.testing.assert_allclose(np.array(decoded), np.array(oracle), rtol=1e-12, atol=1e-12)
    assert schedule.terms(1).coefficients == (8,) and schedule.terms(5).coefficients == (8, -3, 2)
