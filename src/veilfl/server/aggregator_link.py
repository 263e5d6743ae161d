"""The coordinator's HTTP link to the aggregators (synchronous; runs in a worker thread).

Each request is signed with the coordinator's key (the aggregators answer no one else)
and, over HTTPS, verified against the run's CA.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence

import httpx

from veilfl.auth.identity import Identity
from veilfl.auth.signed_request import COORDINATOR_SIGNER, aggregator_audience
from veilfl.client.signing import SigningAuth, for_round
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
        run_id: The run (part of what each request signs).
        identity: The coordinator's key.
        verify: How to verify the aggregators' TLS certificates.
        timeout_s: Per-request timeout.
    """

    def __init__(
        self,
        urls: Mapping[int, str],
        *,
        vector_length: int,
        run_id: str,
        identity: Identity,
        verify: ssl.SSLContext | bool = True,
        timeout_s: float = 60.0,
    ):
        self._urls = dict(urls)
        self._length = vector_length
        self._auth = {
            index: SigningAuth(
                identity, aggregator_audience(index, run_id), signer_id=COORDINATOR_SIGNER
            )
            for index in self._urls
        }
        self._http = httpx.Client(timeout=timeout_s, verify=verify)

    def aggregate(self, index: int, round_id: int, participants: Sequence[str]) -> Share:
        """Aggregator ``index``'s aggregate share of ``round_id`` over ``participants``.

        Raises:
            TransportError: the aggregator is unreachable or failed.
            ProtocolError: it refused the request.
        """
        url = self._urls[index]
        try:
            response = self._http.post(
                f"{url}/v1/rounds/{round_id}/aggregate",
                json={"participants": list(participants)},
                auth=self._auth[index],
                extensions=for_round(round_id),
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"Aggregator {index} at {url} is unreachable: {exc}.") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise TransportError(f"Aggregator {index} failed (HTTP {response.status_code}).")
        if response.status_code != 200:
            raise ProtocolError(
                f"Aggregator {index} refused to aggregate round {round_id} "
                f"(HTTP {response.status_code}): {response.text[:300]}"
            )
        return decode_share(response.content, expected_length=self._length, field=MERSENNE_31)
