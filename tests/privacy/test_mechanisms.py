"""The privacy mechanisms behind one interface: the registry, the release schedules and
each built-in mechanism's accounting against the code it delegates to and an
independent computation."""

from __future__ import annotations

import math
from collections.abc import Iterator

import dp_accounting
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from veilfl.errors import ConfigurationError
from veilfl.privacy.accountant import epsilon_for, noise_multiplier_for
from veilfl.privacy.central_tree import CentralTreeNoise
from veilfl.privacy.dp_config import DpConfig
from veilfl.privacy.dp_ftrl import dp_ftrl_epsilon, tree_sensitivity
from veilfl.privacy.mechanisms import (
    DpFedAvg,
    DpFtrlTree,
    FreshNoiseSchedule,
    PrivacyMechanism,
    ReleaseTerms,
    TreeNoiseSchedule,
    mechanism_named,
    mechanism_names,
    register_mechanism,
    unregister_mechanism,
)
from veilfl.privacy.mechanisms.schedule import dealt_schedule_named
from veilfl.privacy.tree import cover, cover_change
from veilfl.secagg.tree_noise import TreeNoiseConfig


class _Renamed(DpFtrlTree):
    """A throwaway mechanism: the tree under another name."""

    name = "throwaway-tree"
    title = "Throwaway"


@pytest.fixture
def throwaway() -> Iterator[PrivacyMechanism]:
    mechanism = register_mechanism(_Renamed())
    yield mechanism
    unregister_mechanism(mechanism.name)


def _ftrl(**changes: object) -> DpConfig:
    values: dict[str, object] = {
        "placement": "distributed",
        "noise_multiplier": 3.0,
        "clip_norm": 1.0,
        "mechanism": "ftrl",
        "max_participations": 2,
        "min_separation": 4,
        "accounting": "pld",
    }
    values.update(changes)
    return DpConfig(**values)  # type: ignore[arg-type]


# ---------------------------------------------------------------- registry
def test_the_built_in_mechanisms_are_registered_by_name() -> None:
    assert {"fedavg", "ftrl"} <= set(mechanism_names())
    assert isinstance(mechanism_named("fedavg"), DpFedAvg)
    assert isinstance(_ftrl().privacy_mechanism, DpFtrlTree)


def test_an_unknown_mechanism_is_refused_in_one_line_listing_the_registered_names() -> None:
    with pytest.raises(ConfigurationError) as raised:
        DpConfig(placement="central", noise_multiplier=1.0, clip_norm=1.0, mechanism="nope")

    message = str(raised.value)
    assert "\n" not in message and "'nope'" in message
    assert all(name in message for name in mechanism_names())


def test_a_registered_mechanism_is_selectable_and_written_into_the_runs_json(
    throwaway: PrivacyMechanism,
) -> None:
    config = _ftrl(mechanism=throwaway.name)

    assert config.privacy_mechanism is throwaway
    assert config.to_json()["mechanism"] == throwaway.name
    assert DpConfig.from_json(config.to_json()) == config


def test_a_second_mechanism_under_a_taken_name_is_refused(throwaway: PrivacyMechanism) -> None:
    with pytest.raises(ConfigurationError, match="already registered"):
        register_mechanism(_Renamed())


def test_unregistering_forgets_the_name() -> None:
    mechanism = register_mechanism(_Renamed())
    unregister_mechanism(mechanism.name)

    assert mechanism.name not in mechanism_names()
    with pytest.raises(ConfigurationError, match="Unknown DP mechanism"):
        mechanism_named(mechanism.name)


def test_a_mechanism_refuses_settings_it_cannot_honour() -> None:
    with pytest.raises(ConfigurationError, match="--dp-mechanism ftrl takes --dp"):
        _ftrl(placement="local")
    with pytest.raises(ConfigurationError, match="needs --dp-max-participations"):
        _ftrl(max_participations=None)
    with pytest.raises(ConfigurationError, match="participation limits; add --dp-mechanism"):
        DpConfig(placement="central", noise_multiplier=1.0, clip_norm=1.0, min_separation=3)


