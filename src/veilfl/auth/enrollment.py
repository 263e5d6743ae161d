"""Who may enroll: an allow-list of public keys, one-time tokens, or anyone (open).

Tokens are compared by their SHA-256 only, so the server's memory and database never
hold a usable token once it has been read from the operator's token file.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Container, Iterable
from dataclasses import dataclass

from veilfl.auth.identity import client_id_for
from veilfl.errors import ConfigurationError, EnrollmentRefusedError

__all__ = ["TOKEN_PREFIX", "EnrollmentPolicy", "generate_tokens", "token_digest"]


def token_digest(token: str) -> str:
    """The SHA-256 (hex) under which a token is stored and compared."""
    return hashlib.sha256(b"veilfl-enrollment-token\x00" + token.strip().encode()).hexdigest()


TOKEN_PREFIX = "vfl_"
"""Every generated token starts with this, so that none starts with ``-`` (which a
command line would read as an option) and a token is recognisable in a file."""


def generate_tokens(count: int) -> list[str]:
    """``count`` fresh one-time tokens (192 random bits each, after :data:`TOKEN_PREFIX`)."""
    return [TOKEN_PREFIX + secrets.token_urlsafe(24) for _ in range(count)]


@dataclass(frozen=True)
class EnrollmentPolicy:
    """The rule a coordinator applies to a client that asks to join.

    Attributes:
        allowed_keys: Public keys that may join (any number of times).
        token_digests: Digests of one-time tokens; each admits one key once.
        open: Anyone holding a key may join (development and simulation).
    """

    allowed_keys: frozenset[bytes] = frozenset()
    token_digests: frozenset[str] = frozenset()
    open: bool = False

    def __post_init__(self) -> None:
        if not (self.open or self.allowed_keys or self.token_digests):
            raise ConfigurationError(
                "No client could ever join: give an allow-list of client keys, enrollment "
                "tokens (make them with `veilfl tokens`), or choose open enrollment."
            )

    @classmethod
    def from_tokens(cls, tokens: Iterable[str]) -> EnrollmentPolicy:
        """A policy admitting one key per token."""
        return cls(token_digests=frozenset(token_digest(t) for t in tokens if t.strip()))

    def admit(self, public_key: bytes, token: str | None, *, used_tokens: Container[str]) -> str:
        """Decide whether ``public_key`` may enroll.

        Args:
            public_key: The key asking to join.
            token: The one-time token it presents, if any.
            used_tokens: Digests of tokens already spent.

        Returns:
            The digest of the token this enrollment spends, or "" if none is spent.

        Raises:
            EnrollmentRefusedError: saying why, without echoing the token.
        """
        if public_key in self.allowed_keys:
            return ""
        if token:
            digest = token_digest(token)
            known = any(hmac.compare_digest(digest, d) for d in self.token_digests)
            if not known:
                raise EnrollmentRefusedError(
                    "The enrollment token is not one this coordinator issued."
                )
            if digest in used_tokens:
                raise EnrollmentRefusedError(
                    "The enrollment token was already used by another key; ask the operator "
                    "for a new one."
                )
            return digest
        if self.open:
            return ""
        raise EnrollmentRefusedError(
            f"Client {client_id_for(public_key)} is not on this coordinator's allow-list and "
            "presented no enrollment token; ask the operator to enroll your public key or for "
            "a token."
        )
