"""Test support: typed run descriptions for aggregators and clients under test."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import replace

from veilfl.auth.identity import encode_public_key
from veilfl.crypto.keys import AggregatorKeyPair
from veilfl.protocol.messages import (
    LocalTrainingPlan,
    PublishedAggregator,
    RunInfo,
    SecureRunInfo,
)
from veilfl.protocol.run_description import RunDescription, describe_run
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig

__all__ = ["pins", "published", "run_info", "secure_description", "secure_run"]


def published(
    keys: Sequence[AggregatorKeyPair], urls: Sequence[str] | None = None
) -> tuple[PublishedAggregator, ...]:
    """What a coordinator publishes about aggregators with ``keys``."""
    return tuple(
        PublishedAggregator(
            index=j,
            url=f"http://aggregator-{j}" if urls is None else urls[j - 1],
            kem=key.kem,
            public_key=base64.b64encode(key.public_bytes).decode(),
            signing_key=encode_public_key(key.signing_public_bytes),
        )
        for j, key in enumerate(keys, start=1)
    )


def secure_run(
    run_id: str,
    *,
    config: SecureAggregationConfig,
    keys: Sequence[AggregatorKeyPair],
    model_size: int,
    coordinator_key: str = "",
    urls: Sequence[str] | None = None,
) -> RunInfo:
    """A secure run's description with aggregators 1..m holding ``keys``."""
    return RunInfo(
        run_id=run_id,
        model_name="tiny",
        num_rounds=1,
        plan=LocalTrainingPlan(),
        coordinator_key=coordinator_key,
        secure=SecureRunInfo(
            config=config, aggregators=published(keys, urls), model_size=model_size
        ),
        min_cohort=2,  # what an aggregator sums at least, by default
    )


def pins(run: RunInfo) -> list[str]:
    """The ``--peer-fingerprint`` list of an operator who pinned ``run``'s aggregators."""
    assert run.secure is not None
    return [a.fingerprint for a in run.secure.aggregators]


def run_info(
    settings: RunSpec, *, run_id: str, model_size: int, coordinator_key: str = ""
) -> RunInfo:
    """What the parties of a run of ``settings`` read, under the id ``run_id`` (for
    tests of the core that drive coordinator, aggregators and clients by hand and name
    the run themselves; a served description's id is always its spec's hash)."""
    sealed = settings.sealed(coordinator_key=coordinator_key, salt="", model_size=model_size)
    return replace(describe_run(sealed), run_id=run_id)


def secure_description(
    salt: str,
    *,
    config: SecureAggregationConfig,
    keys: Sequence[AggregatorKeyPair],
    model_size: int,
    coordinator_key: str = "",
    urls: Sequence[str] | None = None,
) -> RunDescription:
    """A secure run's declared spec (``salt`` tells runs apart) with aggregators 1..m
    holding ``keys``; its id is its hash."""
    spec = RunSpec(
        model_name="tiny",
        rounds=RoundConfig(num_rounds=1, clients_per_round=2, min_clients=2),
        secure=SecureSettings(config=config, aggregators=published(keys, urls)),
        coordinator_key=coordinator_key,
        salt=salt,
        model_size=model_size,
    )
    return RunDescription(spec)
