"""HPKE envelopes reject tampering, truncation, replay and misrouting; key files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.crypto.envelope import ShareContext, decode_share, encode_share, open_sealed, seal
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.keys import generate_keypair, load_public_key
from veilfl.crypto.shamir import Share
from veilfl.errors import ConfigurationError, DecryptionError, WireFormatError
from veilfl.keyfiles import read_private_key, read_public_key, write_keypair

CONTEXT = ShareContext(run_id="run", round_id=3, client_id="alice", aggregator_index=2)
KEMS = ["x25519", "mlkem768-x25519"]


@pytest.fixture(scope="module", params=KEMS)
def keypair(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return generate_keypair(request.param)


def test_round_trip(keypair) -> None:  # type: ignore[no-untyped-def]
    sealed = seal(b"share bytes", keypair.public_key, context=CONTEXT)
    assert open_sealed(sealed, keypair.private_key, context=CONTEXT) == b"share bytes"


@pytest.mark.parametrize(
    "other",
    [
        ShareContext("run", 4, "alice", 2),  # replayed into another round
        ShareContext("run", 3, "mallory", 2),  # claimed by another client
        ShareContext("run", 3, "alice", 1),  # misrouted to another aggregator
        ShareContext("other-run", 3, "alice", 2),  # replayed into another run
    ],
)
def test_an_envelope_opens_only_in_its_own_context(keypair, other: ShareContext) -> None:  # type: ignore[no-untyped-def]
    sealed = seal(b"x" * 64, keypair.public_key, context=CONTEXT)
    with pytest.raises(DecryptionError, match="does not open"):
        open_sealed(sealed, keypair.private_key, context=other)


def test_tampered_or_truncated_envelopes_are_rejected(keypair) -> None:  # type: ignore[no-untyped-def]
    sealed = seal(b"y" * 64, keypair.public_key, context=CONTEXT)
    for position in range(0, len(sealed), max(1, len(sealed) // 40)):
        tampered = bytearray(sealed)
        tampered[position] ^= 0x01
        with pytest.raises(DecryptionError):
            open_sealed(bytes(tampered), keypair.private_key, context=CONTEXT)
    for cut in (0, 1, len(sealed) // 2, len(sealed) - 1):
        with pytest.raises(DecryptionError):
            open_sealed(sealed[:cut], keypair.private_key, context=CONTEXT)


def test_wrong_private_key_cannot_open(keypair) -> None:  # type: ignore[no-untyped-def]
    sealed = seal(b"z", keypair.public_key, context=CONTEXT)
    with pytest.raises(DecryptionError):
        open_sealed(sealed, generate_keypair(keypair.kem).private_key, context=CONTEXT)


def test_share_codec_round_trips() -> None:
    share = Share(index=3, values=np.array([0, 1, MERSENNE_31.modulus - 1], dtype=np.uint64))
    decoded = decode_share(encode_share(share), expected_length=3, field=MERSENNE_31)
    assert decoded.index == 3
    np.testing.assert_array_equal(decoded.values, share.values)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), length=st.integers(0, 8))
def test_share_decoder_only_raises_wire_format_error(data: bytes, length: int) -> None:
    try:
        share = decode_share(data, expected_length=length, field=MERSENNE_31)
    except WireFormatError:
        return
    assert len(share.values) == length and int(share.values.max(initial=0)) < MERSENNE_31.modulus


def test_share_with_values_outside_the_field_is_rejected() -> None:
    share = Share(index=1, values=np.array([MERSENNE_31.modulus], dtype=np.uint64))
    with pytest.raises(WireFormatError, match="outside the field"):
        decode_share(encode_share(share), expected_length=1, field=MERSENNE_31)


@pytest.mark.parametrize("kem", KEMS)
def test_key_files_are_private_and_round_trip(tmp_path: Path, kem: str) -> None:
    keypair = generate_keypair(kem)  # type: ignore[arg-type]
    write_keypair(keypair, tmp_path / "agg.key", tmp_path / "agg.pub")
    assert stat.S_IMODE((tmp_path / "agg.key").stat().st_mode) == 0o600
    loaded = read_private_key(tmp_path / "agg.key")
    public = read_public_key(tmp_path / "agg.pub")
    assert loaded.fingerprint == keypair.fingerprint == public.fingerprint
    sealed = seal(b"m", load_public_key(public.kem, public.public_bytes), context=CONTEXT)
    assert open_sealed(sealed, loaded.private_key, context=CONTEXT) == b"m"
    with pytest.raises(ConfigurationError, match="already exists"):
        write_keypair(keypair, tmp_path / "agg.key", tmp_path / "agg.pub")


def test_a_private_key_readable_by_others_is_refused_without_echoing_it(tmp_path: Path) -> None:
    keypair = generate_keypair("x25519")
    write_keypair(keypair, tmp_path / "agg.key", tmp_path / "agg.pub")
    os.chmod(tmp_path / "agg.key", 0o644)
    with pytest.raises(ConfigurationError, match="chmod 600") as caught:
        read_private_key(tmp_path / "agg.key")
    assert keypair.private_bytes.hex() not in str(caught.value)
    assert keypair.private_bytes.hex() not in repr(keypair)


def test_fingerprints_differ_between_keys() -> None:
    assert generate_keypair().fingerprint != generate_keypair().fingerprint
