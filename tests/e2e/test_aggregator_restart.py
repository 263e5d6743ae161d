"""An aggregator SIGKILLed mid-round and restarted on the same port.

With its spool on disk (``--spool``) it comes back holding every share it had
acknowledged and the round completes even with t = m, also when it was down just as
the round closed (the coordinator retries). Without a spool it comes back empty: the
round completes from the t aggregators that kept their shares, or, with t = m, is
abandoned after its timeout and run again under a new round id.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from tests.e2e.secure_fleet import SecureFleet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _two_of_two_with_spools(folder: Path, stack: ExitStack) -> SecureFleet:
    """t = m = 2, so no aggregator can be routed around; each spools to disk."""
    return SecureFleet(
        folder,
        stack,
        clients=3,
        aggregators=2,
        threshold=2,
        min_clients=3,
        aggregator_flags={j: ["--spool", str(folder / f"spool-{j}")] for j in (1, 2)},
    )


def test_a_restarted_aggregator_recovers_its_shares_from_its_spool(tmp_path: Path) -> None:
    with ExitStack() as stack:
        fleet = _two_of_two_with_spools(tmp_path, stack)
        first, second, third = fleet.clients
        for client in (first, second):
            fleet.report(client, fleet.upload(client, [1, 2]))
        fleet.kill_aggregator(2)
        fleet.aggregators[1] = fleet.start_aggregator(2)
        status = fleet.http.get(f"{fleet.aggregator_urls[1]}/v1/status").json()
        assert status["rounds"] == {"1": 2}  # both shares are back
        fleet.report(third, fleet.upload(third, [1, 2]))
        final = fleet.final_model()
    fleet.assert_is_weighted_mean_of(final, [first, second, third])


def test_a_round_that_closes_while_an_aggregator_is_down_is_retried(tmp_path: Path) -> None:
    with ExitStack() as stack:
        fleet = _two_of_two_with_spools(tmp_path, stack)
        receipts = {client: fleet.upload(client, [1, 2]) for client in fleet.clients}
        for client in fleet.clients[:2]:
            fleet.report(client, receipts[client])
        fleet.kill_aggregator(2)
        last = fleet.clients[2]
        fleet.report(last, receipts[last])  # the round closes now; aggregator 2 is down
        assert fleet.http.get("/v1/status").json()["model_version"] == 0
        fleet.aggregators[1] = fleet.start_aggregator(2)
        final = fleet.final_model()
    fleet.assert_is_weighted_mean_of(final, fleet.clients)
    log = (tmp_path / "server.log").read_text()
    assert log.count("round 1 cannot be aggregated yet") == 1  # once per change, not per tick


def test_an_aggregator_restarted_without_its_shares_is_routed_around(tmp_path: Path) -> None:
    with ExitStack() as stack:
        fleet = SecureFleet(tmp_path, stack, clients=4, aggregators=3, threshold=2, min_clients=4)
        clients = fleet.clients
        for client in clients[:2]:
            fleet.report(client, fleet.upload(client, [1, 2, 3]))
        fleet.kill_aggregator(3)
        fleet.aggregators[2] = fleet.start_aggregator(3)  # a temporary spool: nothing back
        for client in clients[2:]:
            fleet.report(client, fleet.upload(client, [1, 2, 3]))
        final = fleet.final_model()
    fleet.assert_is_weighted_mean_of(final, clients)


def test_a_round_that_can_never_be_aggregated_is_run_again(tmp_path: Path) -> None:
    with ExitStack() as stack:
        fleet = SecureFleet(tmp_path, stack, clients=3, aggregators=2, threshold=2, min_clients=3)
        receipts = {client: fleet.upload(client, [1, 2]) for client in fleet.clients}
        # Aggregator 2 comes back without its shares (no spool) before the round closes.
        fleet.kill_aggregator(2)
        fleet.aggregators[1] = fleet.start_aggregator(2)
        for client in fleet.clients:
            fleet.report(client, receipts[client])
        deadline = time.monotonic() + 60
        while fleet.http.get("/v1/status").json()["round_id"] != 2:  # abandoned after 15 s
            assert time.monotonic() < deadline, "round 1 was never abandoned"
            time.sleep(0.5)
        fleet.take_tasks(round_id=2)
        for client in fleet.clients:
            fleet.report(client, fleet.upload(client, [1, 2], round_id=2), round_id=2)
        final = fleet.final_model()
    fleet.assert_is_weighted_mean_of(final, fleet.clients)
    assert "round 1 abandoned" in (tmp_path / "server.log").read_text()
    assert "round 2 runs it again" in (tmp_path / "server.log").read_text()
