"""When aggregation cannot finish (an aggregator is down or restarting), the accepted
updates stay accepted, the stall is said once, and the job asks again with the same
participants; a round that still cannot be aggregated one round timeout after it closed
is abandoned and run again under a new round id. All without a socket."""

from __future__ import annotations

import numpy as np
from tests.in_process_hand_in import hand_in
from tests.run_descriptions import run_info
from tests.tiny_coordinator import settle

from veilfl.protocol.assembly import build_coordinator
from veilfl.protocol.buffered import BufferConfig
from veilfl.protocol.coordinator import Coordinator, CoordinatorPhase
from veilfl.protocol.effects import AggregationStalled, ClientsExcluded, Effect, RoundAbandoned
from veilfl.protocol.messages import RunInfo, UpdateHeader
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout
from veilfl.sim.in_process_aggregators import InProcessAggregators

START = {"w": np.zeros(3, np.float32)}
CONFIG = SecureAggregationConfig(
    threshold=2, num_aggregators=2, norm_bound=10.0, max_samples_per_client=100
)
# Each client's coordinates are stochastically rounded to this step; the mean of
# clients of weight 1 is off by less than one step.
STEP = 1 / ContributionLayout(3, CONFIG).scale


def _secure_run(
    *, buffer: BufferConfig | None = None, timeout_s: float = 30.0, clients: int = 2
) -> tuple[Coordinator, InProcessAggregators, RunInfo]:
    aggregators = InProcessAggregators(CONFIG, run_id="r", model_size=3)
    settings = RunSpec(
        model_name="tiny",
        rounds=RoundConfig(
            num_rounds=1 if buffer is None else buffer.max_versions,
            clients_per_round=clients,
            min_clients=2,
            round_timeout_s=timeout_s,
        ),
        secure=SecureSettings(config=CONFIG, aggregators=aggregators.published),
        buffer=buffer,
    )
    core = build_coordinator(
        settings, initial_weights=START, run_id="r", retry_interval_s=1.0
    ).coordinator
    run = run_info(settings, run_id="r", coordinator_key="", model_size=core.spec.total_size)
    return core, aggregators, run


def _stalls(effects: list[Effect]) -> list[str]:
    return [e.reason for e in effects if isinstance(e, AggregationStalled)]


def _start(core: Coordinator, clients: tuple[str, ...] = ("a", "b")) -> None:
    for client in clients:
        core.join(client, now=0.0)
    for client in clients:
        assert core.task_for(client, now=0.0).kind.value == "train"


def test_a_round_whose_aggregator_is_down_is_finished_once_it_is_back() -> None:
    core, aggregators, run = _secure_run()
    _start(core)
    for client, value in (("a", 1.0), ("b", 3.0)):
        assert hand_in(core, aggregators, run, client, value, now=1.0)
    aggregators.down = {2}  # it took both shares, then went down before the round closed
    seen: list[Effect] = []
    settle(core, now=1.0, aggregators=aggregators, seen=seen)
    assert core.phase is CoordinatorPhase.AGGREGATING and core.model_version == 0
    for now in (1.5, 2.5, 3.5, 4.5):  # still down: asked again every second
        core.tick(now=now)
        settle(core, now=now, aggregators=aggregators, seen=seen)
    assert len(_stalls(seen)) == 1  # said once, not on every attempt
    aggregators.down = set()
    for now in (6.0, 7.5):
        core.tick(now=now)
        settle(core, now=now, aggregators=aggregators)
    assert core.model_version == 1 and core.done
    np.testing.assert_allclose(core.global_model().weights["w"], 2.0, atol=STEP)


def test_a_round_that_cannot_be_aggregated_is_abandoned_and_run_again() -> None:
    core, aggregators, run = _secure_run(timeout_s=30.0)
    _start(core)
    for client, value in (("a", 5.0), ("b", 7.0)):
        assert hand_in(core, aggregators, run, client, value, now=1.0)
    aggregators.down = {2}
    settle(core, now=1.0, aggregators=aggregators)
    core.tick(now=20.0)  # within the round timeout: stalled, still round 1
    settle(core, now=20.0, aggregators=aggregators)
    assert core.schedule.round_id == 1
    core.tick(now=31.5)  # past it: round 1 is abandoned
    effects = core.drain()
    (abandoned,) = [e for e in effects if isinstance(e, RoundAbandoned)]
    assert (abandoned.round_id, abandoned.new_round_id) == (1, 2)
    aggregators.down = set()
    tasks = [core.task_for(client, now=32.0) for client in ("a", "b")]
    assert [(t.kind.value, t.round_id, t.model_version) for t in tasks] == [("train", 2, 0)] * 2
    assert not core.done and core.history == ()
    for client, value in (("a", 1.0), ("b", 3.0)):
        assert hand_in(core, aggregators, run, client, value, now=33.0, round_id=2)
    settle(core, now=33.0, aggregators=aggregators)
    assert [m.round_id for m in core.history] == [2] and core.done
    np.testing.assert_allclose(core.global_model().weights["w"], 2.0, atol=STEP)


def test_a_false_receipt_gets_its_sender_excluded_and_recorded() -> None:
    core, aggregators, run = _secure_run(clients=3)
    _start(core, ("a", "b", "liar"))
    for client, value in (("a", 1.0), ("b", 3.0)):
        assert hand_in(core, aggregators, run, client, value, now=1.0)
    # "liar" says its shares reached every aggregator; none did.
    assert core.record_receipt(
        UpdateHeader(
            client_id="liar", round_id=1, base_version=0, num_samples=100, aggregators=(1, 2)
        ),
        now=1.0,
    )
    seen: list[Effect] = []
    settle(core, now=1.0, aggregators=aggregators, seen=seen)
    (metrics,) = core.history
    assert metrics.excluded == ("liar",) and metrics.num_clients == 2
    assert [e.clients for e in seen if isinstance(e, ClientsExcluded)] == [("liar",)]
    np.testing.assert_allclose(core.global_model().weights["w"], 2.0, atol=STEP)


def test_a_buffer_whose_release_stalls_is_released_by_a_later_tick() -> None:
    core, aggregators, run = _secure_run(
        buffer=BufferConfig(buffer_size=2, max_staleness=2, max_versions=2)
    )
    _start(core)
    for client, value in (("a", 0.25), ("b", 0.75)):  # inside the norm bound
        assert hand_in(core, aggregators, run, client, value, now=0.0, weight=1.0)
    aggregators.down = {2}
    settle(core, now=0.0, aggregators=aggregators)
    assert core.model_version == 0  # the release stalled; the updates are kept
    aggregators.down = set()
    for now in (0.5, 2.0):
        core.tick(now=now)
        settle(core, now=now, aggregators=aggregators)
    assert core.model_version == 1 and len(core.history) == 1
    np.testing.assert_allclose(core.global_model().weights["w"], 0.5, atol=STEP)
