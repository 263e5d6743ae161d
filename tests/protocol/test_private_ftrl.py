"""DP-FTRL through the real coordinator core: the model is theta_0 plus the noised
prefix sum over the expected clients, with central noise (the coordinator's tree) and
with the aggregators' tree noise (exactly the cover's noise, reconstructed from their
states); an abandoned round does not consume its step; a resumed run continues the
same tree; both observers get the same epsilon."""

from __future__ import annotations

import numpy as np
import pytest
from tests.run_descriptions import run_info
from tests.tiny_coordinator import settle

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.shamir import ShamirScheme
from veilfl.errors import ConfigurationError
from veilfl.ml.learner import LocalUpdate
from veilfl.privacy.central_tree import CentralTreeNoise
from veilfl.privacy.dp_config import DpConfig
from veilfl.privacy.dp_ftrl import dp_ftrl_epsilon
from veilfl.privacy.tree import cover
from veilfl.protocol.assembly import AssembledRun, ResumePoint, build_coordinator
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.effects import CollectNoiseDeals, Effect, RoundAbandoned
from veilfl.protocol.hand_in import HandInContext
from veilfl.protocol.messages import RunInfo, TaskKind, UpdateHeader
from veilfl.protocol.private_ftrl import FtrlAggregation
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout
from veilfl.secagg.dealt_noise import dealt_noise_config
from veilfl.secagg.tree_noise import TreeNoiseAggregator
from veilfl.sim.hand_in import SimulatedHandIn
from veilfl.sim.in_process_aggregators import InProcessAggregators

START = {"w": np.zeros(3, np.float32)}


def _ftrl(placement: str, *, z: float = 1.0, k: int = 3, b: int = 1) -> DpConfig:
    return DpConfig(
        placement=placement,  # type: ignore[arg-type]
        noise_multiplier=z,
        clip_norm=10.0,
        min_clients=2,
        mechanism="ftrl",
        max_participations=k,
        min_separation=b,
    )


def _central(dp: DpConfig, *, rounds: int, population: int, **options: object) -> AssembledRun:
    settings = RunSpec(
        model_name="tiny",
        rounds=RoundConfig(num_rounds=rounds, clients_per_round=2, min_clients=2),
        server_learning_rate=0.5,
        dp=dp,
        population=population,
    )
    return build_coordinator(
        settings,
        initial_weights=options.pop("weights", START),  # type: ignore[arg-type]
        run_id="r",
        **options,  # type: ignore[arg-type]
    )


def _plaintext_round(core: Coordinator, deltas: dict[str, np.ndarray], *, now: float) -> list[str]:
    """Every selected client of ``deltas`` hands in its delta; returns who was selected."""
    for client in deltas:
        core.join(client, now=now)
    core.tick(now=now)
    chosen = []
    for client, delta in deltas.items():
        task = core.task_for(client, now=now)
        if task.kind is TaskKind.TRAIN:
            assert task.round_id is not None and task.model_version is not None
            chosen.append(client)
            header = UpdateHeader(client, task.round_id, task.model_version, 1, 0.5)
            core.submit_plaintext_update(header, {"w": delta.astype(np.float32)}, now=now)
    settle(core, now=now)
    return chosen


def test_with_negligible_noise_the_model_is_theta_0_plus_the_prefix_sum_over_n() -> None:
    core = _central(_ftrl("central", z=1e-12), rounds=3, population=2).coordinator
    deltas = {"a": np.array([1.0, 0.0, 0.0]), "b": np.array([0.0, 2.0, 0.0])}
    for _ in range(3):
        assert sorted(_plaintext_round(core, deltas, now=0.0)) == ["a", "b"]
    # Hand-computed: theta_0 + eta * (3 rounds of [1, 2, 0]) / n = 0.5 * [3, 6, 0] / 2.
    np.testing.assert_allclose(core.global_model().weights["w"], [0.75, 1.5, 0.0], atol=1e-6)


