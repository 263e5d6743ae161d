"""HPKE share envelopes and the binary share format: hostile input changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.envelope import (
    CONTEXT_DOMAIN,
    KemChoice,
    ShareContext,
    decode_share,
    encode_share,
    open_sealed,
    seal,
)
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.keys import AggregatorKeyPair, generate_keypair
from veilfl.crypto.shamir import MAX_SHARES, ShamirScheme, Share
from veilfl.errors import ConfigurationError, CryptoError, DecryptionError, WireFormatError

FIELD = MERSENNE_31
P = FIELD.modulus
CONTEXT = ShareContext(run_id="run", round_id=3, client_id="alice", aggregator_index=2)
KEMS: list[KemChoice] = ["x25519", "mlkem768-x25519"]


@pytest.fixture(scope="module", params=KEMS)
def keypair(request: pytest.FixtureRequest) -> AggregatorKeyPair:
    return generate_keypair(request.param)


@pytest.fixture(scope="module")
def share_bytes() -> bytes:
    secret = CsprngStream().uniform_field(FIELD, 8)
    shares = ShamirScheme(threshold=2, num_shares=3, field=FIELD).split(secret, rng=CsprngStream())
    return encode_share(shares[CONTEXT.aggregator_index - 1])


def test_a_sealed_share_opens_in_its_context(
    keypair: AggregatorKeyPair, share_bytes: bytes
) -> None:
    # Arrange
    sealed = seal(share_bytes, keypair.public_key, context=CONTEXT)
    # Act
    opened = open_sealed(sealed, keypair.private_key, context=CONTEXT)
    # Assert
    assert opened == share_bytes
    assert share_bytes not in sealed
    share = decode_share(opened, expected_length=8, field=FIELD)
    assert share.index == CONTEXT.aggregator_index


def test_sealing_twice_gives_different_envelopes(keypair: AggregatorKeyPair) -> None:
    first = seal(b"same", keypair.public_key, context=CONTEXT)
    second = seal(b"same", keypair.public_key, context=CONTEXT)
    assert first != second  # a fresh encapsulation each time


@pytest.mark.parametrize(
    "other",
    [
        ShareContext("run", 4, "alice", 2),  # replayed into another round
        ShareContext("run", 3, "mallory", 2),  # claimed by another client
        ShareContext("run", 3, "alice", 1),  # misrouted to another aggregator index
        ShareContext("other-run", 3, "alice", 2),  # replayed into another run
        ShareContext("runa", 3, "lice", 2),  # the same characters, split differently
    ],
)
def test_an_envelope_opens_only_in_its_own_context(
    keypair: AggregatorKeyPair, other: ShareContext
) -> None:
    sealed = seal(b"x" * 64, keypair.public_key, context=CONTEXT)
    with pytest.raises(DecryptionError, match="does not open"):
        open_sealed(sealed, keypair.private_key, context=other)


def test_a_byte_changed_anywhere_is_detected(keypair: AggregatorKeyPair) -> None:
    # Arrange
    sealed = seal(b"y" * 24, keypair.public_key, context=CONTEXT)
    # Act / Assert: every position, in the encapsulated key and in the ciphertext.
    for position in range(len(sealed)):
        tampered = bytearray(sealed)
        tampered[position] ^= 1 << (position % 8)
        with pytest.raises(DecryptionError):
            open_sealed(bytes(tampered), keypair.private_key, context=CONTEXT)


def test_truncated_or_extended_envelopes_are_rejected(keypair: AggregatorKeyPair) -> None:
    sealed = seal(b"z" * 24, keypair.public_key, context=CONTEXT)
    for cut in range(len(sealed)):
        with pytest.raises(DecryptionError):
            open_sealed(sealed[:cut], keypair.private_key, context=CONTEXT)
    with pytest.raises(DecryptionError):
        open_sealed(sealed + b"\x00", keypair.private_key, context=CONTEXT)


@pytest.mark.parametrize("other_kem", KEMS)
def test_another_private_key_cannot_open(keypair: AggregatorKeyPair, other_kem: KemChoice) -> None:
    # Arrange: a misrouted envelope, reaching an aggregator with a different key
    # (of the same KEM, or of the other one).
    other = generate_keypair(other_kem)
    sealed = seal(b"secret share", keypair.public_key, context=CONTEXT)
    # Act / Assert
    with pytest.raises(DecryptionError) as caught:
        open_sealed(sealed, other.private_key, context=CONTEXT)
    message = str(caught.value)
    for secret in (keypair.private_bytes, other.private_bytes):
        assert secret.hex() not in message and repr(secret) not in message
    assert "secret share" not in message


def test_a_low_order_public_key_is_refused_when_sealing() -> None:
    # The X25519 point of order 8 (RFC 7748 §6.1 warns about such points).
    from cryptography.hazmat.primitives.asymmetric import x25519

    low_order = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")
    key = x25519.X25519PublicKey.from_public_bytes(low_order)
    with pytest.raises(CryptoError, match="public key is invalid"):
        seal(b"m", key, context=CONTEXT)


contexts = st.builds(
    ShareContext,
    run_id=st.text(max_size=8),
    round_id=st.integers(0, 2**64),
    client_id=st.text(max_size=8),
    aggregator_index=st.integers(1, MAX_SHARES),
)


@settings(max_examples=500, deadline=None)
@given(first=contexts, second=contexts)
def test_info_is_injective_and_domain_separated(first: ShareContext, second: ShareContext) -> None:
    assert first.info().startswith(CONTEXT_DOMAIN)
    assert (first.info() == second.info()) == (first == second)


def test_info_encodes_every_string_even_lone_surrogates() -> None:
    lone = ShareContext(run_id="\ud800", round_id=0, client_id="c", aggregator_index=1)
    assert lone.info() != ShareContext("\udc00", 0, "c", 1).info()


@pytest.mark.parametrize(
    ("round_id", "aggregator_index"), [(-1, 1), (0, 0), (0, MAX_SHARES + 1), (True, 1), (0, 1.0)]
)
def test_invalid_contexts_are_refused(round_id: int, aggregator_index: int) -> None:
    with pytest.raises(ConfigurationError):
        ShareContext("run", round_id, "client", aggregator_index)


share_cases = st.builds(
    Share,
    index=st.integers(1, MAX_SHARES),
    values=hnp.arrays(np.uint64, st.integers(0, 64), elements=st.integers(0, P - 1)),
)


@settings(max_examples=200, deadline=None)
@given(share=share_cases)
def test_share_codec_round_trips(share: Share) -> None:
    # Act
    data = encode_share(share)
    decoded = decode_share(data, expected_length=len(share.values), field=FIELD)
    # Assert: four bytes per value after a small header.
    assert len(data) == len(encode_share(Share(index=1, values=share.values[:0]))) + 4 * len(
        share.values
    )
    assert decoded.index == share.index
    assert decoded.values.dtype == np.uint64
    assert decoded.values.tolist() == share.values.tolist()


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=96), length=st.integers(0, 20))
def test_share_decoder_only_ever_raises_wire_format_error(data: bytes, length: int) -> None:
    try:
        share = decode_share(data, expected_length=length, field=FIELD)
    except WireFormatError:
        return
    assert len(share.values) == length and int(share.values.max(initial=0)) < P


@settings(max_examples=500, deadline=None)
@given(share=share_cases, edit=st.data())
def test_a_damaged_share_is_rejected_or_still_a_valid_share(
    share: Share, edit: st.DataObject
) -> None:
    # Arrange: flip, cut or extend a valid encoding.
    data = bytearray(encode_share(share))
    kind = edit.draw(st.sampled_from(["flip", "cut", "extend"]))
    if kind == "flip":
        position = edit.draw(st.integers(0, len(data) - 1))
        data[position] ^= edit.draw(st.integers(1, 255))
    elif kind == "cut":
        del data[edit.draw(st.integers(0, len(data) - 1)) :]
    else:
        data += edit.draw(st.binary(min_size=1, max_size=8))
    # Act / Assert
    try:
        decoded = decode_share(bytes(data), expected_length=len(share.values), field=FIELD)
    except WireFormatError:
        return
    assert 1 <= decoded.index <= MAX_SHARES
    assert len(decoded.values) == len(share.values) and int(decoded.values.max(initial=0)) < P


def _header_with(*, index: int = 1, version: bytes = b"1", values: list[int]) -> bytes:
    valid = bytearray(encode_share(Share(index=1, values=np.array(values, dtype=np.uint64))))
    valid[3:4] = version
    valid[4] = index
    return bytes(valid)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_header_with(values=[P]), "outside the field"),
        (_header_with(values=[2**32 - 1]), "outside the field"),
        (_header_with(index=0, values=[1]), r"index must be in 1\.\.16"),
        (_header_with(index=MAX_SHARES + 1, values=[1]), r"index must be in 1\.\.16"),
        (_header_with(version=b"2", values=[1]), "format version"),
        (b"XYZ1" + bytes(20), "share tag"),
        (b"VFS", "too short"),
    ],
)
def test_specific_malformations_are_named(data: bytes, message: str) -> None:
    with pytest.raises(WireFormatError, match=message):
        decode_share(data, expected_length=1, field=FIELD)


def test_a_share_of_the_wrong_length_is_rejected() -> None:
    data = encode_share(Share(index=1, values=np.arange(5, dtype=np.uint64)))
    with pytest.raises(WireFormatError, match="has 5 values"):
        decode_share(data, expected_length=6, field=FIELD)


def test_unreduced_values_are_refused_when_encoding() -> None:
    with pytest.raises(CryptoError, match="reduced"):
        encode_share(Share(index=1, values=np.array([2**32], dtype=np.uint64)))
