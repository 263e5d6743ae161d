"""Who may talk to an aggregator: admitted clients, and the coordinator.

A share upload must carry the coordinator's admission of its sender to that very round
(:mod:`veilfl.auth.admission`) and be signed by the admitted key; a request for an
aggregate must be signed by the coordinator. The coordinator's public key and the run
id come from the run description the aggregator fetched at start-up (over TLS).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import Request

from veilfl.auth.admission import ADMISSION_HEADER, verify_admission
from veilfl.auth.identity import decode_public_key
from veilfl.auth.rate_limit import DEFAULT_RATE_LIMIT, RateLimit
from veilfl.auth.request_verifier import RequestVerifier
from veilfl.auth.signed_request import COORDINATOR_SIGNER, aggregator_audience
from veilfl.errors import ConfigurationError, TransportError
from veilfl.protocol.messages import RunInfo
from veilfl.transport.request_guard import RequestGuard

__all__ = ["AggregatorAccess"]


class AggregatorAccess:
    """Request checks of aggregator ``index``, once it knows its run.

    Args:
        index: The aggregator's share index.
        rate_limit: Requests allowed per client (None: unlimited).
        max_skew_s: Largest clock difference accepted in a signature.
        clock: Unix time in seconds.
    """

    def __init__(
        self,
        *,
        index: int,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        max_skew_s: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._index = index
        self._rate_limit = rate_limit
        self._max_skew_s = max_skew_s
        self._clock = clock
        self._run_id = ""
        self._coordinator_key = b""
        self._guard: RequestGuard | None = None
        self._started = clock()
        self._attached_runs: set[str] = set()

    def attach(self, run: RunInfo) -> None:
        """Trust the coordinator key published in ``run`` (again, when the coordinator
        moved to another run).

        Requests signed before this object was made are refused (an earlier process
        may have accepted them), and so are requests signed before a re-attachment to a
        run served earlier (this object's nonce memory of it is gone). A run attached
        for the first time accepts requests signed since this object was made: none of
        them can have been accepted for that run before.

        Raises:
            ConfigurationError: if the run description carries no coordinator key.
        """
        if not run.coordinator_key:
            raise ConfigurationError(
                "The coordinator's run description has no coordinator_key; upgrade the "
                "coordinator to a veilfl that signs round admissions."
            )
        self._coordinator_key = decode_public_key(run.coordinator_key)
        self._run_id = run.run_id
        first_time = self._run_id not in self._attached_runs
        self._attached_runs.add(self._run_id)
        verifier = RequestVerifier(
            audience=aggregator_audience(self._index, self._run_id),
            max_skew_s=self._max_skew_s,
            not_before_s=self._started if first_time else self._clock(),
        )
        self._guard = RequestGuard(verifier, rate_limit=self._rate_limit, clock=self._clock)

    def _require_guard(self) -> RequestGuard:
        if self._guard is None:
            raise TransportError("The aggregator has not attached to a run yet; retry shortly.")
        return self._guard

    async def share_sender(
        self, request: Request, *, round_id: int, body: bytes | None = None
    ) -> str:
        """The admitted client that signed this share upload (``body``, if read
        already) for ``round_id``.

        Raises:
            AuthenticationError: (or a subclass) no valid admission to this round, or
                the request is not signed by the admitted client.
        """
        guard = self._require_guard()
        admission = verify_admission(
            request.headers.get(ADMISSION_HEADER),
            self._coordinator_key,
            run_id=self._run_id,
            round_id=round_id,
        )
        return await guard.check(
            request,
            public_key_for=lambda cid: admission.client_key if cid == admission.client_id else None,
            round_id=round_id,
            body=body,
        )

    async def check_coordinator(
        self, request: Request, *, round_id: int, body: bytes | None = None
    ) -> None:
        """Require that the coordinator signed this request (``body``, if read already)
        about ``round_id``.

        Raises:
            AuthenticationError: (or a subclass) otherwise.
        """
        await self._require_guard().check(
            request,
            public_key_for=lambda cid: self._coordinator_key if cid == COORDINATOR_SIGNER else None,
            round_id=round_id,
            body=body,
        )
