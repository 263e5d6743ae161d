"""The run id is the hash of the declared run: any change gives another id, and a share
sealed under one description does not open under another; consents bind that id."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest
from tests.contributions import seal
from tests.run_descriptions import published

from veilfl.crypto.keys import generate_keypair
from veilfl.errors import ConfigurationError, DecryptionError, WireFormatError
from veilfl.privacy.clipping import AdaptiveClipping
from veilfl.privacy.dp_config import DpConfig
from veilfl.protocol.buffered import BufferConfig
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.protocol.run_description import RunDescription, dealt_noise_profile
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.aggregator_state import open_contribution
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout
from veilfl.secagg.run_consent import sign_consent
from veilfl.strategy.settings import LrScheduleConfig, ServerOptimizerConfig

KEYS = [generate_keypair() for _ in range(3)]
CONFIG = SecureAggregationConfig(threshold=2, num_aggregators=3, max_samples_per_client=100)
BASE = RunSpec(
    model_name="tiny",
    rounds=RoundConfig(num_rounds=3, clients_per_round=4, min_clients=2),
    secure=SecureSettings(config=CONFIG, aggregators=published(KEYS)),
    dp=DpConfig(placement="distributed", noise_multiplier=1.0, clip_norm=1.0, min_clients=2),
    coordinator_key="k",
    salt="00",
    model_size=3,
)


def _changed(value: Any) -> Any:
    """Another value of the same kind (a changed leaf of a JSON document)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return 1
    raise AssertionError(f"no change for {value!r}")


