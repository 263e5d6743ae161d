"""Fetching the aggregators' signed policies (``GET /v1/policy``), for clients and the
coordinator alike, and their signed consents to the run (``GET /v1/consent``), for the
coordinator, which publishes them with the run's description.

Only the bytes move here; what a policy must say, and whose signature it must carry,
is checked by the pure core (:func:`veilfl.protocol.aggregator_minimums.verified_minimums`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

import httpx

from veilfl.errors import TransportError, WireFormatError
from veilfl.protocol.messages import PublishedAggregator
from veilfl.secagg.aggregator_policy import AggregatorPolicy
from veilfl.secagg.run_consent import RunConsent
from veilfl.transport.peer import Peer, RetryPolicy, error_message

__all__ = ["fetch_aggregator_policies", "fetch_aggregator_policy", "fetch_run_consent"]


async def fetch_aggregator_policy(
    aggregator: PublishedAggregator,
    *,
    verify: ssl.SSLContext | bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    retry: RetryPolicy | None = None,
) -> AggregatorPolicy:
    """Aggregator ``aggregator``'s policy, as it serves it (unverified).

    Raises:
        TransportError: if it cannot be reached after the retries, or refuses.
        WireFormatError: if its answer is not a policy.
    """
    data = await _fetch_json(aggregator, "/v1/policy", "its policy", verify, transport, retry)
    return AggregatorPolicy.from_json(data)


async def fetch_run_consent(
    aggregator: PublishedAggregator,
    *,
    verify: ssl.SSLContext | bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    retry: RetryPolicy | None = None,
) -> RunConsent:
    """Aggregator ``aggregator``'s consent to the run it serves now (unverified).

    Raises:
        TransportError: if it cannot be reached after the retries, has no run yet, or
            refused the run (the message says why).
        WireFormatError: if its answer is not a consent.
    """
    data = await _fetch_json(
        aggregator, "/v1/consent", "its consent to the run", verify, transport, retry
    )
    return RunConsent.from_json(data)


async def _fetch_json(
    aggregator: PublishedAggregator,
    path: str,
    what: str,
    verify: ssl.SSLContext | bool,
    transport: httpx.AsyncBaseTransport | None,
    retry: RetryPolicy | None,
) -> dict[str, object]:
    policy = retry or RetryPolicy(max_attempts=5, timeout_s=30.0)
    async with httpx.AsyncClient(
        base_url=aggregator.url, timeout=policy.timeout_s, verify=verify, transport=transport
    ) as http:
        response = await Peer(http, policy).request("GET", path)
    if response.status_code != 200:
        raise TransportError(
            f"Aggregator {aggregator.index} at {aggregator.url} did not serve {what} "
            f"(HTTP {response.status_code}: {error_message(response)[:300]})."
        )
    try:
        data = response.json()
    except ValueError as exc:
        raise WireFormatError(
            f"Aggregator {aggregator.index} at {aggregator.url} served {what} not as JSON: {exc}."
        ) from None
    if not isinstance(data, dict):
        raise WireFormatError(
            f"Aggregator {aggregator.index} at {aggregator.url} served {what} not as an object."
        )
    return data


async def fetch_aggregator_policies(
    aggregators: Sequence[PublishedAggregator],
    *,
    verify: ssl.SSLContext | bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    retry: RetryPolicy | None = None,
) -> tuple[AggregatorPolicy, ...]:
    """Every aggregator's policy, asked concurrently, in index order (unverified).

    Raises:
        TransportError: if one cannot be reached after the retries, or refuses.
        WireFormatError: if an answer is not a policy.
    """
    return tuple(
        await asyncio.gather(
            *(
                fetch_aggregator_policy(a, verify=verify, transport=transport, retry=retry)
                for a in aggregators
            )
        )
    )
