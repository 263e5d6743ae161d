"""FedBuff and FedAsync: staleness, buffering and counting against hand-computed oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from veilfl.errors import ConfigurationError, RoundMismatchError, StaleUpdateError
from veilfl.protocol.buffered import (
    BufferConfig,
    BufferedMachine,
    BufferMode,
    polynomial_staleness_weight,
)
from veilfl.strategy.buffered import FedAsync, FedBuff


def _machine(k: int = 2, max_staleness: int = 2, versions: int = 10) -> BufferedMachine:
    machine = BufferedMachine(
        BufferConfig(buffer_size=k, max_staleness=max_staleness, max_versions=versions)
    )
    for client in "abcdef":
        machine.join(client)
    return machine


def test_staleness_weight_is_one_over_root_one_plus_staleness() -> None:
    assert [polynomial_staleness_weight(s) for s in (0, 1, 3, 8)] == pytest.approx(
        [1.0, 1 / math.sqrt(2), 0.5, 1 / 3]
    )


def test_buffer_of_k_releases_and_weights_follow_staleness() -> None:
    machine = _machine(k=2)
    for client in "ab":
        assert machine.start_training(client) == 0
    machine.accept("a", machine.ticket("a", trained_version=0))
    assert machine.full_buffer() is None
    machine.accept("b", machine.ticket("b", trained_version=0))
    released = machine.full_buffer()
    assert released is not None and released.base_version == 0
    assert [c for c, _, _ in released.contributions] == ["a", "b"]
    assert machine.released() == 1
    # c trained on version 0 but uploads into buffer 2 (base 1): staleness 1.
    ticket = machine.ticket("c", trained_version=0)
    assert (ticket.buffer_id, ticket.staleness) == (2, 1)
    assert ticket.weight == pytest.approx(1 / math.sqrt(2))


def test_an_update_beyond_the_staleness_bound_is_refused_clearly() -> None:
    machine = _machine(k=1, max_staleness=1)
    for client in "abc":
        machine.accept(client, machine.ticket(client, trained_version=machine.version))
        machine.released()
    with pytest.raises(StaleUpdateError, match=r"3 versions behind the open buffer \(at most 1"):
        machine.ticket("d", trained_version=0)


def test_every_accepted_update_is_counted_exactly_once_across_buffers() -> None:
    machine = _machine(k=2)
    counted: list[str] = []
    first = machine.ticket("a", trained_version=0)
    assert machine.accept("a", first)
    assert not machine.accept("a", first)  # retried upload
    machine.accept("b", machine.ticket("b", trained_version=0))
    released = machine.full_buffer()
    assert released is not None
    counted += [c for c, _, _ in released.contributions]
    machine.released()
    assert not machine.accept("a", first)  # a late retry after release: still once
    with pytest.raises(RoundMismatchError):
        machine.accept("c", first)  # c cannot use a's old buffer
    machine.accept("a", machine.ticket("a", trained_version=1))  # a's next update
    machine.accept("c", machine.ticket("c", trained_version=0))
    released = machine.full_buffer()
    assert released is not None
    counted += [c for c, _, _ in released.contributions]
    assert counted == ["a", "b", "a", "c"]


def test_concurrency_limit_and_end_of_run() -> None:
    machine = BufferedMachine(
        BufferConfig(buffer_size=1, max_staleness=5, max_versions=1, max_concurrency=1)
    )
    machine.join("a")
    machine.join("b")
    assert machine.start_training("a") == 0
    assert machine.start_training("b") is None
    machine.accept("a", machine.ticket("a", trained_version=0))
    machine.released()
    assert machine.done and machine.start_training("b") is None


def test_fedbuff_step_matches_the_hand_computed_oracle() -> None:
    w = np.array([1.0, -2.0], dtype=np.float32)
    deltas = [np.array([0.5, 0.5]), np.array([-1.0, 2.0]), np.array([0.2, 0.0])]
    staleness = [0, 1, 3]
    weighted = sum(
        polynomial_staleness_weight(s) * d for s, d in zip(staleness, deltas, strict=True)
    )
    new = FedBuff(server_learning_rate=0.8).apply(w, np.asarray(weighted), buffer_size=3)
    expected = [
        1.0 + 0.8 * (0.5 * 1 + -1.0 / math.sqrt(2) + 0.2 * 0.5) / 3,
        -2.0 + 0.8 * (0.5 * 1 + 2.0 / math.sqrt(2) + 0.0) / 3,
    ]
    np.testing.assert_allclose(new, expected, rtol=1e-6)


def test_fedasync_mixes_with_a_staleness_discounted_rate() -> None:
    current = np.array([1.0, 1.0], dtype=np.float32)
    trained_from = np.array([0.0, 2.0], dtype=np.float32)
    delta = np.array([1.0, -1.0], dtype=np.float32)
    new = FedAsync(mixing=0.5).apply(current, trained_from, delta, staleness_weight=0.5)
    # alpha = 0.25; client model = [1, 1]; (0.75)[1, 1] + 0.25 [1, 1] = [1, 1]
    np.testing.assert_allclose(new, [1.0, 1.0])
    other = FedAsync(mixing=1.0).apply(current, trained_from, delta * 3, staleness_weight=1.0)
    np.testing.assert_allclose(other, [3.0, -1.0])


def test_inconsistent_buffer_settings_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="K = 1"):
        BufferConfig(buffer_size=4, max_staleness=1, max_versions=1, mode=BufferMode.FEDASYNC)
    with pytest.raises(ConfigurationError):
        BufferConfig(buffer_size=0, max_staleness=1, max_versions=1)


def test_fedasync_is_refused_when_updates_are_secret_shared() -> None:
    from veilfl.protocol.buffered_coordinator import BufferedCoordinator

    class SecretShared:
        def plaintext(self) -> None:
            return None

        def start_round(self, round_id: int) -> None:
            pass

    weights = {"w": np.zeros(3, np.float32)}
    from veilfl.tensors import spec_of

    with pytest.raises(ConfigurationError, match="use FedBuff"):
        BufferedCoordinator(
            machine=BufferedMachine(
                BufferConfig(
                    buffer_size=1, max_staleness=1, max_versions=1, mode=BufferMode.FEDASYNC
                )
            ),
            spec=spec_of(weights),
            initial_weights=weights,
            aggregation=SecretShared(),  # type: ignore[arg-type]
            strategy=FedAsync(),
        )