def test_dp_fedavgs_run_json_keeps_its_old_keys() -> None:
    config = DpConfig(placement="central", noise_multiplier=1.0, clip_norm=1.0)

    assert "mechanism" not in config.to_json()  # run ids of DP-FedAvg runs are unchanged
    assert DpConfig.from_json(config.to_json()) == config


# ---------------------------------------------------------------- schedules
@given(st.integers(min_value=1, max_value=2000))
def test_the_tree_schedule_is_the_trees_cover_change(step: int) -> None:
    terms = TreeNoiseSchedule().terms(step)
    change = cover_change(step)

    assert terms.added == (change.added,) and terms.removed == change.removed
    assert (terms.coefficients, terms.scale) == ((1,), 1)


@given(st.integers(min_value=1, max_value=300))
def test_the_tree_schedules_releases_telescope_to_the_cover_of_every_prefix(steps: int) -> None:
    # Oracle: count each block's net appearances over releases 1..steps.
    net: dict[object, int] = {}
    for step in range(1, steps + 1):
        terms = TreeNoiseSchedule().terms(step)
        for node in terms.added:
            net[node] = net.get(node, 0) + 1
        for node in terms.removed:
            net[node] = net.get(node, 0) - 1

    assert {node for node, count in net.items() if count} == set(cover(steps))
    assert set(net.values()) <= {0, 1}


def test_the_fresh_schedule_adds_one_new_block_per_release_and_removes_none() -> None:
    steps = [1, 2, 5, 9]
    blocks = [FreshNoiseSchedule().terms(s).added for s in steps]

    assert all(len(b) == 1 for b in blocks) and len({b[0] for b in blocks}) == len(steps)
    assert all(FreshNoiseSchedule().terms(s).removed == () for s in steps)


@pytest.mark.parametrize("schedule", ["tree", "fresh"])
def test_the_aggregators_noise_config_follows_the_named_schedule(schedule: str) -> None:
    config = TreeNoiseConfig(
        num_aggregators=3, threshold=2, length=4, block_stddev=1.0, schedule=schedule
    )
    for step in range(1, 40):
        terms = dealt_schedule_named(schedule).terms(step)
        assert (config.added(step),) == terms.added
        assert config.removed(step) == terms.removed


def test_an_unknown_dealt_schedule_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="Unknown noise schedule 'banded'"):
        TreeNoiseConfig(
            num_aggregators=3, threshold=2, length=4, block_stddev=1.0, schedule="banded"
        )


def test_a_release_needs_a_nonzero_own_coefficient() -> None:
    with pytest.raises(ConfigurationError):
        ReleaseTerms(step=1, coefficients=(0, 1), scale=1, added=())


def test_central_noise_over_a_schedule_telescopes_to_the_prefix_noise() -> None:
    noise = CentralTreeNoise(key=bytes(32), stddev=1.0, length=3, schedule=TreeNoiseSchedule())
    total = np.zeros(3)
    for step in range(1, 12):
        total = total + noise.change(step)

    np.testing.assert_allclose(total, noise.prefix(11), atol=1e-12)


def test_the_default_decoder_passes_a_unit_release_through() -> None:
    terms = TreeNoiseSchedule().terms(3)
    release = np.arange(4.0)

    assert TreeNoiseSchedule().decoder().decode(terms, release) is release
    assert TreeNoiseSchedule().decoder().to_json() == {}


# ---------------------------------------------------------------- accounting
@pytest.mark.parametrize("accounting", ["rdp", "pld"])
def test_dp_fedavgs_planned_epsilon_is_the_sampled_gaussians(accounting: str) -> None:
    config = DpConfig(
        placement="central",
        noise_multiplier=1.2,
        clip_norm=1.0,
        accounting=accounting,  # type: ignore[arg-type]
    )

    assert DpFedAvg().planned_epsilon(config, rounds=20, sample_rate=0.1) == epsilon_for(
        noise_multiplier=1.2,
        sample_rate=0.1,
        rounds=20,
        delta=1e-5,
        accounting=accounting,  # type: ignore[arg-type]
    )


