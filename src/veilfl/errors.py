"""The one error hierarchy of veilfl.

Every exception the library raises on purpose derives from :class:`VeilflError`, so
``except VeilflError`` catches them all. Messages are whole sentences that say what
happened and, where there is one, what to do about it. No message ever contains a
secret, a private key or a share.

Hierarchy::

    VeilflError
    ├── ConfigurationError      a setting is missing, inconsistent or unsafe
    │   └── PolicyRefusal           the run asks for less than the client's security policy
    ├── DataError               a data set cannot be found, read or partitioned
    ├── WireFormatError         bytes on the wire do not decode (malformed body)
    │   └── BodyTooLargeError       a request body exceeds the endpoint's declared limit
    ├── ProtocolError           a well-formed message that the protocol refuses
    │   ├── UnknownClientError      the client never joined this run
    │   ├── RoundMismatchError      the message names a round that is not open
    │   ├── StaleUpdateError        the update was trained on a version too old to accept
    │   └── UpdateRejectedError     shapes, dtypes or values of an update are wrong
    ├── CryptoError             an encryption, sharing or reconstruction step failed
    │   ├── DecryptionError         a ciphertext was tampered with, truncated or misrouted
    │   └── ReconstructionError     too few or inconsistent shares to reconstruct
    ├── PrivacyError            a privacy guarantee would be broken or the budget is spent
    ├── StorageError            run state or a checkpoint cannot be read or written
    ├── TransportError          a peer could not be reached or answered unexpectedly
    └── AuthenticationError     a request is unsigned, badly signed, replayed or too old
        ├── EnrollmentRefusedError  the key is not allowed, or the token is unknown or used
        ├── ForbiddenError          a signed request acts for another client or round
        └── RateLimitedError        the client sent more requests than its limit allows
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BodyTooLargeError",
    "BufferFullError",
    "ConfigurationError",
    "CryptoError",
    "DataError",
    "DecryptionError",
    "EnrollmentRefusedError",
    "ForbiddenError",
    "PolicyRefusal",
    "PrivacyError",
    "ProtocolError",
    "RateLimitedError",
    "ReconstructionError",
    "RoundMismatchError",
    "StaleUpdateError",
    "StorageError",
    "TransportError",
    "UnknownClientError",
    "UpdateRejectedError",
    "VeilflError",
    "WireFormatError",
]


class VeilflError(Exception):
    """Root of every error veilfl raises on purpose."""


class ConfigurationError(VeilflError):
    """A setting is missing, inconsistent or unsafe."""


class PolicyRefusal(ConfigurationError):  # noqa: N818 (it names what happened)
    """The coordinator's run, or one of its tasks, asks for less protection than the
    client's own security policy accepts; the client sent nothing."""


class DataError(VeilflError):
    """A data set cannot be found, read or partitioned as asked."""


class WireFormatError(VeilflError):
    """Bytes received from a peer do not decode into the expected message."""


class BodyTooLargeError(WireFormatError):
    """A request body is larger than the endpoint accepts; it was not read to the end,
    and nothing in it was parsed."""


class ProtocolError(VeilflError):
    """A well-formed message that the protocol refuses in the current state."""


class UnknownClientError(ProtocolError):
    """The message comes from a client id that never joined this run."""


class RoundMismatchError(ProtocolError):
    """The message names a round that is not the one open."""


class BufferFullError(RoundMismatchError):
    """Every place in the open buffer is held by a client handing in, or a full buffer is
    being applied: the update is welcome, but a little later.

    Attributes:
        retry_after_s: Seconds after which asking again may find a place.
    """

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StaleUpdateError(ProtocolError):
    """The update was trained on a model version too old to accept."""


class UpdateRejectedError(ProtocolError):
    """The update's names, shapes, dtypes or values do not fit the model."""


class CryptoError(VeilflError):
    """An encryption, secret-sharing or reconstruction step failed."""


class DecryptionError(CryptoError):
    """A ciphertext failed authentication: tampered, truncated, replayed or misrouted."""


class ReconstructionError(CryptoError):
    """Too few, or inconsistent, shares to reconstruct the secret."""


class PrivacyError(VeilflError):
    """A privacy guarantee would be broken, or the privacy budget is spent."""


class StorageError(VeilflError):
    """Run state or a checkpoint cannot be read or written."""


class TransportError(VeilflError):
    """A peer could not be reached, or answered in a way the protocol does not allow."""


class AuthenticationError(VeilflError):
    """A request is unsigned, badly signed, replayed, or signed too long ago."""


class EnrollmentRefusedError(AuthenticationError):
    """The client's key is not on the allow-list, or its enrollment token is unknown or used."""


class ForbiddenError(AuthenticationError):
    """A correctly signed request acts for another client, round or run."""


class RateLimitedError(AuthenticationError):
    """The client sent more requests than its rate limit allows.

    Attributes:
        retry_after_s: Seconds until the next request would be accepted.
    """

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