def test_central_noise_is_exactly_the_covers_noise_of_the_coordinators_tree() -> None:
    dp = _ftrl("central", z=0.5, k=5)
    assembled = build_coordinator(
        RunSpec(
            model_name="tiny",
            rounds=RoundConfig(num_rounds=5, clients_per_round=2, min_clients=2),
            server_learning_rate=0.5,
            dp=dp,
            population=2,
        ),
        initial_weights=START,
        run_id="r",
        noise_rng=CsprngStream(key=bytes(32)),
    )
    core, privacy = assembled.coordinator, assembled.privacy
    assert isinstance(privacy, FtrlAggregation)
    key = privacy.state().tree_noise_key
    assert key is not None
    tree = CentralTreeNoise(key=key, stddev=0.5 * 10.0, length=3)
    deltas = {"a": np.array([1.0, -1.0, 0.5]), "b": np.array([2.0, 0.0, 1.0])}
    for step in range(1, 6):
        _plaintext_round(core, deltas, now=0.0)
        prefix = step * (deltas["a"] + deltas["b"])
        expected = 0.5 * (prefix + tree.prefix(step)) / 2
        np.testing.assert_allclose(core.global_model().weights["w"], expected, rtol=1e-5, atol=1e-5)
    assert privacy.report().epsilon_public == pytest.approx(
        dp_ftrl_epsilon(
            noise_multiplier=0.5,
            rounds=5,
            max_participations=5,
            min_separation=1,
            delta=1e-5,
            accounting="rdp",
        )
    )
    assert privacy.report().epsilon_coordinator is None  # it saw the noiseless sums


def test_a_resumed_run_continues_the_same_tree_and_the_same_limits() -> None:
    dp = _ftrl("central", z=0.5, k=2, b=2)
    deltas = {c: np.array([i + 1.0, 0.0, -1.0]) for i, c in enumerate("abcd")}

    def fresh() -> AssembledRun:
        return _central(dp, rounds=4, population=4, noise_rng=CsprngStream(key=bytes(32)))

    straight = fresh().coordinator
    straight_picks = [sorted(_plaintext_round(straight, deltas, now=0.0)) for _ in range(4)]
    assembled = fresh()
    first = assembled.coordinator
    picks = [sorted(_plaintext_round(first, deltas, now=0.0)) for _ in range(2)]
    privacy = assembled.privacy
    assert isinstance(privacy, FtrlAggregation)
    limits = privacy.limits
    resume = ResumePoint(
        next_round=3,
        model_version=2,
        releases=2,
        privacy=privacy.state(),
        participations={c: limits.participations(c) for c in deltas},
        last_steps={c: s for c in deltas if (s := limits.last_step(c)) is not None},
    )
    resumed = _central(
        dp, rounds=4, population=4, weights=first.global_model().weights, resume=resume
    ).coordinator
    picks += [sorted(_plaintext_round(resumed, deltas, now=0.0)) for _ in range(2)]
    assert picks == straight_picks
    np.testing.assert_allclose(
        resumed.global_model().weights["w"], straight.global_model().weights["w"], rtol=1e-6
    )
    assert resumed.history[-1].epsilon == straight.history[-1].epsilon


CONFIG = SecureAggregationConfig(
    threshold=2, num_aggregators=3, norm_bound=10.0, max_samples_per_client=100
)
LAYOUT = ContributionLayout(3, CONFIG)


def _distributed(rounds: int) -> tuple[Coordinator, InProcessAggregators, RunInfo, DpConfig]:
    dp = _ftrl("distributed", z=1.0)
    aggregators = InProcessAggregators(CONFIG, run_id="r", model_size=3, noise_seed=b"seed")
    settings = RunSpec(
        model_name="tiny",
        rounds=RoundConfig(
            num_rounds=rounds, clients_per_round=2, min_clients=2, round_timeout_s=30
        ),
        server_learning_rate=1.0,
        secure=SecureSettings(config=CONFIG, aggregators=aggregators.published),
        dp=dp,
        population=2,
    )
    core = build_coordinator(settings, initial_weights=START, run_id="r").coordinator
    run = run_info(settings, run_id="r", coordinator_key="", model_size=core.spec.total_size)
    aggregators.attach(run)
    return core, aggregators, run, dp


def _secure_round(
    core: Coordinator,
    aggregators: InProcessAggregators,
    run: RunInfo,
    values: dict[str, float],
    *,
    now: float,
) -> None:
    for client in values:
        core.join(client, now=now)
    core.tick(now=now)
    for client, value in values.items():
        task = core.task_for(client, now=now)
        assert task.kind is TaskKind.TRAIN and task.privacy is not None
        assert task.privacy.update_stddev == 0  # clients add no noise
        result = SimulatedHandIn(
            core,
            core.spec,
            aggregators=aggregators,
            csprng=CsprngStream(),
            policy=ClientPolicy.accepting(run, min_cohort=2),
        ).deliver(
            LocalUpdate(delta={"w": np.full(3, value, np.float32)}, num_samples=100, mean_loss=0.5),
            context=HandInContext(
                client_id=client,
                run=run,
                round_id=task.round_id,
                base_version=task.model_version,
                admission="in-process",
                privacy=task.privacy,
                aggregator_policies=aggregators.policies,
            ),
            now=now,
        )
        assert result.taken


