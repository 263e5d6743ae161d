"""Which clients may use the coordinator: enrollment, signed requests, admissions.

A client enrolls once with its Ed25519 public key, proving it holds the private key by
signing the enrollment request, and is admitted by the run's
:class:`~veilfl.auth.enrollment.EnrollmentPolicy` (allow-list, one-time token or open).
Enrolled keys are stored in the run database, so a restarted coordinator still knows
them. Every later request is checked by a :class:`RequestGuard`. For secure
aggregation the coordinator signs each client's round admission, which the
aggregators check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from fastapi import Request

from veilfl.auth.admission import RoundAdmission, issue_admission
from veilfl.auth.enrollment import EnrollmentPolicy
from veilfl.auth.identity import Identity, client_id_for, decode_public_key, encode_public_key
from veilfl.auth.rate_limit import DEFAULT_RATE_LIMIT, RateLimit
from veilfl.auth.request_verifier import RequestVerifier
from veilfl.auth.signed_request import coordinator_audience
from veilfl.errors import ForbiddenError
from veilfl.server.run_store import RunStore
from veilfl.transport.request_guard import RequestGuard

__all__ = ["ClientAccess"]

logger = logging.getLogger(__name__)


class ClientAccess:
    """Enrollment and request authentication for one run.

    Args:
        run_id: The run.
        policy: Who may enroll.
        guard: Checks signatures (audience ``coordinator/<run id>``) and rate limits.
        coordinator: The coordinator's own key, which signs round admissions.
        store: Where enrollments persist (None: memory only).
        clock: Unix time in seconds.
    """

    def __init__(
        self,
        *,
        run_id: str,
        policy: EnrollmentPolicy,
        guard: RequestGuard,
        coordinator: Identity,
        store: RunStore | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.run_id = run_id
        self.coordinator = coordinator
        self._policy = policy
        self._guard = guard
        self._store = store
        self._clock = clock
        self._lock = asyncio.Lock()
        self._keys: dict[str, bytes] = {}
        self._used_tokens: set[str] = set()
        for record in store.clients() if store is not None else []:
            if record.public_key is not None:
                self._keys[record.client_id] = decode_public_key(record.public_key)
            if record.token_digest:
                self._used_tokens.add(record.token_digest)

    @classmethod
    def create(
        cls,
        *,
        run_id: str,
        policy: EnrollmentPolicy,
        coordinator: Identity,
        store: RunStore | None = None,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        max_skew_s: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> ClientAccess:
        """Access control for ``run_id``, refusing requests signed before now."""
        verifier = RequestVerifier(
            audience=coordinator_audience(run_id), max_skew_s=max_skew_s, not_before_s=clock()
        )
        return cls(
            run_id=run_id,
            policy=policy,
            guard=RequestGuard(verifier, rate_limit=rate_limit, clock=clock),
            coordinator=coordinator,
            store=store,
            clock=clock,
        )

    def public_key(self, client_id: str) -> bytes | None:
        """The enrolled key of ``client_id`` (None if it never enrolled)."""
        return self._keys.get(client_id)

    async def enroll(
        self, request: Request, *, public_key_text: str, token: str | None, name: str
    ) -> str:
        """Enroll the key in a signed ``POST /v1/clients``; return its client id.

        Enrolling an already enrolled key again is allowed and changes nothing.

        Raises:
            AuthenticationError: the request is not signed by that key.
            EnrollmentRefusedError: the policy does not admit the key.
        """
        public_key = decode_public_key(public_key_text)
        claimed = client_id_for(public_key)
        await self._guard.check(
            request,
            public_key_for=lambda cid: public_key if cid == claimed else None,
            round_id=None,
        )
        async with self._lock:
            if self._keys.get(claimed) == public_key:
                return claimed
            spent = self._policy.admit(public_key, token, used_tokens=self._used_tokens)
            if self._store is not None:
                await asyncio.to_thread(
                    self._store.add_client,
                    claimed,
                    name,
                    self._clock(),
                    public_key=encode_public_key(public_key),
                    token_digest=spent or None,
                )
            self._keys[claimed] = public_key
            if spent:
                self._used_tokens.add(spent)
        logger.info("enrolled client %s (%s)", claimed, "token" if spent else "key")
        return claimed

    async def authenticate(
        self, request: Request, *, round_id: int | None, acting_for: str | None = None
    ) -> str:
        """The enrolled client that signed ``request``.

        Args:
            request: The request.
            round_id: The round it acts on (None if it names none).
            acting_for: The client id the request names (in its path or body); it must
                be the signer.

        Raises:
            AuthenticationError: (or a subclass) saying what is wrong.
        """
        client_id = await self._guard.check(
            request, public_key_for=self.public_key, round_id=round_id
        )
        if acting_for is not None and acting_for != client_id:
            raise ForbiddenError(
                f"Client {client_id} signed a request that acts for client {acting_for}."
            )
        return client_id

    def admission(self, client_id: str, round_id: int) -> str:
        """The coordinator's signed admission of ``client_id`` to ``round_id``."""
        key = self._keys[client_id]
        return issue_admission(
            self.coordinator,
            RoundAdmission(
                run_id=self.run_id, round_id=round_id, client_id=client_id, client_key=key
            ),
        )
