"""An aggregator rebuilt from its on-disk spool after a crash: same shares, same sum,
and still only one participant list and one verification query per round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.contributions import seal
from tests.run_descriptions import secure_run

from veilfl.aggregator.service import AggregatorService
from veilfl.aggregator.share_spool import FileShareArchive
from veilfl.crypto.keys import generate_keypair
from veilfl.crypto.shamir import Share
from veilfl.errors import ProtocolError, StorageError
from veilfl.protocol.messages import RunInfo
from veilfl.secagg.aggregator_node import AggregatorNode
from veilfl.secagg.commitment import Commitment, CommitmentCertificate
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout

KEYS = [generate_keypair() for _ in range(2)]
PINS = [key.fingerprint for key in KEYS]
CONFIG = SecureAggregationConfig(threshold=2, num_aggregators=2, max_samples_per_client=10)
D = 6
RUN = "run-r"
PEERS = {j: KEYS[j - 1].signing_public_bytes for j in (1, 2)}


def _envelope(client: str, round_id: int = 1) -> bytes:
    sealed = seal(
        CONFIG,
        KEYS,
        run_id=RUN,
        round_id=round_id,
        client_id=client,
        update=np.linspace(-0.5, 0.5, D) * (len(client) + 1),
    )
    return sealed[0].envelope


def _node(spool: Path) -> AggregatorNode:
    return AggregatorNode(
        index=1,
        keypair=KEYS[0],
        run_id=RUN,
        layout=ContributionLayout(D, CONFIG),
        peers=PEERS,
        archive_for_round=lambda r: FileShareArchive(spool / f"round-{r}"),
        min_participants=2,
    )


def _certificate(participants: list[str], round_id: int = 1) -> CommitmentCertificate:
    """Both aggregators' signatures (m = 2: the majority is both)."""
    commitment = Commitment.of(RUN, round_id, participants)
    return CommitmentCertificate(
        commitment, {j: KEYS[j - 1].sign(commitment.message()) for j in (1, 2)}
    )


def _aggregate(node: AggregatorNode, participants: list[str]) -> Share:
    node.commit(1, participants)
    return node.aggregate(1, participants, _certificate(participants))


def _rounds(spool: Path) -> list[int]:
    return [int(p.name.removeprefix("round-")) for p in spool.glob("round-*")]


def test_a_rebuilt_aggregator_gives_the_uninterrupted_aggregate(tmp_path: Path) -> None:
    envelopes = {c: _envelope(c) for c in ("ann", "bo", "cy")}
    steady = _node(tmp_path / "steady")
    crashed = _node(tmp_path / "crashed")
    for client, envelope in envelopes.items():
        steady.receive(1, client, envelope)
        crashed.receive(1, client, envelope)
    del crashed  # the process dies; only the spool is left
    rebuilt = _node(tmp_path / "crashed")
    assert rebuilt.restore(_rounds(tmp_path / "crashed")) == 1
    assert rebuilt.open_rounds == {1: frozenset(envelopes)}
    assert rebuilt.receive(1, "ann", envelopes["ann"]).duplicate  # still counted once
    expected = _aggregate(steady, ["ann", "cy"])
    np.testing.assert_array_equal(_aggregate(rebuilt, ["ann", "cy"]).values, expected.values)


def test_a_rebuilt_aggregator_still_commits_to_only_one_participant_list(
    tmp_path: Path,
) -> None:
    node = _node(tmp_path)
    for client in ("ann", "bo", "cy"):
        node.receive(1, client, _envelope(client))
    first = _aggregate(node, ["ann", "bo", "cy"])
    rebuilt = _node(tmp_path)
    rebuilt.restore(_rounds(tmp_path))
    with pytest.raises(ProtocolError, match="another participant list"):
        rebuilt.commit(1, ["ann", "bo"])  # the difference would reveal cy's update
    with pytest.raises(ProtocolError, match="another participant list"):
        rebuilt.aggregate(1, ["ann", "bo"], _certificate(["ann", "bo"]))
    np.testing.assert_array_equal(_aggregate(rebuilt, ["ann", "bo", "cy"]).values, first.values)
    with pytest.raises(ProtocolError, match="already"):
        rebuilt.receive(1, "dee", _envelope("dee"))


def test_a_commitment_survives_a_crash_before_any_sum_left(tmp_path: Path) -> None:
    node = _node(tmp_path)
    for client in ("ann", "bo", "cy"):
        node.receive(1, client, _envelope(client))
    node.commit(1, ["ann", "bo", "cy"])
    rebuilt = _node(tmp_path)
    rebuilt.restore(_rounds(tmp_path))
    with pytest.raises(ProtocolError, match="another participant list"):
        rebuilt.commit(1, ["ann", "bo"])


def test_a_rebuilt_aggregator_answers_only_the_query_it_answered_before(
    tmp_path: Path,
) -> None:
    node = _node(tmp_path)
    for client in ("ann", "bo"):
        node.receive(1, client, _envelope(client))
    before = node.verify(1, ["ann", "bo"], b"\x07" * 32)
    rebuilt = _node(tmp_path)
    rebuilt.restore(_rounds(tmp_path))
    with pytest.raises(ProtocolError, match="another query"):
        rebuilt.verify(1, ["ann", "bo"], b"\x08" * 32)
    again = rebuilt.verify(1, ["ann", "bo"], b"\x07" * 32)
    assert {c: a.to_bytes() for c, a in again.items()} == {
        c: a.to_bytes() for c, a in before.items()
    }


def test_only_the_latest_round_is_restored_and_older_ones_are_cleared(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.receive(1, "ann", _envelope("ann"))
    FileShareArchive(tmp_path / "round-0")
    (tmp_path / "round-1" / ".unfinished.share.tmp").write_bytes(b"torn")  # a crash mid-write
    rebuilt = _node(tmp_path)
    assert rebuilt.restore(_rounds(tmp_path)) == 1
    assert rebuilt.open_rounds == {1: frozenset({"ann"})}
    assert not (tmp_path / "round-0").exists()
    assert rebuilt.restore([]) is None


def test_a_damaged_share_file_is_a_storage_error(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.receive(1, "ann", _envelope("ann"))
    (share_file,) = (tmp_path / "round-1").glob("*.share")
    share_file.write_bytes(share_file.read_bytes()[:-5])
    with pytest.raises(StorageError, match="damaged"):
        _node(tmp_path).restore([1])


def _run(run_id: str = RUN) -> RunInfo:
    return secure_run(run_id, config=CONFIG, keys=KEYS[:2], model_size=D)


async def test_the_service_takes_its_round_back_but_not_another_runs(tmp_path: Path) -> None:
    first = AggregatorService(
        index=1, keypair=KEYS[0], spool=tmp_path, min_participants=2, peer_fingerprints=PINS
    )
    first.attach(_run())
    for client in ("ann", "bo"):
        await first.receive(1, client, _envelope(client))
    restarted = AggregatorService(
        index=1, keypair=KEYS[0], spool=tmp_path, min_participants=2, peer_fingerprints=PINS
    )
    restarted.attach(_run())
    assert restarted.status()["rounds"] == {"1": 2}
    other = AggregatorService(
        index=1, keypair=KEYS[0], spool=tmp_path, min_participants=2, peer_fingerprints=PINS
    )
    other.attach(_run("another-run"))
    assert other.status()["rounds"] == {}
    assert not list(tmp_path.glob("round-*"))
