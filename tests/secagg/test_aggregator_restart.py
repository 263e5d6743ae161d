"""An aggregator rebuilt from its on-disk spool after a crash: same shares, same sum,
and still only one participant list per round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.run_descriptions import secure_run

from veilfl.aggregator.service import AggregatorService
from veilfl.aggregator.share_spool import FileShareArchive
from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.keys import generate_keypair
from veilfl.errors import ProtocolError, StorageError
from veilfl.protocol.messages import RunInfo
from veilfl.secagg.aggregator_node import AggregatorNode
from veilfl.secagg.client_shares import seal_update
from veilfl.secagg.config import EXTRA_COORDINATES, SecureAggregationConfig

KEYS = [generate_keypair() for _ in range(2)]
CONFIG = SecureAggregationConfig(threshold=2, num_aggregators=2, max_clients=8)
D = 6
LENGTH = D + EXTRA_COORDINATES
RUN = "run-r"


def _envelope(client: str, round_id: int = 1) -> bytes:
    sealed = seal_update(
        np.linspace(-0.5, 0.5, D).astype(np.float32) * (len(client) + 1),
        num_samples=10,
        loss=0.5,
        config=CONFIG,
        public_keys=[k.public_key for k in KEYS],
        run_id=RUN,
        round_id=round_id,
        client_id=client,
        rng=CsprngStream(),
    )
    return sealed[0].envelope


def _node(spool: Path) -> AggregatorNode:
    return AggregatorNode(
        index=1,
        keypair=KEYS[0],
        run_id=RUN,
        vector_length=LENGTH,
        archive_for_round=lambda r: FileShareArchive(
            spool / f"round-{r}", vector_length=LENGTH, field=MERSENNE_31
        ),
        min_participants=2,
    )


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
    expected = steady.aggregate(1, ["ann", "cy"])
    np.testing.assert_array_equal(rebuilt.aggregate(1, ["ann", "cy"]).values, expected.values)


def test_a_rebuilt_aggregator_still_answers_only_one_participant_list(tmp_path: Path) -> None:
    node = _node(tmp_path)
    for client in ("ann", "bo", "cy"):
        node.receive(1, client, _envelope(client))
    first = node.aggregate(1, ["ann", "bo", "cy"])
    rebuilt = _node(tmp_path)
    rebuilt.restore(_rounds(tmp_path))
    with pytest.raises(ProtocolError, match="another participant list"):
        rebuilt.aggregate(1, ["ann", "bo"])  # the difference would reveal cy's share
    np.testing.assert_array_equal(rebuilt.aggregate(1, ["ann", "bo", "cy"]).values, first.values)
    with pytest.raises(ProtocolError, match="already aggregated"):
        rebuilt.receive(1, "dee", _envelope("dee"))


def test_only_the_latest_round_is_restored_and_older_ones_are_cleared(tmp_path: Path) -> None:
    node = _node(tmp_path)
    node.receive(1, "ann", _envelope("ann"))
    FileShareArchive(tmp_path / "round-0", vector_length=LENGTH, field=MERSENNE_31)
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
    return secure_run(run_id, config=CONFIG, keys=KEYS[:2], vector_length=LENGTH)


async def test_the_service_takes_its_round_back_but_not_another_runs(tmp_path: Path) -> None:
    first = AggregatorService(index=1, keypair=KEYS[0], spool=tmp_path, min_participants=2)
    first.attach(_run())
    for client in ("ann", "bo"):
        await first.receive(1, client, _envelope(client))
    restarted = AggregatorService(index=1, keypair=KEYS[0], spool=tmp_path, min_participants=2)
    restarted.attach(_run())
    assert restarted.status()["rounds"] == {"1": 2}
    other = AggregatorService(index=1, keypair=KEYS[0], spool=tmp_path, min_participants=2)
    other.attach(_run("another-run"))
    assert other.status()["rounds"] == {}
    assert not list(tmp_path.glob("round-*"))
