"""``run_coordinator``: the public entry point serves a run to its end and returns its
metrics, and refuses unsafe or impossible settings in one line."""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from veilfl.auth.enrollment import EnrollmentPolicy
from veilfl.cli.local_fleet import free_port
from veilfl.client.http_client import run_client
from veilfl.errors import ConfigurationError, TransportError
from veilfl.ml.datasets import ArrayDataset
from veilfl.ml.learner import sgd_learner
from veilfl.privacy.dp_config import DpConfig
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.sync_round import RoundConfig
from veilfl.server.api import run_coordinator

OPEN = EnrollmentPolicy(open=True)
SPEC = RunSpec(
    model_name="linear", rounds=RoundConfig(num_rounds=2, clients_per_round=2, min_clients=2)
)


def _model() -> nn.Module:
    return nn.Linear(4, 2)


def _data(seed: int) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    return ArrayDataset(x, (x[:, 0] > 0).astype(np.int64))


async def test_a_plaintext_run_is_served_to_its_end_and_its_metrics_returned(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    policy = ClientPolicy(allow_plaintext=True)
    coordinator = asyncio.create_task(
        run_coordinator(
            SPEC,
            run_dir=tmp_path / "run",
            learner=sgd_learner(_model, seed=0),
            enrollment=OPEN,
            eval_data=_data(9),
            port=port,
            insecure=True,
        )
    )

    await asyncio.gather(
        *(run_client(url, sgd_learner(_model, seed=i), _data(i), policy=policy) for i in range(2))
    )
    history = await asyncio.wait_for(coordinator, 30)

    assert [m.round_id for m in history] == [1, 2]
    assert all(m.test_accuracy is not None for m in history)
    assert (tmp_path / "run" / "metrics.json").exists()


async def test_a_coordinator_without_tls_or_insecure_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="insecure=True") as raised:
        await run_coordinator(SPEC, run_dir=tmp_path, learner=sgd_learner(_model), enrollment=OPEN)

    assert "\n" not in str(raised.value)
    assert not (tmp_path / "run.sqlite").exists()


async def test_a_taken_port_is_a_transport_error_not_an_exit(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(TransportError, match=f"127.0.0.1:{port}"):
            await run_coordinator(
                SPEC,
                run_dir=tmp_path,
                learner=sgd_learner(_model),
                enrollment=OPEN,
                port=port,
                insecure=True,
            )


async def test_a_private_run_logs_the_noise_advice_before_its_first_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    dp = DpConfig(placement="central", noise_multiplier=1.0, clip_norm=1.0, min_clients=2)
    coordinator = asyncio.create_task(
        run_coordinator(
            replace(SPEC, dp=dp),
            run_dir=tmp_path / "run",
            learner=sgd_learner(_model, seed=0),
            enrollment=OPEN,
            port=port,
            insecure=True,
            linger_s=0.5,
        )
    )
    policy = ClientPolicy(allow_plaintext=True)
    with caplog.at_level(logging.INFO, logger="veilfl"):
        await asyncio.gather(
            *(
                run_client(url, sgd_learner(_model, seed=i), _data(i), policy=policy)
                for i in range(2)
            )
        )
        history = await asyncio.wait_for(coordinator, 30)

    assert [m.round_id for m in history] == [1, 2]
    messages = [record.getMessage() for record in caplog.records]
    advice = next(i for i, m in enumerate(messages) if m.startswith("noise advisor: DP-FedAvg"))
    # d = 10 parameters, z = 1, 2 clients a round: ratio sqrt(10) / 2, under 4.
    assert f"2 clients a round: noise-to-signal {math.sqrt(10) / 2:.1f}" in messages[advice]
    assert "fine" in messages[advice]
    first_round = next(i for i, m in enumerate(messages) if m.startswith("round complete"))
    assert advice < first_round
