"""Buffered runs: a buffer issues only as many tickets as it has places, and clients
that find no place wait for one at the coordinator (off its lock) instead of doing
the hand-in's work for a buffer that will close without them."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from tests.signed_clients import enroll, open_access
from tests.tiny_coordinator import MemoryCommands, tiny_description

from veilfl.errors import BufferFullError, RoundMismatchError
from veilfl.protocol.aggregation import PlaintextAggregation
from veilfl.protocol.buffered import BufferConfig, BufferedMachine
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.messages import UpdateHeader
from veilfl.server.app import create_app
from veilfl.server.service import CoordinatorService
from veilfl.strategy.buffered import FedBuff
from veilfl.tensors import spec_of
from veilfl.wire.tensor_codec import encode_weights

pytestmark = pytest.mark.timeout(60)
START = {"w": np.zeros(4, np.float32)}


def _service(*, buffer_size: int, ticket_wait_s: float, versions: int = 5) -> CoordinatorService:
    core = Coordinator(
        schedule=BufferedMachine(
            BufferConfig(buffer_size=buffer_size, max_staleness=5, max_versions=versions)
        ),
        spec=spec_of(START),
        initial_weights=START,
        aggregation=PlaintextAggregation(spec_of(START)),
        strategy=FedBuff(),
        round_timeout_s=60.0,
    )
    buffer = BufferConfig(buffer_size=buffer_size, max_staleness=5, max_versions=versions)
    return CoordinatorService(
        core,
        description=tiny_description(core, buffer=buffer),
        performer=MemoryCommands(),
        max_update_bytes=1 << 20,
        ticket_wait_s=ticket_wait_s,
    )


async def _hand_in(service: CoordinatorService, client: str, buffer_id: int) -> None:
    header = UpdateHeader(
        client_id=client, round_id=buffer_id, base_version=0, num_samples=1, loss=0.0
    )
    body = encode_weights({"w": np.ones(4, np.float32)}, metadata=header.to_metadata())
    _, accepted = await service.submit_update(body, round_id=buffer_id, sender=client)
    assert accepted


async def test_clients_without_a_place_wait_first_come_first_served_until_one_frees() -> None:
    service = _service(buffer_size=2, ticket_wait_s=30.0)
    for client in "abcde":
        await service.join(client)
    await service.start(tick_interval_s=0.05)
    try:
        held = [await service.ticket(c, trained_version=0) for c in "ab"]
        assert {t.buffer_id for t in held} == {1}
        waiting = {}
        for client in "cde":  # in this order
            waiting[client] = asyncio.create_task(service.ticket(client, trained_version=0))
            await asyncio.sleep(0.05)
        assert not any(task.done() for task in waiting.values())  # queued, not refused
        for client in "ab":
            await _hand_in(service, client, 1)
        # Buffer 1 is applied; buffer 2 has two places: the first two in line get them.
        first_two = await asyncio.wait_for(asyncio.gather(waiting["c"], waiting["d"]), 10)
        assert [t.buffer_id for t in first_two] == [2, 2]
        assert not waiting["e"].done()
        await _hand_in(service, "c", 2)  # accepted: its place stays taken by its update
        await asyncio.sleep(0.2)
        assert not waiting["e"].done()
    finally:
        waiting["e"].cancel()
        await service.stop()


async def test_a_client_still_without_a_place_is_told_over_http_when_to_ask_again() -> None:
    service = _service(buffer_size=1, ticket_wait_s=0.3)
    app = create_app(service, metrics=lambda: [], access=open_access("r", rate_limit=None))
    transport = httpx.ASGITransport(app=app)
    await service.start(tick_interval_s=0.05)
    try:
        first, first_http = await enroll(transport, "r", name="first")
        second, second_http = await enroll(transport, "r", name="second")
        async with first_http, second_http:
            for client, http in ((first, first_http), (second, second_http)):
                assert (await http.get(f"/v1/clients/{client}/task")).json()["kind"] == "train"
            took = await first_http.post(
                "/v1/tickets", json={"client_id": first, "trained_version": 0}
            )
            assert took.status_code == 200 and took.json()["buffer_id"] == 1
            refused = await second_http.post(
                "/v1/tickets", json={"client_id": second, "trained_version": 0}
            )
        assert refused.status_code == 409
        assert refused.json()["error"] == "BufferFullError"
        assert "ask again" in refused.json()["message"]
        assert int(refused.headers["Retry-After"]) >= 1
    finally:
        await service.stop()


async def test_a_waiting_client_that_goes_away_passes_its_place_on() -> None:
    service = _service(buffer_size=1, ticket_wait_s=30.0)
    for client in "abc":
        await service.join(client)
    await service.start(tick_interval_s=0.05)
    try:
        await service.ticket("a", trained_version=0)
        gone = asyncio.create_task(service.ticket("b", trained_version=0))
        stays = asyncio.create_task(service.ticket("c", trained_version=0))
        await asyncio.sleep(0.1)
        gone.cancel()  # b's connection closed while it waited first in line
        await _hand_in(service, "a", 1)
        ticket = await asyncio.wait_for(stays, timeout=10)
        assert ticket.buffer_id == 2
        with pytest.raises(BufferFullError):
            service.core.ticket("b", trained_version=0, now=0.0)
    finally:
        await service.stop()


async def test_waiting_clients_hear_at_once_that_the_run_is_over() -> None:
    service = _service(buffer_size=1, ticket_wait_s=30.0, versions=1)
    for client in "ab":
        await service.join(client)
    await service.start(tick_interval_s=0.05)
    try:
        await service.ticket("a", trained_version=0)
        waiting = asyncio.create_task(service.ticket("b", trained_version=0))
        await asyncio.sleep(0.1)
        await _hand_in(service, "a", 1)  # the last buffer: the run is done
        with pytest.raises(RoundMismatchError, match="run is over"):
            await asyncio.wait_for(waiting, timeout=5)  # not the 30 s wait
    finally:
        await service.stop()
