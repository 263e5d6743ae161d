"""Test support: typed run descriptions for aggregators and clients under test."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from veilfl.auth.identity import encode_public_key
from veilfl.crypto.keys import AggregatorKeyPair
from veilfl.protocol.messages import (
    LocalTrainingPlan,
    PublishedAggregator,
    RunInfo,
    SecureRunInfo,
)
from veilfl.secagg.config import SecureAggregationConfig

__all__ = ["pins", "published", "secure_run"]


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
    )


def pins(run: RunInfo) -> list[str]:
    """The ``--peer-fingerprint`` list of an operator who pinned ``run``'s aggregators."""
    assert run.secure is not None
    return [a.fingerprint for a in run.secure.aggregators]