def test_the_tree_mechanisms_epsilon_is_one_gaussian_at_z_over_the_sensitivity() -> None:
    config = _ftrl()
    sensitivity = DpFtrlTree().sensitivity(config, rounds=16)
    accountant = dp_accounting.pld.PLDAccountant(
        dp_accounting.NeighboringRelation.REPLACE_SPECIAL, value_discretization_interval=1e-4
    )
    accountant.compose(dp_accounting.GaussianDpEvent(config.noise_multiplier / sensitivity))
    independent = accountant.get_epsilon(config.delta)

    assert sensitivity == tree_sensitivity(rounds=16, max_participations=2, min_separation=4)
    epsilon = DpFtrlTree().planned_epsilon(config, rounds=16, sample_rate=0.3)
    assert epsilon == dp_ftrl_epsilon(
        noise_multiplier=3.0, rounds=16, max_participations=2, min_separation=4, delta=1e-5
    )
    assert epsilon == pytest.approx(independent, rel=1e-2)


@pytest.mark.parametrize("mechanism", [DpFedAvg(), DpFtrlTree()], ids=lambda m: m.name)
def test_the_derived_noise_multiplier_spends_at_most_the_target(
    mechanism: PrivacyMechanism,
) -> None:
    config = _ftrl() if mechanism.name == "ftrl" else DpConfig("central", 1.0, 1.0)
    z = mechanism.noise_multiplier_for(config, target_epsilon=2.0, rounds=12, sample_rate=0.2)
    spent = mechanism.planned_epsilon(
        DpConfig.from_json({**config.to_json(), "noise_multiplier": z}),
        rounds=12,
        sample_rate=0.2,
    )

    assert spent <= 2.0 * (1 + 1e-9)
    assert spent > 2.0 * 0.95  # the smallest such z, not any z


def test_dp_fedavgs_z_matches_the_accountants_search() -> None:
    config = DpConfig("central", 1.0, 1.0, accounting="pld")

    assert DpFedAvg().noise_multiplier_for(
        config, target_epsilon=3.0, rounds=10, sample_rate=0.1
    ) == noise_multiplier_for(
        target_epsilon=3.0, sample_rate=0.1, rounds=10, delta=1e-5, accounting="pld"
    )


def test_no_epsilon_holds_against_a_coordinator_that_adds_the_noise() -> None:
    assert math.isinf(
        DpFtrlTree().epsilon_against_coordinator(
            _ftrl(placement="central"), rounds=10, expected_clients=5
        )
    )
    assert math.isinf(
        DpFedAvg().epsilon_against_coordinator(
            DpConfig("central", 1.0, 1.0), rounds=10, expected_clients=5
        )
    )


def test_the_tree_gives_the_coordinator_its_public_epsilon_under_distributed_noise() -> None:
    config = _ftrl()

    assert DpFtrlTree().epsilon_against_coordinator(
        config, rounds=10, expected_clients=5
    ) == DpFtrlTree().planned_epsilon(config, rounds=10, sample_rate=1.0)


def test_dealt_noise_keeps_each_mechanisms_profile() -> None:
    tree = DpFtrlTree().dealt_noise(_ftrl(), per_update_bound=10.0, expected_clients=4)
    fedavg = DpFedAvg().dealt_noise(
        DpConfig("distributed", 2.0, 1.0), per_update_bound=10.0, expected_clients=4
    )

    assert tree.profile(dimension=5, extra=3) == ((5, 30.0), (3, 0.0))
    assert fedavg.profile(dimension=5, extra=3) == ((5, 20.0), (2, 0.0), (1, 0.0))
    assert (tree.schedule, fedavg.schedule) == ("tree", "fresh")
