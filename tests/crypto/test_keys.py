"""Aggregator keys: raw round trips, fingerprints, private key files, no leaked secrets.

The file helpers live in :mod:`veilfl.keyfiles` (the crypto core does no I/O); they
are tested here beside the key formats they store.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from veilfl.crypto.envelope import KemChoice, ShareContext, open_sealed, seal
from veilfl.crypto.keys import (
    FINGERPRINT_HEX_DIGITS,
    AggregatorKeyPair,
    fingerprint,
    generate_keypair,
    load_private_key,
    load_public_key,
    public_key_bytes,
    verify_aggregator_signature,
)
from veilfl.errors import ConfigurationError
from veilfl.keyfiles import read_private_key, read_public_key, write_keypair

CONTEXT = ShareContext(run_id="run", round_id=1, client_id="bob", aggregator_index=1)
KEMS: list[KemChoice] = ["x25519", "mlkem768-x25519"]


def secret_spellings(keypair: AggregatorKeyPair) -> list[str]:
    """Ways a private key could show up in a message."""
    spellings = []
    for raw in (keypair.private_bytes, keypair.signing_private_bytes):
        spellings += [raw.hex(), repr(raw), base64.b64encode(raw).decode(), raw.hex()[:16]]
    return spellings


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize("kem", KEMS)
def test_raw_keys_round_trip_and_work_together(kem: KemChoice) -> None:
    # Arrange
    keypair = generate_keypair(kem)
    # Act
    reloaded = load_private_key(
        keypair.kem, keypair.private_bytes, signing=keypair.signing_private_bytes
    )
    public = load_public_key(keypair.kem, keypair.public_bytes)
    # Assert: what is sealed to the reloaded public key opens with the reloaded private one.
    assert reloaded.public_bytes == keypair.public_bytes
    assert public_key_bytes(keypair.kem, reloaded.private_bytes) == keypair.public_bytes
    assert reloaded.fingerprint == keypair.fingerprint
    sealed = seal(b"m", public, context=CONTEXT)
    assert open_sealed(sealed, reloaded.private_key, context=CONTEXT) == b"m"
    signature = reloaded.sign(b"a commitment")
    assert verify_aggregator_signature(keypair.signing_public_bytes, b"a commitment", signature)
    assert not verify_aggregator_signature(keypair.signing_public_bytes, b"another", signature)


@pytest.mark.parametrize("kem", KEMS)
def test_fingerprints_are_stable_short_and_distinct(kem: KemChoice) -> None:
    # Arrange
    first, second = generate_keypair(kem), generate_keypair(kem)
    # Act
    printed = fingerprint(first.kem, first.public_bytes, first.signing_public_bytes)
    # Assert
    assert (
        printed
        == fingerprint(first.kem, first.public_bytes, first.signing_public_bytes)
        == first.fingerprint
    )
    assert len(printed) == FINGERPRINT_HEX_DIGITS and int(printed, 16) >= 0
    assert printed != second.fingerprint


def test_the_same_bytes_under_another_kem_name_get_another_fingerprint() -> None:
    pair = generate_keypair("x25519")
    public, signing = pair.public_bytes, pair.signing_public_bytes
    assert fingerprint("x25519", public, signing) != fingerprint("mlkem768-x25519", public, signing)


def test_the_fingerprint_pins_the_signing_key_too() -> None:
    pair, other = generate_keypair("x25519"), generate_keypair("x25519")
    swapped = fingerprint(pair.kem, pair.public_bytes, other.signing_public_bytes)
    assert swapped != pair.fingerprint


@pytest.mark.parametrize("kem", KEMS)
def test_malformed_keys_are_refused_without_echoing_them(kem: KemChoice) -> None:
    # Arrange
    keypair = generate_keypair(kem)
    # Act / Assert
    for broken in (keypair.private_bytes[:-1], keypair.private_bytes + b"\x00", b""):
        with pytest.raises(ConfigurationError, match="not a valid") as caught:
            load_private_key(keypair.kem, broken, signing=keypair.signing_private_bytes)
        assert not any(s in str(caught.value) for s in secret_spellings(keypair))
    for broken in (keypair.public_bytes[:-1], keypair.public_bytes + b"\x00"):
        with pytest.raises(ConfigurationError, match="not a valid"):
            load_public_key(keypair.kem, broken)
    with pytest.raises(ConfigurationError, match="Unknown KEM"):
        load_private_key(  # type: ignore[arg-type]
            "rsa", keypair.private_bytes, signing=keypair.signing_private_bytes
        )


def test_a_key_pair_never_prints_its_private_key() -> None:
    keypair = generate_keypair("mlkem768-x25519")
    assert not any(s in repr(keypair) for s in secret_spellings(keypair))
    assert keypair.fingerprint in repr(keypair)


@pytest.mark.parametrize("kem", KEMS)
@pytest.mark.usefixtures("permissive_umask")
def test_private_key_files_are_0600_and_round_trip(tmp_path: Path, kem: KemChoice) -> None:
    # Arrange
    keypair = generate_keypair(kem)
    private_path, public_path = tmp_path / "agg.key", tmp_path / "agg.pub"
    # Act
    write_keypair(keypair, private_path, public_path)
    loaded = read_private_key(private_path)
    public = read_public_key(public_path)
    # Assert: private even with umask 0; the same key comes back.
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert loaded.private_bytes == keypair.private_bytes
    assert loaded.fingerprint == keypair.fingerprint == public.fingerprint
    assert json.loads(private_path.read_text())["kem"] == kem
    sealed = seal(b"m", public.key, context=CONTEXT)
    assert open_sealed(sealed, loaded.private_key, context=CONTEXT) == b"m"


def test_an_existing_private_key_file_is_never_overwritten(tmp_path: Path) -> None:
    keypair = generate_keypair("x25519")
    write_keypair(keypair, tmp_path / "agg.key", tmp_path / "agg.pub")
    with pytest.raises(ConfigurationError, match="already exists"):
        write_keypair(generate_keypair("x25519"), tmp_path / "agg.key", tmp_path / "agg.pub")
    assert read_private_key(tmp_path / "agg.key").private_bytes == keypair.private_bytes


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_private_key_readable_by_others_is_refused_without_echoing_it(
    tmp_path: Path, mode: int
) -> None:
    # Arrange
    keypair = generate_keypair("x25519")
    write_keypair(keypair, tmp_path / "agg.key", tmp_path / "agg.pub")
    os.chmod(tmp_path / "agg.key", mode)
    # Act / Assert
    with pytest.raises(ConfigurationError, match="chmod 600") as caught:
        read_private_key(tmp_path / "agg.key")
    assert not any(s in str(caught.value) for s in secret_spellings(keypair))


def test_a_corrupt_private_key_file_is_refused_without_echoing_it(tmp_path: Path) -> None:
    # Arrange: a valid file with one byte of the key cut off.
    keypair = generate_keypair("x25519")
    path = tmp_path / "agg.key"
    write_keypair(keypair, path, tmp_path / "agg.pub")
    body = json.loads(path.read_text())
    body["private_key"] = base64.b64encode(keypair.private_bytes[:-1]).decode()
    path.write_text(json.dumps(body))
    # Act / Assert
    with pytest.raises(ConfigurationError) as caught:
        read_private_key(path)
    assert not any(s in str(caught.value) for s in secret_spellings(keypair))
    assert body["private_key"] not in str(caught.value)
