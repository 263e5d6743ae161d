"""Enrollment policies, round admissions, rate limits and identities."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from veilfl.auth.admission import RoundAdmission, issue_admission, verify_admission
from veilfl.auth.enrollment import EnrollmentPolicy, generate_tokens, token_digest
from veilfl.auth.identity import Identity, client_id_for, decode_public_key, encode_public_key
from veilfl.auth.rate_limit import RateLimit, RateLimiter
from veilfl.errors import (
    AuthenticationError,
    ConfigurationError,
    EnrollmentRefusedError,
    ForbiddenError,
    RateLimitedError,
)


def test_client_ids_are_bound_to_keys_and_repr_hides_the_private_key() -> None:
    alice = Identity.generate()
    assert alice.client_id == client_id_for(alice.public_key)
    assert alice.client_id != Identity.generate().client_id
    assert decode_public_key(alice.public_key_text) == alice.public_key
    assert Identity.from_private_bytes(alice.private_bytes).public_key == alice.public_key
    assert alice.private_bytes.hex() not in repr(alice)
    with pytest.raises(AuthenticationError):
        decode_public_key("AAAA")


@given(st.text(max_size=80))
def test_the_public_key_decoder_accepts_only_canonical_keys(text: str) -> None:
    try:
        raw = decode_public_key(text)
    except AuthenticationError:
        return
    assert len(raw) == 32 and encode_public_key(raw) == text.strip()


def test_a_policy_must_let_someone_in() -> None:
    with pytest.raises(ConfigurationError, match="No client could ever join"):
        EnrollmentPolicy()


def test_allow_list_admits_only_listed_keys_any_number_of_times() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    policy = EnrollmentPolicy(allowed_keys=frozenset({alice.public_key}))
    assert policy.admit(alice.public_key, None, used_tokens=set()) == ""
    assert policy.admit(alice.public_key, None, used_tokens=set()) == ""
    with pytest.raises(EnrollmentRefusedError, match="allow-list"):
        policy.admit(bob.public_key, None, used_tokens=set())


def test_a_token_admits_one_key_once_and_is_never_echoed() -> None:
    tokens = generate_tokens(2)
    policy = EnrollmentPolicy.from_tokens(tokens)
    key = Identity.generate().public_key
    spent = policy.admit(key, tokens[0], used_tokens=set())
    assert spent == token_digest(tokens[0])
    with pytest.raises(EnrollmentRefusedError, match="already used") as used:
        policy.admit(Identity.generate().public_key, tokens[0], used_tokens={spent})
    with pytest.raises(EnrollmentRefusedError, match="not one this coordinator") as unknown:
        policy.admit(key, "guess", used_tokens=set())
    assert tokens[0] not in str(used.value) and "guess" not in str(unknown.value)
    with pytest.raises(EnrollmentRefusedError):
        policy.admit(key, None, used_tokens=set())


def test_open_enrollment_admits_anyone_without_spending_tokens() -> None:
    assert EnrollmentPolicy(open=True).admit(b"k" * 32, None, used_tokens=set()) == ""


def _admission(round_id: int = 5) -> tuple[Identity, Identity, str]:
    coordinator, client = Identity.generate(), Identity.generate()
    token = issue_admission(
        coordinator,
        RoundAdmission(
            run_id="run",
            round_id=round_id,
            client_id=client.client_id,
            client_key=client.public_key,
        ),
    )
    return coordinator, client, token


def test_an_admission_names_its_client_and_key_for_one_round_of_one_run() -> None:
    coordinator, client, token = _admission()
    admission = verify_admission(token, coordinator.public_key, run_id="run", round_id=5)
    assert (admission.client_id, admission.client_key) == (client.client_id, client.public_key)
    with pytest.raises(ForbiddenError, match="round 5"):
        verify_admission(token, coordinator.public_key, run_id="run", round_id=6)
    with pytest.raises(ForbiddenError):
        verify_admission(token, coordinator.public_key, run_id="other", round_id=5)
    with pytest.raises(AuthenticationError, match="not signed by"):
        verify_admission(token, Identity.generate().public_key, run_id="run", round_id=5)
    with pytest.raises(AuthenticationError, match="needs the coordinator's admission"):
        verify_admission(None, coordinator.public_key, run_id="run", round_id=5)


def test_a_client_cannot_rewrite_its_admission() -> None:
    coordinator, _, token = _admission(round_id=5)
    _, _, later = _admission(round_id=6)
    forged = later.split(".")[0] + "." + token.split(".")[1]
    with pytest.raises(AuthenticationError, match="not signed by"):
        verify_admission(forged, coordinator.public_key, run_id="run", round_id=6)


@given(st.text(max_size=1200))
def test_the_admission_decoder_refuses_garbage_with_its_own_error(token: str) -> None:
    coordinator = Identity.generate()
    try:
        verify_admission(token, coordinator.public_key, run_id="run", round_id=1)
    except AuthenticationError:
        pass
    else:  # pragma: no cover - a random string is never signed by a fresh key
        raise AssertionError("garbage was accepted")


def test_rate_limit_allows_a_burst_then_the_sustained_rate() -> None:
    limiter = RateLimiter(RateLimit(per_second=2.0, burst=3.0))
    for _ in range(3):
        limiter.acquire("a", now_s=100.0)
    with pytest.raises(RateLimitedError) as refused:
        limiter.acquire("a", now_s=100.0)
    assert 0 < refused.value.retry_after_s <= 0.5
    limiter.acquire("b", now_s=100.0)  # per client
    limiter.acquire("a", now_s=100.5)  # one token back after 1/rate seconds
    with pytest.raises(RateLimitedError):
        limiter.acquire("a", now_s=100.5)
    with pytest.raises(ConfigurationError):
        RateLimit(per_second=0)
