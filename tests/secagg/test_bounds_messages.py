"""Bounds messages: binary round trips, and nothing but WireFormatError on bad bytes."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from veilfl.errors import WireFormatError
from veilfl.secagg.bounds_messages import ContributionShare, VerifierShare

P = 2**31 - 1


def share_with_values() -> ContributionShare:
    return ContributionShare(
        index=2,
        blind=bytes(range(32)),
        parts=(b"a" * 32, b"b" * 32, b"c" * 32),
        values=np.array([0, 1, P - 1, 12345], dtype=np.uint64),
    )


def test_contribution_and_verifier_shares_round_trip() -> None:
    seeded = ContributionShare(
        index=1, blind=b"x" * 32, parts=(b"p" * 32, b"q" * 32), seed=b"s" * 32
    )
    for share in (seeded, share_with_values()):
        back = ContributionShare.from_bytes(share.to_bytes())
        assert (back.index, back.blind, back.parts, back.seed) == (
            share.index,
            share.blind,
            share.parts,
            share.seed,
        )
        if share.values is not None:
            assert back.values is not None
            np.testing.assert_array_equal(back.values, share.values)
    answer = VerifierShare(
        index=3,
        joint_seed=b"j" * 32,
        query_seed=b"q" * 32,
        values=np.arange(2 * 5 * 2, dtype=np.uint64).reshape(2, 5, 2),
    )
    back_answer = VerifierShare.from_bytes(answer.to_bytes())
    assert (back_answer.index, back_answer.joint_seed, back_answer.query_seed) == (
        3,
        b"j" * 32,
        b"q" * 32,
    )
    np.testing.assert_array_equal(back_answer.values, answer.values)


def test_repr_shows_no_secret() -> None:
    share = share_with_values()
    assert repr(share) == "ContributionShare(index=2, values[4])"


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_wire_format_errors(data: bytes) -> None:
    for parser in (ContributionShare.from_bytes, VerifierShare.from_bytes):
        with contextlib.suppress(WireFormatError):
            parser(data)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(0, 200), value=st.integers(0, 255), cut=st.integers(0, 300))
def test_damaged_encodings_raise_only_wire_format_errors(
    position: int, value: int, cut: int
) -> None:
    encoded = bytearray(share_with_values().to_bytes())
    encoded[position % len(encoded)] = value
    for data in (bytes(encoded), bytes(encoded[:cut])):
        with contextlib.suppress(WireFormatError):
            ContributionShare.from_bytes(data)


def test_malformed_fields_are_named() -> None:
    good = share_with_values().to_bytes()
    with pytest.raises(WireFormatError, match="version-1"):
        ContributionShare.from_bytes(b"XXXX" + good[4:])
    with pytest.raises(WireFormatError, match="bytes"):
        ContributionShare.from_bytes(good[:-1])
    out_of_field = good[:-4] + (P).to_bytes(4, "little")
    with pytest.raises(WireFormatError, match="outside the field"):
        ContributionShare.from_bytes(out_of_field)
    with pytest.raises(WireFormatError, match="either a seed or values"):
        ContributionShare(index=1, blind=bytes(32), parts=(bytes(32),))
