"""The synchronous round state machine: sampling, deadlines, stragglers, restarts."""

from __future__ import annotations

import random

import pytest

from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import (
    ConfigurationError,
    ProtocolError,
    RoundMismatchError,
    StaleUpdateError,
    UnknownClientError,
)
from veilfl.privacy.sampling import PoissonSampler
from veilfl.protocol.messages import TaskKind, UpdateHeader
from veilfl.protocol.sync_round import (
    MAX_DRAWS_PER_TICK,
    RoundConfig,
    RoundPhase,
    SyncRoundMachine,
)


def _accept(machine: SyncRoundMachine, header: UpdateHeader) -> bool:
    placement = machine.admit(header)
    return placement is not None and machine.accept(header, placement)


def _machine(**overrides: object) -> SyncRoundMachine:
    settings: dict[str, object] = {
        "num_rounds": 2,
        "clients_per_round": 3,
        "min_clients": 2,
        "round_timeout_s": 10.0,
    }
    settings.update(overrides)
    return SyncRoundMachine(RoundConfig(**settings), rng=random.Random(7))  # type: ignore[arg-type]


def _header(client: str, *, round_id: int = 1, version: int = 0) -> UpdateHeader:
    return UpdateHeader(
        client_id=client, round_id=round_id, base_version=version, num_samples=10, loss=1.0
    )


def _join(machine: SyncRoundMachine, count: int) -> list[str]:
    clients = [f"c{i}" for i in range(count)]
    for client in clients:
        machine.join(client, now=0.0)
    return clients


def _sampled(machine: SyncRoundMachine, clients: list[str]) -> list[str]:
    return [c for c in clients if machine.task_for(c, now=0.0).kind is TaskKind.TRAIN]


def test_round_waits_for_enough_clients_then_samples_the_configured_count() -> None:
    machine = _machine()
    _join(machine, 2)
    assert machine.tick(now=0.0).opened is None
    machine.join("c2", now=0.0)
    machine.join("c3", now=0.0)
    outcome = machine.tick(now=0.0)
    assert outcome.opened == 1
    assert len(_sampled(machine, ["c0", "c1", "c2", "c3"])) == 3


def test_fraction_sampling_takes_ceil_of_fraction_and_at_least_min_clients() -> None:
    config = RoundConfig(num_rounds=1, fraction=0.1, min_clients=2, min_available_clients=25)
    assert config.sample_size(25) == 3
    assert config.sample_size(5) == 2


def test_round_closes_early_when_every_sampled_client_reported() -> None:
    machine = _machine()
    clients = _join(machine, 3)
    machine.tick(now=0.0)
    for client in _sampled(machine, clients):
        assert _accept(machine, _header(client))
    assert machine.tick(now=1.0).ready_to_close
    closed = machine.close(now=1.0)
    assert set(closed.participant_ids) == set(clients)
    assert machine.complete() == 1
    assert machine.round_id == 2


def test_deadline_closes_with_the_clients_that_reported_leaving_out_stragglers() -> None:
    machine = _machine()
    clients = _join(machine, 3)
    machine.tick(now=0.0)
    reporters = _sampled(machine, clients)[:2]
    for client in reporters:
        _accept(machine, _header(client))
    assert not machine.tick(now=9.9).ready_to_close
    assert machine.tick(now=10.0).ready_to_close
    assert set(machine.close(now=10.0).participant_ids) == set(reporters)


def test_deadline_with_too_few_reports_restarts_the_round_with_a_fresh_sample() -> None:
    machine = _machine()
    clients = _join(machine, 3)
    machine.tick(now=0.0)
    _accept(machine, _header(_sampled(machine, clients)[0]))
    outcome = machine.tick(now=10.0)
    assert outcome.restarted and outcome.opened == 1
    assert machine.status().reported == 0
    assert machine.restarts == 1
    assert machine.status().deadline == pytest.approx(20.0)


