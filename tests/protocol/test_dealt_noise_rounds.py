"""Distributed DP-FedAvg with the noise dealt by the aggregators, through the real
coordinator core and in-process aggregators: clients add no noise, every aggregator
deals, the released model carries the noise, an aggregator refuses to release a sum
without it or twice, and a missing dealer stalls the round until it is abandoned and
run again."""

from __future__ import annotations

import numpy as np
import pytest
from tests.in_process_hand_in import hand_in
from tests.run_descriptions import run_info
from tests.tiny_coordinator import settle

from veilfl.errors import ConfigurationError, ProtocolError
from veilfl.privacy.dp_config import DpConfig
from veilfl.protocol.assembly import build_coordinator
from veilfl.protocol.coordinator import Coordinator, CoordinatorPhase
from veilfl.protocol.effects import (
    AggregationStalled,
    CollectAggregateShares,
    CollectNoiseDeals,
    Effect,
    RoundAbandoned,
)
from veilfl.protocol.messages import RunInfo
from veilfl.protocol.private_aggregation import PrivateAggregation
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.secure_aggregation import SecureAggregation
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout
from veilfl.sim.in_process_aggregators import InProcessAggregators

START = {"w": np.zeros(3, np.float32)}
CONFIG = SecureAggregationConfig(
    threshold=2, num_aggregators=3, norm_bound=10.0, max_samples_per_client=100
)
STEP = 1 / ContributionLayout(3, CONFIG).scale
DP = DpConfig(placement="distributed", noise_multiplier=1.0, clip_norm=10.0, min_clients=2)


def _run(
    *, timeout_s: float = 30.0, config: SecureAggregationConfig = CONFIG
) -> tuple[Coordinator, InProcessAggregators, RunInfo]:
    aggregators = InProcessAggregators(config, run_id="r", model_size=3, noise_seed=b"seed")
    settings = RunSpec(
        model_name="tiny",
        rounds=RoundConfig(
            num_rounds=1, clients_per_round=2, min_clients=2, round_timeout_s=timeout_s
        ),
        secure=SecureSettings(config=config, aggregators=aggregators.published),
        dp=DP,
    )
    core = build_coordinator(
        settings, initial_weights=START, run_id="r", retry_interval_s=1.0
    ).coordinator
    run = run_info(settings, run_id="r", coordinator_key="", model_size=core.spec.total_size)
    aggregators.attach(run)
    return core, aggregators, run


def _train(
    core: Coordinator,
    aggregators: InProcessAggregators,
    run: RunInfo,
    values: dict[str, float],
    *,
    now: float,
) -> None:
    for client in values:
        core.join(client, now=now)
    tasks = {client: core.task_for(client, now=now) for client in values}
    for client, value in values.items():
        task = tasks[client]
        assert task.kind.value == "train" and task.privacy is not None
        assert task.round_id is not None
        assert task.privacy.update_stddev == 0 and task.privacy.count_stddev == 0
        assert hand_in(
            core,
            aggregators,
            run,
            client,
            value,
            now=now,
            round_id=task.round_id,
            privacy=task.privacy,
        )


def test_the_released_model_carries_the_dealt_noise() -> None:
    core, aggregators, run = _run()
    _train(core, aggregators, run, {"a": 1.0, "b": 3.0}, now=1.0)
    seen: list[Effect] = []
    settle(core, now=1.0, aggregators=aggregators, seen=seen)
    assert core.done and core.model_version == 1
    (deal,) = [e for e in seen if isinstance(e, CollectNoiseDeals)]
    assert deal.aggregators == (1, 2, 3) and deal.step == 1  # every aggregator deals
    (ask,) = [e for e in seen if isinstance(e, CollectAggregateShares)]
    assert ask.noise_step == 1 and all(len(ask.deals[j]) == 2 for j in ask.aggregators)
    # Noise of about z·B/scale·sqrt(m/h)/2 ≈ 6 per coordinate; without it the mean of
    # 1 and 3 is 2 to within a rounding step.
    weights = core.global_model().weights["w"]
    assert np.max(np.abs(weights - 2.0)) > 100 * STEP
    node = aggregators.node(ask.aggregators[0])
    with pytest.raises(ProtocolError, match="only with the dealt noise"):
        node.aggregate(1, ask.participants, ask.certificate)
    with pytest.raises(ProtocolError, match="noise step 1"):
        node.aggregate(1, ask.participants, ask.certificate, noise_step=2)


def test_a_missing_dealer_stalls_the_round_until_it_is_abandoned_and_run_again() -> None:
    # m = 4, t = 2: the quorum of 3 certifies the list without aggregator 4.
    four = SecureAggregationConfig(
        threshold=2, num_aggregators=4, norm_bound=10.0, max_samples_per_client=100
    )
    core, aggregators, run = _run(timeout_s=30.0, config=four)
    _train(core, aggregators, run, {"a": 1.0, "b": 3.0}, now=1.0)
    aggregators.down = {4}  # it holds its shares, but cannot deal
    seen: list[Effect] = []
    settle(core, now=1.0, aggregators=aggregators, seen=seen)
    for now in (2.5, 4.0, 20.0):
        core.tick(now=now)
        settle(core, now=now, aggregators=aggregators, seen=seen)
    assert core.phase is CoordinatorPhase.AGGREGATING and core.model_version == 0
    stalls = [e.reason for e in seen if isinstance(e, AggregationStalled)]
    assert len(stalls) == 1 and "3 of the 4 aggregators dealt their noise" in stalls[0]
    assert not [e for e in seen if isinstance(e, CollectAggregateShares)]  # nothing released
    core.tick(now=31.5)
    (abandoned,) = [e for e in core.drain() if isinstance(e, RoundAbandoned)]
    assert (abandoned.round_id, abandoned.new_round_id) == (1, 2)
    aggregators.down = set()
    _train(core, aggregators, run, {"a": 1.0, "b": 3.0}, now=32.0)
    seen = []
    settle(core, now=32.0, aggregators=aggregators, seen=seen)
    assert [m.round_id for m in core.history] == [2] and core.done
    (ask,) = [e for e in seen if isinstance(e, CollectAggregateShares)]
    assert ask.noise_step == 2  # the abandoned round's noise block is never reused


def test_distributed_noise_needs_aggregators_that_deal_it() -> None:
    backend = SecureAggregation(
        ContributionLayout(3, CONFIG),
        run_id="r",
        signing_keys={j: bytes(32) for j in (1, 2, 3)},
        min_participants=2,
    )
    with pytest.raises(ConfigurationError, match="dealt by the aggregators"):
        PrivateAggregation(backend, DP, expected_clients=2, sample_rate=1.0)
