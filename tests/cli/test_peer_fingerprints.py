"""Aggregators pin their peers: ``veilfl keys`` prints each aggregator's fingerprint
(covering its HPKE and its signing key), ``veilfl aggregator --peer-fingerprint`` takes
them in index order, is required (without it, or the loudly named
``--trust-coordinator-peer-keys``, the aggregator refuses to start) and refuses a run
whose aggregators differ, and the local fleet (``veilfl demo``) passes every aggregator
all of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.run_descriptions import secure_run

from veilfl.aggregator.service import AggregatorService
from veilfl.cli.local_fleet import local_aggregators
from veilfl.cli.main import build_parser, main
from veilfl.crypto.keys import generate_keypair
from veilfl.errors import ConfigurationError
from veilfl.keyfiles import read_public_key
from veilfl.secagg.config import SecureAggregationConfig


def test_keys_prints_each_fingerprint_of_both_public_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "--out", str(tmp_path), "--count", "2"]) == 0
    printed = dict(re.findall(r"aggregator (\d+):.*fingerprint (\S+)", capsys.readouterr().out))
    for index in (1, 2):
        public = read_public_key(tmp_path / f"aggregator-{index}.pub")
        assert printed[str(index)] == public.fingerprint
    assert printed["1"] != printed["2"]
    with pytest.raises(SystemExit):
        main(["keys", "--help"])
    keys_help = " ".join(capsys.readouterr().out.split())
    assert "--peer-fingerprint" in keys_help and "covers both public keys" in keys_help


def test_the_aggregator_command_takes_its_peers_in_index_order() -> None:
    argv = ["aggregator", "--index", "1", "--key", "k", "--coordinator", "https://h"]
    args = build_parser().parse_args(
        [*argv, "--peer-fingerprint", "f1", "--peer-fingerprint", "f2", "--peer-fingerprint", "f3"]
    )
    assert args.peer_fingerprint == ["f1", "f2", "f3"]
    assert build_parser().parse_args(argv).peer_fingerprint == []


def test_an_aggregator_pinning_its_peers_refuses_a_run_with_another_peer(tmp_path: Path) -> None:
    keys = [generate_keypair() for _ in range(3)]
    config = SecureAggregationConfig(threshold=2, num_aggregators=3)
    pins = [key.fingerprint for key in keys]
    honest = secure_run("r", config=config, keys=keys, model_size=4, coordinator_key="k")
    AggregatorService(
        index=1, keypair=keys[0], spool=tmp_path / "a", peer_fingerprints=pins
    ).attach(honest)
    swapped = secure_run(
        "r",
        config=config,
        keys=[keys[0], keys[1], generate_keypair()],  # the coordinator's own aggregator 3
        model_size=4,
        coordinator_key="k",
    )
    pinned = AggregatorService(
        index=1, keypair=keys[0], spool=tmp_path / "b", peer_fingerprints=pins
    )
    with pytest.raises(ConfigurationError, match="--peer-fingerprint names; refusing to serve"):
        pinned.attach(swapped)


def test_the_local_fleet_pins_every_aggregator_s_peers(tmp_path: Path) -> None:
    fleet = local_aggregators(tmp_path, count=3, coordinator_url="http://127.0.0.1:1", trust=None)
    fingerprints = [aggregator.fingerprint for aggregator in fleet]
    assert fingerprints == [
        read_public_key(tmp_path / f"aggregator-{j}.pub").fingerprint for j in (1, 2, 3)
    ]
    for aggregator in fleet:
        command = aggregator.command
        pinned = [command[i + 1] for i, flag in enumerate(command) if flag == "--peer-fingerprint"]
        assert pinned == fingerprints


def test_the_aggregator_command_refuses_to_start_without_pinned_peers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "--out", str(tmp_path), "--count", "1"]) == 0
    capsys.readouterr()
    argv = [
        *("aggregator", "--index", "1", "--key", str(tmp_path / "aggregator-1.key")),
        *("--coordinator", "http://127.0.0.1:9", "--insecure"),  # never asked
    ]
    assert main(argv) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    (line,) = [e for e in errors if "error" in e]  # beside --insecure's warning
    assert line.startswith("veilfl: error: This aggregator does not know its peers' keys")
    assert "--peer-fingerprint" in line and "`veilfl keys` prints them" in line
    trusting = build_parser().parse_args([*argv, "--trust-coordinator-peer-keys"])
    assert trusting.trust_coordinator_peer_keys is True
