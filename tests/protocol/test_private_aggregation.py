"""DP-FedAvg around the plaintext backend: the adaptive-clipping count as it runs costs
what is charged, and the private backend's report and state."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.crypto.csprng import CsprngStream
from veilfl.privacy.accountant import RDP_ORDERS, epsilon_for
from veilfl.privacy.clipping import AdaptiveClipping
from veilfl.privacy.dp_config import DpConfig
from veilfl.protocol.aggregation import PlaintextAggregation
from veilfl.protocol.cohort import ClosedCohort
from veilfl.protocol.messages import ClientReport, UpdateHeader
from veilfl.protocol.private_aggregation import PrivateAggregation
from veilfl.strategy.aggregate import Aggregate
from veilfl.tensors import spec_of

SIZE = 4_000
SPEC = spec_of({"w": np.zeros(SIZE, dtype=np.float32)})


def _plaintext_aggregate(norms: list[float], *, clip_norm: float = 1.0) -> Aggregate:
    """The central path as it runs: the coordinator clips each plaintext update on
    arrival and sums the updates and their bits."""
    backend = PlaintextAggregation(SPEC, uniform_weights=True)
    backend.open_cohort(1)
    backend.clip_on_arrival(clip_norm)
    reports = []
    for i, norm in enumerate(norms):
        client = f"c{i}"
        update = np.full(SIZE, norm / np.sqrt(SIZE), dtype=np.float32)
        backend.add(UpdateHeader(client, 1, 0, num_samples=1, loss=0.0), {"w": update}, weight=None)
        reports.append(ClientReport(client, 1, 0.0))
    cohort = ClosedCohort(1, 0, tuple(reports), opened_at=0.0, closed_at=1.0, sampled=len(norms))
    return backend.begin(cohort).result


@settings(max_examples=40, deadline=None)
@given(norms=st.lists(st.floats(0.01, 5.0), min_size=1, max_size=20))
def test_the_plaintext_path_sums_plus_minus_one_half_bits(norms: list[float]) -> None:
    oracle = sum(0.5 if n <= 1.0 else -0.5 for n in norms)  # one client at a time
    assert _plaintext_aggregate(norms).within_bound_count == pytest.approx(oracle, abs=1e-6)


def test_one_client_moves_the_plaintext_bit_sum_by_one_half() -> None:
    others = [0.5, 2.0, 0.7, 3.0]
    before = _plaintext_aggregate(others).within_bound_count
    for extra in (0.3, 2.5):
        after = _plaintext_aggregate([*others, extra]).within_bound_count
        assert before is not None and after is not None
        assert abs(after - before) == pytest.approx(0.5)


def _composed_epsilon(
    *, update_multiplier: float, bit_multiplier: float, q: float, rounds: int
) -> float:
    """Oracle: the round as run, two Gaussian mechanisms on one Poisson sample, composed
    by dp-accounting."""
    both = dp_accounting.ComposedDpEvent(
        [
            dp_accounting.GaussianDpEvent(update_multiplier),
            dp_accounting.GaussianDpEvent(bit_multiplier),
        ]
    )
    event = dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(q, both), rounds)
    accountant = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS))
    accountant.compose(event)
    return float(accountant.get_epsilon(1e-5))


def test_the_count_release_as_run_costs_exactly_the_charged_multiplier() -> None:
    # Arrange: issue 11's setting (z = 1, q = 0.01, 100 expected clients, 1,000 rounds).
    z, q, expected, clip = 1.0, 0.01, 100, 1.0
    dp = DpConfig(
        placement="central",
        noise_multiplier=z,
        clip_norm=clip,
        adaptive=AdaptiveClipping(learning_rate=1e-9),  # keep C put while measuring
    )
    # (Measured without sampling, where accounting each release is cheap: the noise a
    # release carries does not depend on how its clients were sampled.)
    private = PrivateAggregation(
        PlaintextAggregation(SPEC, uniform_weights=True),
        dp,
        expected_clients=expected,
        sample_rate=1.0,
        rng=CsprngStream(key=bytes(range(32))),
    )
    norms = [0.5, 2.0, 0.7, 3.0, 0.9]
    clean = _plaintext_aggregate(norms)
    assert clean.within_bound_count is not None
    # Act: release the same sum many times and measure the noise actually added.
    update_noise, bit_noise = [], []
    for _ in range(400):
        released = private.privatize(clean)
        assert released.within_bound_count is not None
        update_noise.append(released.weighted_delta_sum - clean.weighted_delta_sum)
        bit_noise.append(released.within_bound_count - clean.within_bound_count)
    # The sensitivity of the bit sum, measured on the running path by adding a client.
    with_one_more = _plaintext_aggregate([*norms, 0.2]).within_bound_count
    assert with_one_more is not None
    bit_sensitivity = abs(with_one_more - clean.within_bound_count)
    # Assert: the noise is what the split says ...
    sigma_b = dp.count_noise(expected)
    assert float(np.std(bit_noise)) == pytest.approx(sigma_b, rel=0.1)
    update_sigma = float(np.std(np.concatenate(update_noise)))
    assert update_sigma == pytest.approx(dp.update_noise_multiplier(expected) * clip, rel=0.01)
    # ... and the two mechanisms as run cost exactly what is charged for z.
    actual = _composed_epsilon(
        update_multiplier=dp.update_noise_multiplier(expected),
        bit_multiplier=sigma_b / bit_sensitivity,
        q=q,
        rounds=1000,
    )
    charged = epsilon_for(noise_multiplier=z, sample_rate=q, rounds=1000, delta=1e-5)
    assert actual == pytest.approx(charged, rel=1e-9)


def test_the_clip_norm_follows_the_noised_fraction_with_the_fixed_denominator() -> None:
    # 3 of 5 unclipped with 5 expected and (almost) no count noise: fraction 0.6.
    dp = DpConfig(
        placement="central",
        noise_multiplier=1e-7,
        clip_norm=1.0,
        adaptive=AdaptiveClipping(target_quantile=0.5, learning_rate=0.2),
        count_stddev=1e-6,
    )
    private = PrivateAggregation(
        PlaintextAggregation(SPEC, uniform_weights=True), dp, expected_clients=5, sample_rate=1.0
    )
    private.privatize(_plaintext_aggregate([0.5, 2.0, 0.7, 3.0, 0.9]))
    assert private.clip_norm == pytest.approx(np.exp(-0.2 * (0.6 - 0.5)), rel=1e-5)
    assert private.state().clip_norm == private.clip_norm
