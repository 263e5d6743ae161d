"""Who may talk to a veilfl server: pure, synchronous, no I/O.

* :mod:`~veilfl.auth.identity`: Ed25519 identities; a client's id is derived from its key.
* :mod:`~veilfl.auth.signed_request`: what a request signature covers, and its header.
* :mod:`~veilfl.auth.request_verifier`: signature, clock-window and replay checks.
* :mod:`~veilfl.auth.enrollment`: allow-lists, one-time tokens, open enrollment.
* :mod:`~veilfl.auth.admission`: the coordinator's signed admission of a client to a round.
* :mod:`~veilfl.auth.rate_limit`: per-client token buckets.
"""

from veilfl.auth.admission import RoundAdmission, issue_admission, verify_admission
from veilfl.auth.enrollment import EnrollmentPolicy, generate_tokens
from veilfl.auth.identity import Identity, client_id_for
from veilfl.auth.rate_limit import RateLimit, RateLimiter
from veilfl.auth.request_verifier import RequestVerifier
from veilfl.auth.signed_request import SignedRequest, parse_signature, sign_request

__all__ = [
    "EnrollmentPolicy",
    "Identity",
    "RateLimit",
    "RateLimiter",
    "RequestVerifier",
    "RoundAdmission",
    "SignedRequest",
    "client_id_for",
    "generate_tokens",
    "issue_admission",
    "parse_signature",
    "sign_request",
    "verify_admission",
]