def test_duplicate_update_is_idempotent() -> None:
    machine = _machine()
    clients = _join(machine, 3)
    machine.tick(now=0.0)
    client = _sampled(machine, clients)[0]
    assert _accept(machine, _header(client)) is True
    assert _accept(machine, _header(client)) is False
    assert machine.status().reported == 1


@pytest.mark.parametrize(
    ("header", "error"),
    [
        (_header("stranger"), UnknownClientError),
        (_header("c0", round_id=2), RoundMismatchError),
        (_header("c0", version=5), StaleUpdateError),
    ],
)
def test_rejected_updates_change_nothing(header: UpdateHeader, error: type[Exception]) -> None:
    machine = _machine(clients_per_round=3)
    _join(machine, 3)
    machine.tick(now=0.0)
    before = machine.status()
    with pytest.raises(error):
        _accept(machine, header)
    assert machine.status() == before


def test_unsampled_client_is_told_to_wait_and_cannot_upload() -> None:
    machine = _machine(clients_per_round=2)
    clients = _join(machine, 4)
    machine.tick(now=0.0)
    outsider = next(c for c in clients if c not in _sampled(machine, clients))
    assert machine.task_for(outsider, now=0.0).kind is TaskKind.WAIT
    with pytest.raises(RoundMismatchError, match="not sampled"):
        _accept(machine, _header(outsider))


def test_late_update_after_close_is_rejected() -> None:
    machine = _machine()
    clients = _join(machine, 3)
    machine.tick(now=0.0)
    sampled = _sampled(machine, clients)
    for client in sampled[:2]:
        _accept(machine, _header(client))
    machine.tick(now=10.0)
    machine.close(now=10.0)
    with pytest.raises(RoundMismatchError, match="closed"):
        _accept(machine, _header(sampled[2]))


def test_run_is_done_after_the_planned_rounds() -> None:
    machine = _machine(num_rounds=1)
    clients = _join(machine, 3)
    machine.tick(now=0.0)
    for client in _sampled(machine, clients):
        _accept(machine, _header(client))
    machine.tick(now=1.0)
    machine.close(now=1.0)
    machine.complete()
    assert machine.phase is RoundPhase.DONE
    assert machine.task_for("c0", now=2.0).kind is TaskKind.DONE


def test_resumed_machine_starts_at_the_given_round_and_version() -> None:
    machine = SyncRoundMachine(
        RoundConfig(num_rounds=5, clients_per_round=1),
        rng=random.Random(1),
        next_round=3,
        model_version=2,
    )
    machine.join("a", now=0.0)
    machine.tick(now=0.0)
    task = machine.task_for("a", now=0.0)
    assert (task.round_id, task.model_version) == (3, 2)


def test_close_without_enough_reports_is_refused() -> None:
    machine = _machine()
    _join(machine, 3)
    machine.tick(now=0.0)
    with pytest.raises(ProtocolError, match="needs 2"):
        machine.close(now=1.0)


