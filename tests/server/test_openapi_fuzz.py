"""Property-based API testing (Schemathesis) of the coordinator and aggregator OpenAPI
specs: no request, however malformed, gets a 5xx, and a rejected request changes no
state. Every fuzzed request is signed by an enrolled client (and, at the aggregator,
carries that client's admission to the round in its path, or is signed by the
coordinator), so the fuzzer gets past authentication and reaches validation: the
hostile input of an enrolled client."""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import schemathesis
from hypothesis import HealthCheck, settings
from requests import PreparedRequest
from tests.run_descriptions import secure_run
from tests.signed_clients import open_access
from tests.tiny_coordinator import sync_core, sync_service, tiny_description

from veilfl.aggregator.access import AggregatorAccess
from veilfl.aggregator.service import AggregatorService, create_aggregator_app
from veilfl.auth.admission import ADMISSION_HEADER, RoundAdmission, issue_admission
from veilfl.auth.identity import Identity
from veilfl.auth.signed_request import (
    COORDINATOR_SIGNER,
    SIGNATURE_HEADER,
    SignedRequest,
    aggregator_audience,
    coordinator_audience,
    sign_request,
)
from veilfl.crypto.keys import generate_keypair
from veilfl.protocol.aggregation import PlaintextAggregation
from veilfl.protocol.buffered import BufferConfig, BufferedMachine
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.messages import RunMode
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.server.app import create_app
from veilfl.strategy.buffered import FedBuff
from veilfl.tensors import spec_of
from veilfl.transport.signing import SigningAuth

START = {"w": np.zeros((3, 2), np.float32)}
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
CLIENT = Identity.generate()
COORDINATOR = Identity.generate()
_ROUND_IN_PATH = re.compile(r"/v1/rounds/([0-9]{1,15})/")


class _FuzzSigner:
    """Signs whatever the fuzzer sends, for the round its path names (if any); a
    ``requests`` auth callable, which is what schemathesis's ASGI transport takes.

    Args:
        audience: The server and run.
        signer_for: Which identity and signer id sign a given path.
        admission_for: An admission header value for a round (aggregator shares).
    """

    def __init__(
        self,
        audience: str,
        signer_for: Callable[[str], tuple[Identity, str]],
        admission_for: Callable[[int], str] | None = None,
    ) -> None:
        self._audience = audience
        self._signer_for = signer_for
        self._admission_for = admission_for

    def __call__(self, request: PreparedRequest) -> PreparedRequest:
        path = request.path_url
        found = _ROUND_IN_PATH.match(path)
        round_id = int(found[1]) if found else None
        if self._admission_for is not None and round_id is not None:
            request.headers[ADMISSION_HEADER] = self._admission_for(round_id)
        body = request.body or b""
        identity, signer_id = self._signer_for(path)
        signed = SignedRequest.of(
            self._audience,
            request.method or "GET",
            path,
            body.encode() if isinstance(body, str) else bytes(body),
            round_id,
        )
        request.headers[SIGNATURE_HEADER] = sign_request(
            identity, signed, now_s=time.time(), client_id=signer_id
        )
        return request


def _sync_core() -> Coordinator:
    # No round ever opens, so the background ticker cannot change the state while a
    # request is judged: every change seen comes from the request itself.
    return sync_core(START, num_rounds=2, clients_per_round=1, min_available_clients=10**9)


def _buffered_core() -> Coordinator:
    return Coordinator(
        schedule=BufferedMachine(BufferConfig(buffer_size=2, max_staleness=2, max_versions=3)),
        spec=spec_of(START),
        initial_weights=START,
        aggregation=PlaintextAggregation(spec_of(START)),
        strategy=FedBuff(),
        round_timeout_s=60.0,
    )


def _buffer(mode: RunMode) -> BufferConfig | None:
    if mode is RunMode.SYNC:
        return None
    return BufferConfig(buffer_size=2, max_staleness=2, max_versions=3)


def _coordinator_app(core: Coordinator, mode: RunMode) -> Any:
    service = sync_service(core, description=tiny_description(core, buffer=_buffer(mode)))
    app = create_app(
        service, metrics=lambda: list(core.history), access=open_access("r", rate_limit=None)
    )
    asyncio.run(_enroll(app))
    return app


async def _enroll(app: Any) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://test",
        auth=SigningAuth(CLIENT, coordinator_audience("r")),
    ) as http:
        enrolled = await http.post(
            "/v1/clients", json={"name": "fuzzer", "public_key": CLIENT.public_key_text}
        )
    assert enrolled.status_code == 201, enrolled.text


SYNC_CORE = _sync_core()
BUFFERED_CORE = _buffered_core()
SYNC = schemathesis.openapi.from_asgi("/openapi.json", _coordinator_app(SYNC_CORE, RunMode.SYNC))
BUFFERED = schemathesis.openapi.from_asgi(
    "/openapi.json", _coordinator_app(BUFFERED_CORE, RunMode.FEDBUFF)
)
AS_CLIENT = _FuzzSigner(coordinator_audience("r"), lambda path: (CLIENT, CLIENT.client_id))


def _check(case: Any, state: Any, auth: _FuzzSigner) -> None:
    before = state()
    response = case.call(auth=auth)
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if 400 <= response.status_code < 500:
        assert state() == before, "a rejected request changed the state"
        assert "message" in response.json()


@SYNC.parametrize()
@FUZZ
def test_coordinator_with_rounds_never_fails_and_rejections_change_nothing(case: Any) -> None:
    _check(case, SYNC_CORE.status, AS_CLIENT)


@BUFFERED.parametrize()
@FUZZ
def test_coordinator_with_buffers_never_fails_and_rejections_change_nothing(case: Any) -> None:
    _check(case, BUFFERED_CORE.status, AS_CLIENT)


KEY = generate_keypair()
_AGGREGATOR = AggregatorService(
    index=1,
    keypair=KEY,
    spool=Path(tempfile.mkdtemp()),
    min_participants=2,
    peer_fingerprints=[KEY.fingerprint],
)
AGGREGATOR = schemathesis.openapi.from_asgi(
    "/openapi.json",
    create_aggregator_app(
        _AGGREGATOR,
        coordinator_url=None,
        max_share_bytes=1 << 16,
        access=AggregatorAccess(index=1, rate_limit=None),
        run=secure_run(
            "r",
            config=SecureAggregationConfig(threshold=1, num_aggregators=1),
            keys=[KEY],
            model_size=6,
            coordinator_key=COORDINATOR.public_key_text,
        ),
    ),
)


def _admission(round_id: int) -> str:
    return issue_admission(
        COORDINATOR,
        RoundAdmission(
            run_id="r", round_id=round_id, client_id=CLIENT.client_id, client_key=CLIENT.public_key
        ),
    )


AT_AGGREGATOR = _FuzzSigner(
    aggregator_audience(1, "r"),
    lambda path: (
        (COORDINATOR, COORDINATOR_SIGNER)
        if path.endswith(("/aggregate", "/verify", "/commit", "/holdings"))
        else (CLIENT, CLIENT.client_id)
    ),
    admission_for=_admission,
)


@AGGREGATOR.parametrize()
@FUZZ
def test_aggregator_never_fails_and_rejections_change_nothing(case: Any) -> None:
    _check(case, _AGGREGATOR.status, AT_AGGREGATOR)


def test_the_fuzzers_cover_every_operation() -> None:
    for schema, minimum in ((SYNC, 8), (BUFFERED, 9), (AGGREGATOR, 7)):
        operations = list(schema.get_all_operations())
        assert len(operations) >= minimum