def _cover_noise(aggregators: InProcessAggregators, dp: DpConfig, step: int) -> np.ndarray:
    """The noise of cover(step), reconstructed from two aggregators' saved states, in
    model units."""
    config = dealt_noise_config(dp, layout=LAYOUT, expected_clients=2)
    states = [
        TreeNoiseAggregator.from_bytes(aggregators.saved_noise[j], config=config, index=j)
        for j in (1, 2)
    ]
    scheme = ShamirScheme(threshold=2, num_shares=3)
    total = np.zeros(3)
    for node in cover(step):
        field = scheme.reconstruct([s.node_noise_share(node) for s in states])
        signed = field.astype(np.int64)
        signed[signed > (MERSENNE_31.modulus - 1) // 2] -= MERSENNE_31.modulus
        total += signed[:3] / LAYOUT.scale
    return total


def test_distributed_releases_are_the_true_prefix_sums_plus_exactly_the_covers_noise() -> None:
    core, aggregators, run, dp = _distributed(rounds=3)
    grid = 1 / LAYOUT.scale  # values on the encoding's grid: the sums are exact
    values = {"a": 100 * grid, "b": 300 * grid}
    deals: list[Effect] = []
    for step in range(1, 4):
        _secure_round(core, aggregators, run, values, now=float(step))
        settle(core, now=float(step), aggregators=aggregators, seen=deals)
        expected = (step * 400 * grid + _cover_noise(aggregators, dp, step)) / 2
        np.testing.assert_allclose(core.global_model().weights["w"], expected, rtol=1e-5, atol=1e-5)
    assert [e.step for e in deals if isinstance(e, CollectNoiseDeals)] == [1, 2, 3]
    # The noise is there (about z·B/scale per block, far above the grid) ...
    assert np.max(np.abs(_cover_noise(aggregators, dp, 3))) > 100 / LAYOUT.scale
    # ... and both observers get the same epsilon: nothing relies on a secret sample.
    last = core.history[-1]
    assert (
        last.epsilon
        == last.epsilon_coordinator
        == pytest.approx(
            dp_ftrl_epsilon(
                noise_multiplier=1.0,
                rounds=3,
                max_participations=3,
                min_separation=1,
                delta=1e-5,
                accounting="rdp",
            )
        )
    )


def test_an_abandoned_round_does_not_consume_its_step() -> None:
    core, aggregators, run, dp = _distributed(rounds=1)
    _secure_round(core, aggregators, run, {"a": 1.0, "b": 3.0}, now=1.0)
    aggregators.down = {3}  # cannot deal: nothing is released
    seen: list[Effect] = []
    settle(core, now=1.0, aggregators=aggregators, seen=seen)
    for now in (2.5, 20.0, 31.5):
        core.tick(now=now)
        settle(core, now=now, aggregators=aggregators, seen=seen)
    assert [e.new_round_id for e in seen if isinstance(e, RoundAbandoned)] == [2]
    aggregators.down = set()
    grid = 1 / LAYOUT.scale
    _secure_round(core, aggregators, run, {"a": 100 * grid, "b": 300 * grid}, now=32.0)
    settle(core, now=32.0, aggregators=aggregators, seen=seen)
    assert [m.round_id for m in core.history] == [2] and core.done
    assert {e.step for e in seen if isinstance(e, CollectNoiseDeals)} == {1}  # the same step
    expected = (400 * grid + _cover_noise(aggregators, dp, 1)) / 2
    np.testing.assert_allclose(core.global_model().weights["w"], expected, rtol=1e-5, atol=1e-5)


def test_distributed_ftrl_needs_aggregators_that_deal_the_tree_noise() -> None:
    settings = RunSpec(
        model_name="tiny",
        rounds=RoundConfig(num_rounds=1, clients_per_round=2, min_clients=2),
        dp=_ftrl("distributed"),
        population=2,
    )
    with pytest.raises(ConfigurationError, match="needs secure aggregation"):
        build_coordinator(settings, initial_weights=START, run_id="r")


@pytest.mark.parametrize("mechanism", ["fedavg", "ftrl"])
def test_a_target_that_one_round_already_overspends_is_refused_before_training(
    mechanism: str,
) -> None:
    dp = DpConfig(
        placement="central",
        noise_multiplier=0.5,
        clip_norm=10.0,
        min_clients=2,
        target_epsilon=0.01,
        mechanism=mechanism,  # type: ignore[arg-type]
        max_participations=3 if mechanism == "ftrl" else None,
    )
    with pytest.raises(ConfigurationError, match=r"^One round already spends more than the target"):
        _central(dp, rounds=3, population=2)