@pytest.mark.parametrize(
    "settings",
    [
        {"num_rounds": 0, "clients_per_round": 1},
        {"num_rounds": 1},
        {"num_rounds": 1, "clients_per_round": 1, "fraction": 0.5},
        {"num_rounds": 1, "clients_per_round": 2, "min_clients": 3},
        {"num_rounds": 1, "fraction": 1.5},
    ],
)
def test_inconsistent_config_is_refused(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        RoundConfig(**settings)  # type: ignore[arg-type]


def test_a_retry_after_the_round_completed_is_a_duplicate_not_an_error() -> None:
    machine = _machine()
    clients = _join(machine, 3)
    machine.tick(now=0.0)
    sampled = _sampled(machine, clients)
    for client in sampled:
        _accept(machine, _header(client))
    machine.tick(now=1.0)
    machine.close(now=1.0)
    machine.complete()
    assert _accept(machine, _header(sampled[0])) is False


def _poisson_machine(
    *, rate: float, minimum: int, clients: int, key: bytes = bytes(32), **overrides: object
) -> tuple[SyncRoundMachine, PoissonSampler, list[str]]:
    settings: dict[str, object] = {
        "num_rounds": 50,
        "clients_per_round": max(minimum, round(rate * clients)),
        "min_clients": minimum,
        "round_timeout_s": 10.0,
    }
    settings.update(overrides)
    sampler = PoissonSampler(rate=rate, minimum=minimum, rng=CsprngStream(key=key))
    machine = SyncRoundMachine(
        RoundConfig(**settings),  # type: ignore[arg-type]
        rng=random.Random(7),
        sampler=sampler,
    )
    return machine, sampler, _join(machine, clients)


def _run_rounds(machine: SyncRoundMachine, clients: list[str], rounds: int) -> list[list[str]]:
    """Open, fill and complete ``rounds`` rounds; return each round's sample."""
    samples = []
    for _ in range(rounds):
        assert machine.tick(now=0.0).opened is not None
        sampled = _sampled(machine, clients)
        samples.append(sampled)
        for client in sampled:
            _accept(
                machine, _header(client, round_id=machine.round_id, version=machine.model_version)
            )
        assert machine.tick(now=0.0).ready_to_close
        machine.close(now=0.0)
        machine.complete()
    return samples


def test_under_dp_rounds_are_poisson_samples_whose_size_varies() -> None:
    # Arrange: 60 clients, q = 0.2 (12 expected), a release needs 5.
    machine, sampler, clients = _poisson_machine(rate=0.2, minimum=5, clients=60)
    replay = PoissonSampler(rate=0.2, minimum=5, rng=CsprngStream(key=bytes(32)))
    # Act
    samples = _run_rounds(machine, clients, 40)
    # Assert: each round is exactly the sampler's next sample that is large enough ...
    oracle = []
    while len(oracle) < 40:
        drawn = replay.draw(sorted(clients))
        if drawn is not None:
            oracle.append(sorted(drawn))
    assert [sorted(s) for s in samples] == oracle
    # ... so sizes vary, never below the minimum, around q times the population.
    sizes = [len(s) for s in samples]
    assert len(set(sizes)) > 4
    assert min(sizes) >= 5
    assert 8 < sum(sizes) / len(sizes) < 16
    assert sampler.attempts >= 40


def test_under_dp_a_sample_below_the_minimum_is_withheld_and_drawn_again() -> None:
    # q = 0.1 of 30 clients: 3 expected, and a release needs 4, so most draws are short.
    machine, sampler, clients = _poisson_machine(
        rate=0.1, minimum=4, clients=30, clients_per_round=4
    )
    samples = _run_rounds(machine, clients, 5)
    assert all(len(s) >= 4 for s in samples)
    assert sampler.attempts > 5 * 2  # withheld draws were made and counted
    assert sampler.withheld_probability > 0


def test_under_dp_a_round_that_cannot_be_sampled_waits_for_the_next_tick() -> None:
    # 4 clients at q = 0.01 and a minimum of 4: no draw this tick reaches the minimum.
    machine, sampler, clients = _poisson_machine(
        rate=0.01, minimum=4, clients=4, clients_per_round=4
    )
    outcome = machine.tick(now=0.0)
    assert outcome.opened is None
    assert machine.phase is RoundPhase.IDLE
    assert sampler.attempts == MAX_DRAWS_PER_TICK
    assert _sampled(machine, clients) == []


def test_without_dp_the_sample_is_the_seeded_fixed_size_one() -> None:
    first, second = _machine(clients_per_round=3), _machine(clients_per_round=3)
    clients = _join(first, 10)
    _join(second, 10)
    first.tick(now=0.0)
    second.tick(now=0.0)
    assert len(_sampled(first, clients)) == 3
    assert _sampled(first, clients) == _sampled(second, clients)
    expected = sorted(random.Random(7).sample(sorted(clients), 3))
    assert sorted(_sampled(first, clients)) == expected
