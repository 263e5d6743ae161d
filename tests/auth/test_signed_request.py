"""Signed requests: what a signature covers, the header decoder, replay and clock checks."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veilfl.auth.identity import Identity
from veilfl.auth.request_verifier import RequestVerifier
from veilfl.auth.signed_request import (
    RequestSignature,
    SignedRequest,
    format_signature,
    parse_signature,
    sign_request,
)
from veilfl.errors import AuthenticationError, ForbiddenError, RateLimitedError

NOW = 1_800_000_000.0
AUDIENCE = "coordinator/run-1"


def _request(body: bytes = b"abc", **changes: object) -> SignedRequest:
    base = SignedRequest.of(AUDIENCE, "POST", "/v1/rounds/3/updates", body, 3)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def _verifier(**kwargs: object) -> RequestVerifier:
    return RequestVerifier(audience=AUDIENCE, **kwargs)  # type: ignore[arg-type]


def test_a_signed_request_verifies_once_and_a_replay_is_refused() -> None:
    alice = Identity.generate()
    header = sign_request(alice, _request(), now_s=NOW)
    verifier = _verifier()
    keys = {alice.client_id: alice.public_key}.get
    assert (
        verifier.verify(_request(), header, public_key_for=keys, now_s=NOW + 1) == alice.client_id
    )
    with pytest.raises(AuthenticationError, match="replay"):
        verifier.verify(_request(), header, public_key_for=keys, now_s=NOW + 2)


@pytest.mark.parametrize(
    "change",
    [
        {"audience": "aggregator-1/run-1"},
        {"audience": "coordinator/run-2"},
        {"method": "PUT"},
        {"path": "/v1/rounds/3/receipts"},
        {"path": "/v1/rounds/3/updates?x=1"},
        {"body": b"abd"},
    ],
)
def test_changing_anything_signed_breaks_the_signature(change: dict[str, object]) -> None:
    alice = Identity.generate()
    header = sign_request(alice, _request(), now_s=NOW)
    with pytest.raises(AuthenticationError, match="does not match"):
        _verifier().verify(
            _request(**change),
            header,
            public_key_for={alice.client_id: alice.public_key}.get,
            now_s=NOW,
        )


def test_a_signature_for_another_round_is_forbidden() -> None:
    alice = Identity.generate()
    header = sign_request(alice, _request(round_id=4), now_s=NOW)
    with pytest.raises(ForbiddenError, match="round 4"):
        _verifier().verify(
            _request(), header, public_key_for={alice.client_id: alice.public_key}.get, now_s=NOW
        )


def test_another_clients_key_does_not_verify() -> None:
    alice, mallory = Identity.generate(), Identity.generate()
    forged = sign_request(mallory, _request(), now_s=NOW, client_id=alice.client_id)
    with pytest.raises(AuthenticationError, match="does not match"):
        _verifier().verify(
            _request(), forged, public_key_for={alice.client_id: alice.public_key}.get, now_s=NOW
        )


def test_unsigned_unknown_stale_and_early_requests_are_refused() -> None:
    alice = Identity.generate()
    keys = {alice.client_id: alice.public_key}.get
    with pytest.raises(AuthenticationError, match="must be signed"):
        _verifier().verify(_request(), None, public_key_for=keys, now_s=NOW)
    with pytest.raises(AuthenticationError, match="not enrolled"):
        _verifier().verify(
            _request(),
            sign_request(alice, _request(), now_s=NOW),
            public_key_for=lambda _: None,
            now_s=NOW,
        )
    with pytest.raises(AuthenticationError, match="clock"):
        _verifier(max_skew_s=60).verify(
            _request(),
            sign_request(alice, _request(), now_s=NOW - 61),
            public_key_for=keys,
            now_s=NOW,
        )
    with pytest.raises(AuthenticationError, match="before this server started"):
        _verifier(not_before_s=NOW).verify(
            _request(),
            sign_request(alice, _request(), now_s=NOW - 1),
            public_key_for=keys,
            now_s=NOW,
        )


def test_a_refused_forgery_does_not_spend_the_real_nonce() -> None:
    alice = Identity.generate()
    keys = {alice.client_id: alice.public_key}.get
    header = sign_request(alice, _request(), now_s=NOW)
    verifier = _verifier()
    with pytest.raises(AuthenticationError):
        verifier.verify(_request(body=b"evil"), header, public_key_for=keys, now_s=NOW)
    assert verifier.verify(_request(), header, public_key_for=keys, now_s=NOW) == alice.client_id


def test_nonces_are_forgotten_after_the_clock_window_and_memory_is_bounded() -> None:
    alice = Identity.generate()
    keys = {alice.client_id: alice.public_key}.get
    verifier = _verifier(max_skew_s=10, max_remembered=2)
    for offset in (0.0, 0.1):
        verifier.verify(
            _request(),
            sign_request(alice, _request(), now_s=NOW + offset),
            public_key_for=keys,
            now_s=NOW,
        )
    with pytest.raises(RateLimitedError):
        verifier.verify(
            _request(), sign_request(alice, _request(), now_s=NOW), public_key_for=keys, now_s=NOW
        )
    later = NOW + 11
    verifier.verify(
        _request(), sign_request(alice, _request(), now_s=later), public_key_for=keys, now_s=later
    )


def test_the_header_round_trips() -> None:
    signature = RequestSignature(
        client_id="abc", timestamp_ms=12, nonce="0" * 32, round_id=None, signature=b"\x01" * 64
    )
    assert parse_signature(format_signature(signature)) == signature


@given(st.text(max_size=600))
def test_the_header_decoder_refuses_garbage_with_its_own_error(header: str) -> None:
    try:
        parsed = parse_signature(header)
    except AuthenticationError:
        return
    assert format_signature(parsed) == header  # whatever parses is canonical


@given(
    client=st.from_regex(r"[A-Za-z0-9_.-]{1,64}", fullmatch=True),
    timestamp=st.integers(0, 10**15),
    nonce=st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
    round_id=st.none() | st.integers(0, 10**15),
    raw=st.binary(min_size=64, max_size=64),
    cut=st.integers(0, 300),
    flip=st.integers(0, 300),
)
def test_mutated_headers_parse_to_exactly_what_they_say_or_are_refused(
    client: str, timestamp: int, nonce: str, round_id: int | None, raw: bytes, cut: int, flip: int
) -> None:
    header = format_signature(RequestSignature(client, timestamp, nonce, round_id, raw))
    assert parse_signature(header) == RequestSignature(client, timestamp, nonce, round_id, raw)
    mutated = header[:cut] + header[cut + 1 :]
    if flip < len(mutated):
        mutated = mutated[:flip] + chr((ord(mutated[flip]) + 1) % 128) + mutated[flip + 1 :]
    try:
        parsed = parse_signature(mutated)
    except AuthenticationError:
        return
    assert format_signature(parsed) == mutated  # only a still-canonical header parses