def _leaves(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(data, dict):
        return [leaf for key, value in data.items() for leaf in _leaves(value, (*path, key))]
    if isinstance(data, list):
        return [leaf for i, value in enumerate(data) for leaf in _leaves(value, (*path, i))]
    return [path]


def _set(data: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        data = data[key]
    return data


def test_every_field_of_the_spec_is_in_the_run_id() -> None:
    # Arrange: a spec with every optional block on, so that every field has a value.
    spec = dataclasses.replace(
        BASE,
        server_optimizer=ServerOptimizerConfig(name="fedadam"),
        dp=dataclasses.replace(
            BASE.dp,  # type: ignore[arg-type]
            adaptive=AdaptiveClipping(target_quantile=0.5),
            target_epsilon=2.0,
        ),
        population=100,
    )
    document = spec.to_json()
    ids = {spec.run_id}
    changed = 0
    for path in _leaves(document):
        if path[-1] in ("version", "fingerprint"):
            continue  # the format version is refused, and a fingerprint is derived
        probe = json.loads(json.dumps(document))
        _set(probe, path, _changed(_get(document, path)))
        # Act
        try:
            other = RunSpec.from_json(probe)
        except Exception:
            continue
        # Assert
        assert other.run_id not in ids, f"changing {'.'.join(map(str, path))} kept the id"
        ids.add(other.run_id)
        changed += 1
    assert changed >= 25  # the walk really reached the spec's fields


def test_the_run_id_survives_the_wire_and_int_for_float() -> None:
    spec = dataclasses.replace(BASE, server_learning_rate=1)  # an int where a float goes
    served = json.loads(json.dumps(RunDescription(spec).to_json()))

    assert RunDescription.from_json(served).run_id == spec.run_id


def test_a_stated_run_id_other_than_the_hash_is_refused() -> None:
    served = RunDescription(BASE).to_json()
    served["run_id"] = "0" * 64

    with pytest.raises(WireFormatError, match="hash"):
        RunDescription.from_json(served)


def test_a_share_sealed_under_one_view_does_not_open_under_another() -> None:
    # Arrange: the clients were shown z = 1; the aggregator was shown z = 2.
    clients_view = RunDescription(BASE)
    aggregators_view = RunDescription(
        dataclasses.replace(BASE, dp=dataclasses.replace(BASE.dp, noise_multiplier=2.0))  # type: ignore[arg-type]
    )
    layout = ContributionLayout(3, CONFIG)
    sealed = seal(
        CONFIG,
        KEYS,
        run_id=clients_view.run_id,
        round_id=1,
        client_id="c",
        update=np.zeros(3),
    )

    def open_under(run_id: str) -> None:
        open_contribution(
            sealed[0].envelope,
            run_id=run_id,
            round_id=1,
            index=1,
            client_id="c",
            layout=layout,
            private_key=KEYS[0].private_key,
        )

    # Act / Assert: the same view opens it; the other does not.
    open_under(clients_view.run_id)
    with pytest.raises(DecryptionError):
        open_under(aggregators_view.run_id)


def _keys() -> dict[int, bytes]:
    return {j: k.signing_public_bytes for j, k in enumerate(KEYS, start=1)}


def test_consents_count_only_for_this_run_id_this_noise_and_the_pinned_key() -> None:
    description = RunDescription(BASE)
    noise = dealt_noise_profile(description.info)
    other = RunDescription(dataclasses.replace(BASE, salt="01"))
    stranger = generate_keypair()
    consents = (
        sign_consent(KEYS[0], index=1, run_id=description.run_id, noise=noise),  # counts
        sign_consent(KEYS[1], index=2, run_id=other.run_id, noise=noise),  # another run
        sign_consent(KEYS[2], index=3, run_id=description.run_id, noise=None),  # no noise
    )
    forged = sign_consent(stranger, index=2, run_id=description.run_id, noise=noise)

    signers = RunDescription(BASE, (*consents, forged)).consenting_aggregators(_keys())

    assert signers == {1}


def test_a_buffered_run_declares_its_weight_floor() -> None:
    spec = dataclasses.replace(
        BASE,
        dp=None,
        buffer=BufferConfig(buffer_size=4, max_staleness=3, max_versions=2),
        plan=LocalTrainingPlan(),
    )

    floor = RunDescription(spec).info.weight_floor

    assert floor == pytest.approx(spec.buffer.weight(3))  # type: ignore[union-attr]
    assert 0 < floor < 1


def test_secure_settings_for_aggregators_publishes_each_key_in_index_order() -> None:
    urls = [f"http://aggregator-{j}/" for j in range(1, 4)]

    settings = SecureSettings.for_aggregators(
        list(zip(urls, KEYS, strict=True)), threshold=2, max_samples_per_client=100
    )

    assert settings == SecureSettings(config=CONFIG, aggregators=published(KEYS))


def test_secure_settings_for_no_aggregators_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigurationError, match="at least one aggregator") as raised:
        SecureSettings.for_aggregators([], threshold=2)

    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"server_momentum": 0.9},
        {"server_momentum": 0.9, "server_nesterov": True},
        {"server_lr_schedule": LrScheduleConfig(name="cosine")},
        {"server_lr_schedule": LrScheduleConfig(warmup_rounds=1)},
        {"server_lr_schedule": LrScheduleConfig(final_fraction=0.1)},
        {"server_lr_schedule": LrScheduleConfig(decay_factor=0.9)},
        {"server_lr_schedule": LrScheduleConfig(step_rounds=2)},
    ],
)
def test_server_momentum_and_schedule_settings_change_the_run_id(changes: dict[str, Any]) -> None:
    changed = dataclasses.replace(BASE, **changes)

    assert changed.run_id != BASE.run_id
    assert RunSpec.from_json(json.loads(json.dumps(changed.to_json()))) == changed
    assert RunSpec.from_json(changed.to_json()).run_id == changed.run_id


def test_a_description_stored_before_momentum_existed_reads_as_none() -> None:
    stored = BASE.to_json()
    for key in ("server_momentum", "server_nesterov", "server_lr_schedule"):
        del stored[key]

    restored = RunSpec.from_json(stored)

    assert restored == BASE
    assert restored.server_momentum == 0 and restored.server_lr_schedule.is_constant


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"server_momentum": 1.0}, r"^--server-momentum must be at least 0 and less than 1; got"),
        ({"server_momentum": -0.5}, r"^--server-momentum must be at least 0 and less than 1; got"),
        (
            {"server_momentum": 0.9, "server_optimizer": ServerOptimizerConfig(name="fedadam")},
            r"^--server-momentum is FedAvg's and FedBuff's; --server-optimizer fedadam keeps",
        ),
        ({"server_nesterov": True}, r"^--server-nesterov needs server momentum; give"),
        (
            {"server_lr_schedule": LrScheduleConfig(warmup_rounds=3)},
            r"^--server-lr-warmup 3 covers all 3 rounds; give fewer",
        ),
    ],
)
def test_bad_server_step_settings_are_refused_in_one_line(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        dataclasses.replace(BASE, **changes)
    assert "\n" not in str(raised.value)
