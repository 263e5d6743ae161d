"""The client's security policy refuses, before anything is sent, each way an active
coordinator can describe less than the client accepts; an honest description passes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.run_descriptions import secure_description, secure_run

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.keys import AggregatorKeyPair, generate_keypair
from veilfl.errors import ConfigurationError, PolicyRefusal
from veilfl.privacy.dp_config import DpConfig
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan
from veilfl.protocol.client_policy import ClientPolicy, check_participations, run_epsilon
from veilfl.protocol.hand_in import HandInContext, hand_in
from veilfl.protocol.messages import DpRunInfo, RunInfo
from veilfl.protocol.run_description import RunDescription, dealt_noise_profile
from veilfl.secagg.aggregator_policy import AggregatorPolicy
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.run_consent import sign_consent

KEYS = [generate_keypair() for _ in range(3)]
CONFIG = SecureAggregationConfig(threshold=2, num_aggregators=3)
RUN = secure_run("r1", config=CONFIG, keys=KEYS, model_size=4)
assert RUN.secure is not None
PINS = {a.index: a.fingerprint for a in RUN.secure.aggregators}


def _signed(index: int, key: AggregatorKeyPair, minimum: int) -> AggregatorPolicy:
    unsigned = AggregatorPolicy(index=index, fingerprint=key.fingerprint, min_participants=minimum)
    return replace(unsigned, signature=key.sign(unsigned.statement()))


def _policies(minimum: int = 2, keys: list[AggregatorKeyPair] = KEYS) -> list[AggregatorPolicy]:
    return [_signed(j, key, minimum) for j, key in enumerate(keys, start=1)]


def _with_dp(run: RunInfo, config: DpConfig) -> RunInfo:
    return replace(run, dp=DpRunInfo(config=config, sample_rate=0.1))


def _refusal(call: object, *args: object, **kwargs: object) -> str:
    assert callable(call)
    with pytest.raises(PolicyRefusal) as caught:
        call(*args, **kwargs)
    message = str(caught.value)
    assert message.endswith("nothing was sent.") and "\n" not in message
    return message


# ----------------------------------------------------------------- downgrade (attack 1)
def test_a_run_without_secure_aggregation_is_refused_unless_plaintext_is_allowed() -> None:
    plaintext = replace(RUN, secure=None)
    message = _refusal(ClientPolicy().check_run, plaintext)
    assert message.startswith("Refused by --allow-plaintext:")
    assert "no secure aggregation" in message
    ClientPolicy(allow_plaintext=True).check_run(plaintext)
    message = _refusal(ClientPolicy(aggregator_fingerprints=PINS).check_run, plaintext)
    assert message.startswith("Refused by --aggregator-fingerprint:")


def test_pinned_aggregators_must_be_exactly_those_of_the_run() -> None:
    policy = ClientPolicy(aggregator_fingerprints=PINS)
    policy.check_run(RUN)
    only_one = secure_run(
        "r1",
        config=SecureAggregationConfig(threshold=1, num_aggregators=1),
        keys=KEYS[:1],
        model_size=4,
    )
    message = _refusal(policy.check_run, only_one)
    assert "exactly the 3 pinned aggregators" in message and "1 aggregator(s)" in message
    swapped = secure_run(
        "r1", config=CONFIG, keys=[KEYS[0], generate_keypair(), KEYS[2]], model_size=4
    )
    message = _refusal(policy.check_run, swapped)
    assert f"aggregator 2 with fingerprint {PINS[2]}" in message
    four = secure_run(
        "r1",
        config=SecureAggregationConfig(threshold=2, num_aggregators=4),
        keys=[*KEYS, generate_keypair()],
        model_size=4,
    )
    _refusal(policy.check_run, four)


def test_a_threshold_below_the_minimum_is_refused() -> None:
    one_of_three = secure_run(
        "r1",
        config=SecureAggregationConfig(threshold=1, num_aggregators=3),
        keys=KEYS,
        model_size=4,
    )
    message = _refusal(ClientPolicy(aggregator_fingerprints=PINS).check_run, one_of_three)
    assert message == (
        "Refused by --min-threshold: this client requires a threshold of at least 2, and the "
        "coordinator's run announces t = 1 of m = 3; nothing was sent."
    )
    ClientPolicy(aggregator_fingerprints=PINS, min_threshold=1).check_run(one_of_three)


# -------------------------------------------------------------------- minimum cohort
def test_aggregators_must_promise_the_minimum_cohort_with_their_own_signature() -> None:
    policy = ClientPolicy(min_cohort=3)
    assert policy.check_aggregators(RUN, _policies(3)) == 3
    assert policy.check_aggregators(RUN, _policies(5)) == 5
    low = [*_policies(3)[:2], _signed(3, KEYS[2], 2)]
    message = _refusal(policy.check_aggregators, RUN, low)
    assert "aggregator 3's signed policy announces a minimum of 2" in message
    forged = [*_policies(3)[:2], _signed(3, generate_keypair(), 3)]  # another key signs
    assert "not its published key" in _refusal(policy.check_aggregators, RUN, forged)
    unsigned = [*_policies(3)[:2], replace(_signed(3, KEYS[2], 1), min_participants=3)]
    assert "not signed by its published key" in _refusal(policy.check_aggregators, RUN, unsigned)
    assert "served no signed policy" in _refusal(policy.check_aggregators, RUN, _policies(3)[:2])
    assert ClientPolicy(min_cohort=1).check_aggregators(RUN, []) == 1


# ------------------------------------------------------------------------- DP floor
DISTRIBUTED = DpConfig(placement="distributed", noise_multiplier=1.0, clip_norm=1.0, min_clients=4)


def test_a_dp_floor_refuses_a_run_without_dp_or_below_it() -> None:
    floor = ClientPolicy(
        aggregator_fingerprints=PINS,
        dp_placements=frozenset({"distributed"}),
        min_noise_multiplier=1.0,
    )
    message = _refusal(floor.check_run, RUN)
    assert message.startswith("Refused by --require-dp:") and "no differential privacy" in message
    floor.check_run(_with_dp(RUN, DISTRIBUTED))
    central = replace(DISTRIBUTED, placement="central")
    assert "central noise" in _refusal(floor.check_run, _with_dp(RUN, central))
    weak = replace(DISTRIBUTED, noise_multiplier=0.5)
    assert "announces 0.5" in _refusal(floor.check_run, _with_dp(RUN, weak))
    loose = ClientPolicy(aggregator_fingerprints=PINS, max_clip_norm=0.5)
    assert "--max-clip-norm" in _refusal(loose.check_run, _with_dp(RUN, DISTRIBUTED))
    assert "--max-clip-norm" in _refusal(loose.check_run, RUN)  # a floor needs DP


def test_distributed_noise_is_the_aggregators_so_the_floor_is_the_runs_multiplier() -> None:
    run = _with_dp(RUN, DISTRIBUTED)
    floor = ClientPolicy(aggregator_fingerprints=PINS, min_noise_multiplier=1.0, min_cohort=2)
    # The aggregators deal the run's multiplier whatever the cohort they promise.
    assert floor.check_aggregators(run, _policies(2)) == 2
    weak = _with_dp(RUN, replace(DISTRIBUTED, noise_multiplier=0.5))
    assert "announces 0.5" in _refusal(floor.check_run, weak)
    plaintext = _with_dp(replace(RUN, secure=None), DISTRIBUTED)
    allowing = ClientPolicy(allow_plaintext=True, min_noise_multiplier=1.0)
    assert "no aggregator deals it" in _refusal(allowing.check_run, plaintext)


def test_a_task_whose_privacy_plan_is_missing_or_below_the_floor_is_refused() -> None:
    run = _with_dp(RUN, DISTRIBUTED)
    policy = ClientPolicy(min_noise_multiplier=1.0, max_clip_norm=1.0)
    honest = ClientPrivacyPlan.for_round(DISTRIBUTED, clip_norm=1.0, expected_clients=4)
    assert honest.update_stddev == 0.0  # the aggregators add the noise
    policy.check_task(run, honest, cohort=4, round_id=3)
    assert "no privacy plan" in _refusal(policy.check_task, run, None, cohort=4, round_id=3)
    wide = replace(honest, clip_norm=2.0)
    assert "--max-clip-norm" in _refusal(policy.check_task, run, wide, cohort=4, round_id=3)
    local = ClientPrivacyPlan("local", 1.0, 0.9, 0.0)
    message = _refusal(policy.check_task, run, local, cohort=4, round_id=3)
    assert message.startswith("Refused by --min-noise-multiplier:")
    assert "round 3's task announces local noise of multiplier 0.9" in message


@given(z=st.floats(0.3, 5.0), clip=st.floats(0.1, 10.0))
def test_an_honest_local_plan_guarantees_exactly_the_run_s_multiplier(
    z: float, clip: float
) -> None:
    """Oracle: local noise z·C on an update clipped to C is multiplier z."""
    config = DpConfig(placement="local", noise_multiplier=z, clip_norm=clip)
    run = _with_dp(RUN, config)
    plan = ClientPrivacyPlan.for_round(config, clip_norm=clip, expected_clients=4)
    ClientPolicy(min_noise_multiplier=z).check_task(run, plan, cohort=4, round_id=1)
    with pytest.raises(PolicyRefusal):
        ClientPolicy(min_noise_multiplier=z * 1.0001).check_task(run, plan, cohort=4, round_id=1)


# --------------------------------------------------------------------- FedBuff weight
def test_a_ticket_weight_outside_the_accepted_range_is_refused() -> None:
    policy = ClientPolicy(staleness_weights=(0.25, 1.0))
    policy.check_weight(None, round_id=1)
    policy.check_weight(0.25, round_id=1)
    policy.check_weight(1.0, round_id=1)
    message = _refusal(ClientPolicy().check_weight, 4.0, round_id=7)
    assert message == (
        "Refused by --fedbuff-weights: this client requires a weight in [0, 1], and buffer "
        "7's ticket announces weight 4; nothing was sent."
    )
    _refusal(policy.check_weight, 0.1, round_id=1)
    _refusal(policy.check_weight, float("nan"), round_id=1)


# ------------------------------------------------------------------- hand-in pipeline
def test_the_hand_in_generator_refuses_before_its_first_request() -> None:
    flow = hand_in(
        {"w": np.ones(4, np.float32)},
        num_samples=10,
        loss=0.5,
        context=HandInContext(
            client_id="c1",
            run=replace(RUN, secure=None),
            round_id=1,
            base_version=0,
        ),
        rng=CsprngStream(),
        policy=ClientPolicy(),
    )
    with pytest.raises(PolicyRefusal, match="--allow-plaintext"):
        next(flow)


def test_the_hand_in_generator_checks_the_weight_and_the_aggregators_of_that_hand_in() -> None:
    context = HandInContext(
        client_id="c1", run=RUN, round_id=2, base_version=0, weight=1.5, admission="a"
    )
    policy = ClientPolicy(aggregator_fingerprints=PINS)
    for ctx, flag in (
        (context, "--min-cohort"),  # no signed policies at all
        (replace(context, aggregator_policies=tuple(_policies(1))), "--min-cohort"),
        (replace(context, aggregator_policies=tuple(_policies(2))), "--fedbuff-weights"),
    ):
        flow = hand_in(
            {"w": np.ones(4, np.float32)},
            num_samples=10,
            loss=0.5,
            context=ctx,
            rng=CsprngStream(),
            policy=policy,
        )
        with pytest.raises(PolicyRefusal, match=flag):
            next(flow)


# -------------------------------------------------------------------------- building
def test_contradictory_or_meaningless_settings_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="--allow-plaintext contradicts"):
        ClientPolicy(allow_plaintext=True, aggregator_fingerprints=PINS)
    with pytest.raises(ConfigurationError, match=r"aggregators 1\.\.2"):
        ClientPolicy(aggregator_fingerprints={1: "a", 3: "c"})
    with pytest.raises(ConfigurationError, match="exceeds the 1 pinned"):
        ClientPolicy(aggregator_fingerprints={1: "a"}, min_threshold=2)
    with pytest.raises(ConfigurationError, match="--require-dp takes"):
        ClientPolicy(dp_placements=frozenset({"nowhere"}))
    with pytest.raises(ConfigurationError, match="--fedbuff-weights"):
        ClientPolicy(staleness_weights=(1.0, 0.5))
    with pytest.raises(ConfigurationError, match="--min-cohort"):
        ClientPolicy(min_cohort=0)


def test_a_policy_file_s_keys_are_the_flags_without_dashes() -> None:
    policy = ClientPolicy.from_mapping(
        {
            "aggregator-fingerprint": [PINS[1], PINS[2], PINS[3]],
            "min_threshold": 2,
            "min-cohort": 4,
            "require-dp": ["distributed", "local"],
            "min-noise-multiplier": 1,
            "max-clip-norm": 2.5,
            "fedbuff-weights": "0.5,1",
        },
        source="policy.toml",
    )
    assert policy == ClientPolicy(
        aggregator_fingerprints=PINS,
        min_threshold=2,
        min_cohort=4,
        dp_placements=frozenset({"distributed", "local"}),
        min_noise_multiplier=1.0,
        max_clip_norm=2.5,
        staleness_weights=(0.5, 1.0),
    )
    with pytest.raises(ConfigurationError, match=r"policy\.toml: unknown key 'min-cohrot'"):
        ClientPolicy.from_mapping({"min-cohrot": 3}, source="policy.toml")
    with pytest.raises(ConfigurationError, match=r"policy\.toml: allow-plaintext: write true"):
        ClientPolicy.from_mapping({"allow-plaintext": "yes"}, source="policy.toml")


def test_the_policy_accepting_a_run_accepts_it_and_only_its_aggregators() -> None:
    run = _with_dp(RUN, DISTRIBUTED)
    policy = ClientPolicy.accepting(run, min_cohort=2)
    policy.check_hand_in(
        run,
        privacy=ClientPrivacyPlan.for_round(DISTRIBUTED, clip_norm=1.0, expected_clients=4),
        weight=None,
        aggregator_policies=_policies(2),
        round_id=1,
    )
    other = secure_run(
        "r1", config=CONFIG, keys=[generate_keypair() for _ in range(3)], model_size=4
    )
    _refusal(policy.check_run, _with_dp(other, DISTRIBUTED))


def _ftrl(k: int) -> DpConfig:
    return DpConfig(
        placement="central",
        noise_multiplier=1.0,
        clip_norm=1.0,
        mechanism="ftrl",
        max_participations=k,
    )


def test_a_dp_ftrl_client_takes_part_in_at_most_k_rounds() -> None:
    run = _with_dp(RUN, _ftrl(2))
    for earlier in (0, 1):
        check_participations(run, earlier_rounds=earlier, round_id=7)
    message = _refusal(check_participations, run, earlier_rounds=2, round_id=7)
    assert message.startswith("Refused round 7: this client already took part in 2 rounds")
    assert "--dp-max-participations" in message


def test_only_dp_ftrl_limits_a_clients_rounds() -> None:
    dp_fedavg = DpConfig(placement="central", noise_multiplier=1.0, clip_norm=1.0)
    for run in (RUN, _with_dp(RUN, dp_fedavg)):
        check_participations(run, earlier_rounds=1000, round_id=1)


# ----------------------------------------------- issue 19: the run every party agreed to
def test_an_unpinned_secure_run_is_refused_in_one_line_that_says_how_to_pin() -> None:
    message = _refusal(ClientPolicy().check_run, RUN)
    assert "pinned no aggregator keys" in message
    assert "--aggregator-fingerprint" in message and "--trust-coordinator-keys" in message
    ClientPolicy(trust_coordinator_keys=True).check_run(RUN)  # the loud way round
    with pytest.raises(ConfigurationError, match="contradicts"):
        ClientPolicy(trust_coordinator_keys=True, aggregator_fingerprints=PINS)


def _agreed(description: RunDescription, signers: list[int]) -> RunDescription:
    noise = dealt_noise_profile(description.info)
    consents = {
        j: sign_consent(KEYS[j - 1], index=j, run_id=description.run_id, noise=noise)
        for j in signers
    }
    return description.with_consents(consents)


DESCRIPTION = secure_description("s", config=CONFIG, keys=KEYS, model_size=4)
PINNED = ClientPolicy(
    aggregator_fingerprints={
        a.index: a.fingerprint
        for a in DESCRIPTION.info.secure.aggregators  # type: ignore[union-attr]
    }
)


def test_a_quorum_of_pinned_aggregators_must_have_consented_to_this_very_run() -> None:
    # ceil((3 + 2) / 2) = 3 of 3: every aggregator must have consented.
    PINNED.check_description(_agreed(DESCRIPTION, [1, 2, 3]))
    message = _refusal(PINNED.check_description, _agreed(DESCRIPTION, [1, 2]))
    assert "2 of the 3 aggregators ([1, 2]) signed their consent" in message
    # Consents signed for another view of the run (another id) count for nothing.
    other = secure_description("other", config=CONFIG, keys=KEYS, model_size=4)
    shown = RunDescription(DESCRIPTION.spec, _agreed(other, [1, 2, 3]).consents)
    assert "0 of the 3 aggregators" in _refusal(PINNED.check_description, shown)


def test_max_epsilon_is_computed_by_the_client_from_the_declared_run() -> None:
    spec = DESCRIPTION.spec
    strong = DpConfig(placement="distributed", noise_multiplier=20.0, clip_norm=1.0, min_clients=2)
    weak = replace(strong, noise_multiplier=0.01)
    policy = replace(PINNED, max_epsilon=2.0)
    for dp, refused in (
        (None, True),
        (weak, True),
        (strong, False),
        (replace(strong, placement="central"), True),
    ):
        description = _agreed(RunDescription(replace(spec, dp=dp)), [1, 2, 3])
        if refused:
            assert "--max-epsilon" in _refusal(policy.check_description, description)
        else:
            policy.check_description(description)
    # What earlier runs of the same coordinator spent counts too.
    honest = _agreed(RunDescription(replace(spec, dp=strong)), [1, 2, 3])
    assert run_epsilon(honest.info) < 2.0
    message = _refusal(policy.check_description, honest, earlier_epsilon=1.9)
    assert "earlier runs" in message


def test_k_for_dp_ftrl_is_counted_per_coordinator_whatever_the_mode() -> None:
    ftrl = DpConfig(
        placement="distributed",
        noise_multiplier=1.0,
        clip_norm=1.0,
        min_clients=2,
        mechanism="ftrl",
        max_participations=2,
    )
    run = _with_dp(RUN, ftrl)
    check_participations(run, earlier_rounds=1, round_id=5)
    message = _refusal(check_participations, run, earlier_rounds=2, round_id=5)
    assert "this coordinator's runs" in message


def test_a_ticket_weight_below_the_runs_floor_is_refused() -> None:
    policy = ClientPolicy(aggregator_fingerprints=PINS)
    run = replace(RUN, weight_floor=0.5)
    policy.check_weight(0.5, round_id=1, floor=run.weight_floor)
    assert "below 0.5" in _refusal(policy.check_weight, 0.0, round_id=1, floor=run.weight_floor)
