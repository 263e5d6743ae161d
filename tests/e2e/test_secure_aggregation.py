"""Secure aggregation over loopback with 4 aggregator processes, one killed mid-round.

The test plays the clients itself, so it knows every delta: the model the coordinator
reconstructs must equal the plaintext weighted mean within the quantisation bound,
although aggregator 4 died halfway through the uploads and one client dropped out
after reaching only aggregator 1. With m = 4, t = 2 the certificate quorum is 3, so
the three survivors still certify the list.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
from tests.e2e.secure_fleet import SecureFleet

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_round_completes_correctly_with_an_aggregator_killed_mid_round(tmp_path: Path) -> None:
    with ExitStack() as stack:
        fleet = SecureFleet(tmp_path, stack, clients=5, aggregators=4, threshold=2, min_clients=3)
        clients = fleet.clients
        # Two clients reach all four aggregators ...
        for client in clients[:2]:
            fleet.report(client, fleet.upload(client, [1, 2, 3, 4]))
        # ... aggregator 4 dies mid-round ...
        fleet.kill_aggregator(4)
        # ... two more clients reach only the survivors ...
        for client in clients[2:4]:
            acknowledged = fleet.upload(client, [1, 2, 3, 4])
            assert acknowledged == [1, 2, 3]
            fleet.report(client, acknowledged)
        # ... and one drops out after reaching aggregator 1 alone (it never reports).
        assert fleet.upload(clients[4], [1]) == [1]
        final = fleet.final_model()
    fleet.assert_is_weighted_mean_of(final, clients[:4])


def test_a_poisoned_update_is_excluded_and_the_round_keeps_the_honest_mean(
    tmp_path: Path,
) -> None:
    with ExitStack() as stack:
        # All 4 are sampled, so the round closes on the 4th report; after the
        # exclusion, 3 (the minimum) are summed.
        fleet = SecureFleet(tmp_path, stack, clients=4, aggregators=3, threshold=2, min_clients=3)
        honest, mallory = fleet.clients[:3], fleet.clients[3]
        for client in honest:
            fleet.report(client, fleet.upload(client, [1, 2, 3]))
        # Every aggregator takes Mallory's envelope (it opens and is well formed) ...
        assert fleet.upload(mallory, [1, 2, 3], poisoned=True) == [1, 2, 3]
        fleet.report(mallory, [1, 2, 3])
        final = fleet.final_model()
        metrics = fleet.http.get("/v1/metrics").json()
    # ... but the joint verification excludes it: the model is the honest mean.
    fleet.assert_is_weighted_mean_of(final, honest)
    log = (tmp_path / "server.log").read_text()
    assert log.count("excluded") == 1 and mallory in log
    (first,) = [m for m in metrics if m["round_id"] == 1]
    assert first["num_clients"] == 3 and first["excluded"] == [mallory]
