"""Checks on the public run description happen before the client spends its token."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
from tests.run_descriptions import secure_run

from veilfl.auth.identity import Identity
from veilfl.client.http_client import RetryPolicy, run_client
from veilfl.client.uploads import check_run_before_enrolling
from veilfl.crypto.keys import generate_keypair
from veilfl.errors import ConfigurationError, PolicyRefusal
from veilfl.ml.datasets import synthetic_dataset
from veilfl.ml.learner import mnist_learner
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.messages import RunInfo
from veilfl.protocol.run_description import RunDescription
from veilfl.protocol.run_spec import RunSpec, SecureSettings
from veilfl.protocol.sync_round import RoundConfig
from veilfl.secagg.config import SecureAggregationConfig

CONFIG = SecureAggregationConfig(threshold=2, num_aggregators=2, max_samples_per_client=10)


def _run(secure: bool, model_name: str = "simple-cnn") -> RunInfo:
    described = secure_run(
        "r1",
        config=CONFIG,
        keys=[generate_keypair() for _ in range(2)],
        model_size=3,
        urls=["https://127.0.0.1:9001", "https://127.0.0.1:9002"],
    )
    return replace(described, model_name=model_name, secure=described.secure if secure else None)


class _Coordinator(httpx.AsyncBaseTransport):
    """Serves only the run description; remembers every other request."""

    def __init__(self, run: RunInfo) -> None:
        self.run = run
        self.others: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/v1/run":
            spec = RunSpec(
                model_name=self.run.model_name,
                rounds=RoundConfig(num_rounds=1, clients_per_round=2),
                secure=(
                    None
                    if self.run.secure is None
                    else SecureSettings(self.run.secure.config, self.run.secure.aggregators)
                ),
                model_size=3,
            )
            return httpx.Response(200, json=RunDescription(spec).to_json())
        self.others.append(f"{request.method} {request.url.path}")
        return httpx.Response(500, json={"message": "not in this test"})


async def _start_client(coordinator: _Coordinator, **kwargs: object) -> None:
    await run_client(
        "https://coordinator.test",
        mnist_learner(),
        synthetic_dataset(num_examples=4, seed=0),
        enrollment_token="a-one-time-token",
        retry=RetryPolicy(max_attempts=1),
        transport=coordinator,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_a_wrong_fingerprint_is_refused_before_the_token_is_spent() -> None:
    run = _run(secure=True)
    coordinator = _Coordinator(run)
    assert run.secure is not None
    aggregators = run.secure.aggregators
    wrong = {1: aggregators[0].fingerprint, 2: "0" * 32}
    with pytest.raises(PolicyRefusal) as caught:
        await _start_client(coordinator, policy=ClientPolicy(aggregator_fingerprints=wrong))
    assert str(caught.value) == (
        f"Refused by --aggregator-fingerprint: this client requires aggregator 2 with "
        f"fingerprint {'0' * 32}, and the coordinator's public run description announces "
        f"fingerprint {aggregators[1].fingerprint}; nothing was sent."
    )
    assert coordinator.others == []  # no enrollment request was sent


async def test_another_model_is_refused_before_the_token_is_spent() -> None:
    coordinator = _Coordinator(_run(secure=False, model_name="my_project.learner:learner"))
    with pytest.raises(ConfigurationError) as caught:
        await _start_client(coordinator, model_name="simple-cnn")
    assert str(caught.value) == (
        "The coordinator's run trains the model my_project.learner:learner, not simple-cnn; "
        "start this client with --learner my_project.learner:learner."
    )
    assert coordinator.others == []


async def test_matching_fingerprints_and_model_pass() -> None:
    run = _run(secure=True)
    assert run.secure is not None
    right = {a.index: a.fingerprint for a in run.secure.aggregators}
    pinned = ClientPolicy(aggregator_fingerprints=right, min_cohort=1)
    assert await check_run_before_enrolling(run, model_name="simple-cnn", policy=pinned) == ()
    trusting = ClientPolicy(trust_coordinator_keys=True, min_cohort=1)
    assert await check_run_before_enrolling(run, model_name=None, policy=trusting) == ()


async def test_pinned_fingerprints_refuse_a_run_without_secure_aggregation() -> None:
    with pytest.raises(PolicyRefusal, match="no secure aggregation"):
        await check_run_before_enrolling(
            _run(secure=False),
            model_name=None,
            policy=ClientPolicy(aggregator_fingerprints={1: "ab"}, min_threshold=1),
        )


async def test_a_401_from_an_aggregator_ends_the_client_instead_of_retraining() -> None:
    import numpy as np

    from veilfl.client.uploads import HttpDelivery
    from veilfl.errors import AuthenticationError
    from veilfl.ml.learner import LocalUpdate
    from veilfl.protocol.hand_in import HandInContext
    from veilfl.transport.peer import Peer

    run = _run(secure=True)
    refusing = httpx.MockTransport(
        lambda request: httpx.Response(401, json={"message": "The admission is for another run."})
    )
    async with httpx.AsyncClient(base_url="https://coordinator.test", transport=refusing) as http:
        delivery = HttpDelivery(
            Peer(http, RetryPolicy(max_attempts=1)),
            run,
            identity=Identity.generate(),
            policy=ClientPolicy(trust_coordinator_keys=True, min_cohort=1),
            transport=refusing,
        )
        update = LocalUpdate(delta={"w": np.zeros(3, np.float32)}, num_samples=3, mean_loss=1.0)
        with pytest.raises(AuthenticationError) as caught:
            await delivery.deliver(
                update,
                context=HandInContext(
                    client_id="c1",
                    run=run,
                    round_id=1,
                    base_version=0,
                    admission="an-admission",
                ),
            )
        await delivery.close()
    message = str(caught.value)
    assert "refused this client's share (HTTP 401: The admission is for another run.)" in message
    assert "Restart the aggregators against this coordinator, then this client." in message
    assert "\n" not in message
