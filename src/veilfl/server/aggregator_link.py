"""The coordinator's HTTP link to the aggregators (synchronous; runs in a worker thread)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx

from veilfl.crypto.envelope import decode_share
from veilfl.crypto.field import MERSENNE_31
from veilfl.crypto.shamir import Share
from veilfl.errors import ProtocolError, TransportError

__all__ = ["HttpAggregatorLink"]


class HttpAggregatorLink:
    """Asks aggregators for aggregate shares over HTTP.

    Args:
        urls: Aggregator index to base URL.
        vector_length: Length of the shared vectors.
        timeout_s: Per-request timeout.
    """

    def __init__(self, urls: Mapping[int, str], *, vector_length: int, timeout_s: float = 60.0):
        self._urls = dict(urls)
        self._length = vector_length
        self._timeout = timeout_s

    def aggregate(self, index: int, round_id: int, participants: Sequence[str]) -> Share:
        """Aggregator ``index``'s aggregate share of ``round_id`` over ``participants``.

        Raises:
            TransportError: the aggregator is unreachable or failed.
            ProtocolError: it refused the request.
        """
        url = self._urls[index]
        try:
            response = httpx.post(
                f"{url}/v1/rounds/{round_id}/aggregate",
                json={"participants": list(participants)},
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"Aggregator {index} at {url} is unreachable: {exc}.") from exc
        if response.status_code >= 500:
            raise TransportError(f"Aggregator {index} failed (HTTP {response.status_code}).")
        if response.status_code != 200:
            raise ProtocolError(
                f"Aggregator {index} refused to aggregate round {round_id} "
                f"(HTTP {response.status_code}): {response.text[:300]}"
            )
        return decode_share(response.content, expected_length=self._length, field=MERSENNE_31)
