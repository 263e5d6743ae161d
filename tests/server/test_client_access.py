"""Who may use the coordinator: enrollment by token or allow-list, signed requests,
replays, acting for others, rate limits, and enrollments that survive a restart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from tests.signed_clients import enroll, signed_client
from tests.tiny_coordinator import sync_core, sync_service

from veilfl.auth.enrollment import EnrollmentPolicy, generate_tokens
from veilfl.auth.identity import Identity
from veilfl.auth.rate_limit import RateLimit
from veilfl.protocol.messages import UpdateHeader
from veilfl.server.app import create_app
from veilfl.server.client_access import ClientAccess
from veilfl.server.run_store import RunStore
from veilfl.server.service import CoordinatorService
from veilfl.transport.signing import for_round
from veilfl.wire.tensor_codec import encode_weights

pytestmark = pytest.mark.timeout(60)
RUN = "run-a"
START = {"w": np.zeros(4, np.float32)}
TOKENS = generate_tokens(2)
COORDINATOR = Identity.generate()


def _app(
    access: ClientAccess, start: dict[str, np.ndarray] = START
) -> tuple[FastAPI, CoordinatorService]:
    core = sync_core(start, num_rounds=3, clients_per_round=1, min_clients=1, poll_interval_s=0.01)
    service = sync_service(core, max_update_bytes=1 << 23)
    return create_app(service, metrics=lambda: [], access=access), service


def _access(store: RunStore | None, **kwargs: object) -> ClientAccess:
    options: dict[str, object] = {
        "policy": EnrollmentPolicy.from_tokens(TOKENS),
        "rate_limit": None,
        **kwargs,
    }
    return ClientAccess.create(run_id=RUN, coordinator=COORDINATOR, store=store, **options)  # type: ignore[arg-type]


Factory = Callable[..., httpx.ASGITransport]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Factory]:
    stores: list[RunStore] = []

    def make(**kwargs: object) -> httpx.ASGITransport:
        store = RunStore(tmp_path / "run.sqlite")
        stores.append(store)
        app, _ = _app(_access(store, **kwargs))
        return httpx.ASGITransport(app=app)

    yield make
    for store in stores:
        store.close()


def _update(client_id: str, round_id: int = 1, size: int = 4) -> bytes:
    header = UpdateHeader(
        client_id=client_id, round_id=round_id, base_version=0, num_samples=1, loss=0.5
    )
    return encode_weights({"w": np.ones(size, np.float32)}, metadata=header.to_metadata())


async def _status(transport: httpx.ASGITransport) -> object:
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as anonymous:
        return (await anonymous.get("/v1/status")).json()


async def test_a_token_enrolls_one_key_once(serve: Factory) -> None:
    transport = serve()
    alice_key = Identity.generate()
    alice_id, alice = await enroll(transport, RUN, token=TOKENS[0], identity=alice_key)
    _, thief = signed_client(transport, RUN)
    async with thief:
        stolen = await thief.post(
            "/v1/clients",
            json={"public_key": Identity.generate().public_key_text, "enrollment_token": TOKENS[0]},
        )
    assert stolen.status_code == 401  # signed by another key than the one it enrolls
    outsider = Identity.generate()
    _, other = signed_client(transport, RUN, outsider)
    async with other:
        reused = await other.post(
            "/v1/clients",
            json={"public_key": outsider.public_key_text, "enrollment_token": TOKENS[0]},
        )
        assert reused.status_code == 403 and "already used" in reused.json()["message"]
        no_token = await other.post("/v1/clients", json={"public_key": outsider.public_key_text})
        assert no_token.status_code == 403 and "allow-list" in no_token.json()["message"]
    async with alice:
        again = await alice.post(
            "/v1/clients",
            json={"public_key": alice._auth._identity.public_key_text},  # type: ignore[union-attr]
        )
        assert again.status_code == 201 and again.json()["client_id"] == alice_id


async def test_enrollments_and_spent_tokens_survive_a_restart(serve: Factory) -> None:
    identity = Identity.generate()
    client_id, first = await enroll(serve(), RUN, token=TOKENS[1], identity=identity)
    await first.aclose()
    restarted = serve()  # a new ClientAccess over the same run database
    _, client = signed_client(restarted, RUN, identity)
    async with client:
        # Its key is still enrolled: it joins again without a token (the token is spent).
        rejoin = await client.post("/v1/clients", json={"public_key": identity.public_key_text})
        assert rejoin.status_code == 201 and rejoin.json()["client_id"] == client_id
        task = await client.get(f"/v1/clients/{client_id}/task")
        assert task.status_code == 200, task.text
    stranger = Identity.generate()
    _, other = signed_client(restarted, RUN, stranger)
    async with other:
        reused = await other.post(
            "/v1/clients",
            json={"public_key": stranger.public_key_text, "enrollment_token": TOKENS[1]},
        )
    assert reused.status_code == 403


async def test_an_allow_list_admits_only_listed_keys(serve: Factory) -> None:
    listed = Identity.generate()
    transport = serve(policy=EnrollmentPolicy(allowed_keys=frozenset({listed.public_key})))
    _, client = await enroll(transport, RUN, identity=listed)
    await client.aclose()
    unlisted = Identity.generate()
    _, other = signed_client(transport, RUN, unlisted)
    async with other:
        refused = await other.post("/v1/clients", json={"public_key": unlisted.public_key_text})
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("method", "path", "round_id"),
    [
        ("GET", "/v1/clients/{id}/task", None),
        ("GET", "/v1/model", None),
        ("POST", "/v1/rounds/1/updates", 1),
        ("POST", "/v1/rounds/1/receipts", 1),
        ("POST", "/v1/tickets", None),
    ],
)
async def test_every_client_endpoint_refuses_unsigned_requests_and_changes_nothing(
    serve: Factory, method: str, path: str, round_id: int | None
) -> None:
    transport = serve()
    client_id, client = await enroll(transport, RUN, token=TOKENS[0])
    await client.aclose()
    before = await _status(transport)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as anonymous:
        body = {"client_id": client_id, "base_version": 0, "aggregators": [1], "trained_version": 0}
        kwargs: dict[str, object] = (
            {"content": _update(client_id)} if path.endswith("updates") else {"json": body}
        )
        response = await anonymous.request(
            method,
            path.format(id=client_id),
            **(kwargs if method == "POST" else {}),  # type: ignore[arg-type]
        )
    assert response.status_code == 401, response.text
    assert "must be signed" in response.json()["message"]
    assert await _status(transport) == before


async def test_a_client_cannot_act_for_another(serve: Factory) -> None:
    transport = serve()
    alice_id, alice = await enroll(transport, RUN, token=TOKENS[0])
    bob_id, bob = await enroll(transport, RUN, token=TOKENS[1])
    async with alice, bob:
        before = await _status(transport)
        task = await bob.get(f"/v1/clients/{alice_id}/task")
        assert task.status_code == 403 and bob_id in task.json()["message"]
        assert await _status(transport) == before
        assert (await alice.get(f"/v1/clients/{alice_id}/task")).status_code == 200
        forged = await bob.post(
            "/v1/rounds/1/updates", content=_update(alice_id), extensions=for_round(1)
        )
        assert forged.status_code == 403
        wrong_round = await alice.post(
            "/v1/rounds/1/updates", content=_update(alice_id), extensions=for_round(2)
        )
        assert wrong_round.status_code == 403


async def test_a_replayed_upload_is_refused_and_changes_nothing(serve: Factory) -> None:
    transport = serve()
    client_id, client = await enroll(transport, RUN, token=TOKENS[0])
    async with client:
        await client.get(f"/v1/clients/{client_id}/task")
        first = await client.post(
            "/v1/rounds/1/updates", content=_update(client_id), extensions=for_round(1)
        )
        assert first.status_code == 202
        after_first = await _status(transport)
        replay = await client.send(first.request, auth=httpx.USE_CLIENT_DEFAULT)
        assert replay.status_code in (202, 401)  # re-signed by the client: a duplicate
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as attacker:
            captured = await attacker.send(first.request)
        assert captured.status_code == 401 and "replay" in captured.json()["message"]
    assert await _status(transport) == after_first


async def test_a_client_over_its_rate_limit_gets_429_with_retry_after(serve: Factory) -> None:
    transport = serve(rate_limit=RateLimit(per_second=1, burst=3))
    _, client = await enroll(transport, RUN, token=TOKENS[0])  # spends one
    async with client:
        codes = [(await client.get("/v1/model")).status_code for _ in range(3)]
    assert codes[:2] == [200, 200] and codes[2] == 429


async def test_a_large_body_is_hashed_off_the_event_loop_and_still_verified() -> None:
    big = {"w": np.zeros(600_000, np.float32)}  # a 2.4 MB update: hashed in a thread
    app, service = _app(_access(None, policy=EnrollmentPolicy(open=True)), start=big)
    transport = httpx.ASGITransport(app=app)
    client_id, client = await enroll(transport, RUN)
    async with client:
        await client.get(f"/v1/clients/{client_id}/task")
        body = _update(client_id, size=600_000)
        accepted = await client.post("/v1/rounds/1/updates", content=body, extensions=for_round(1))
        assert accepted.status_code == 202, accepted.text
        tampered = accepted.request
        tampered.stream = httpx.ByteStream(body[:-1] + b"\x00")  # same signature, other body
        forged = await client.send(tampered, auth=None)
    assert forged.status_code == 401 and "does not match" in forged.json()["message"]
    assert service.global_weights()["w"].shape == (600_000,)
