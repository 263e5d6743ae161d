"""The coordinator's HTTP link to the aggregators, and the commands it performs there.

Each request is signed with the coordinator's key (the aggregators answer no one else)
and, over HTTPS, verified against the run's CA. Requests run concurrently, outside the
coordinator's lock; every outcome comes back to the core as an event. The log says
once when an aggregator becomes unreachable (no answer, or a 5xx), and once when it
answers again.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import ssl
from collections.abc import Mapping

import httpx

from veilfl.auth.identity import Identity
from veilfl.auth.signed_request import COORDINATOR_SIGNER, aggregator_audience
from veilfl.crypto.envelope import decode_share
from veilfl.crypto.field import MERSENNE_31
from veilfl.errors import ProtocolError, TransportError, VeilflError, WireFormatError
from veilfl.protocol.effects import (
    AggregateShareReported,
    AggregatorFailed,
    CollectAggregateShares,
    CollectCommitments,
    CollectHoldings,
    CollectNoiseDeals,
    CollectVerifierShares,
    CommitmentReported,
    Event,
    HoldingsReported,
    NoiseDealsReported,
    VerifierSharesReported,
)
from veilfl.secagg.bounds_messages import VerifierShare
from veilfl.transport.signing import SigningAuth, for_round

__all__ = ["HttpAggregatorLink"]

logger = logging.getLogger("veilfl.server")


class HttpAggregatorLink:
    """Asks aggregators for holdings and aggregate shares over HTTP.

    Args:
        urls: Aggregator index to base URL.
        vector_length: Length of the shared vectors.
        run_id: The run (part of what each request signs).
        identity: The coordinator's key.
        verify: How to verify the aggregators' TLS certificates.
        timeout_s: Per-request timeout.
        transport: An httpx transport (tests).
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
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self._urls = dict(urls)
        self._length = vector_length
        self._auth = {
            index: SigningAuth(
                identity, aggregator_audience(index, run_id), signer_id=COORDINATOR_SIGNER
            )
            for index in self._urls
        }
        self._http = httpx.AsyncClient(timeout=timeout_s, verify=verify, transport=transport)
        self._unreachable: set[int] = set()

    async def close(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def collect_holdings(self, command: CollectHoldings) -> list[Event]:
        """Ask each aggregator (concurrently) which clients' shares it holds."""
        return list(
            await asyncio.gather(
                *(self._holdings(j, command.round_id) for j in command.aggregators)
            )
        )

    async def collect_verifier_shares(self, command: CollectVerifierShares) -> list[Event]:
        """Ask each aggregator (concurrently) for its answers to the round's query."""
        return list(await asyncio.gather(*(self._verify(j, command) for j in command.aggregators)))

    async def collect_commitments(self, command: CollectCommitments) -> list[Event]:
        """Ask each aggregator (concurrently) to commit to the participant list."""
        return list(await asyncio.gather(*(self._commit(j, command) for j in command.aggregators)))

    async def collect_noise_deals(self, command: CollectNoiseDeals) -> list[Event]:
        """Ask each aggregator (concurrently) for its sealed noise deals."""
        return list(await asyncio.gather(*(self._deal(j, command) for j in command.aggregators)))

    async def collect_aggregate_shares(self, command: CollectAggregateShares) -> list[Event]:
        """Ask each aggregator (concurrently) for its aggregate share (with the deals
        addressed to it, under distributed DP)."""
        return list(
            await asyncio.gather(*(self._aggregate(j, command) for j in command.aggregators))
        )

    async def _deal(self, index: int, command: CollectNoiseDeals) -> Event:
        round_id = command.round_id
        try:
            response = await self._request(
                index,
                "POST",
                f"/v1/rounds/{round_id}/noise-deals",
                round_id=round_id,
                json={"step": command.step},
            )
            deals = response.json().get("deals")
            if not isinstance(deals, dict):
                raise WireFormatError(f"Aggregator {index}'s noise deals do not parse.")
            return NoiseDealsReported(
                round_id,
                index,
                {int(j): base64.b64decode(str(d), validate=True) for j, d in deals.items()},
            )
        except (VeilflError, ValueError, binascii.Error) as exc:
            return AggregatorFailed(round_id, index, str(exc), isinstance(exc, ProtocolError))

    async def _verify(self, index: int, command: CollectVerifierShares) -> Event:
        round_id = command.round_id
        try:
            response = await self._request(
                index,
                "POST",
                f"/v1/rounds/{round_id}/verify",
                round_id=round_id,
                json={"clients": list(command.clients), "query_seed": command.query_seed.hex()},
            )
            answers = response.json().get("answers")
            if not isinstance(answers, dict) or set(answers) != set(command.clients):
                raise WireFormatError(f"Aggregator {index} did not answer for every client.")
            shares = await asyncio.to_thread(
                lambda: {
                    c: VerifierShare.from_bytes(base64.b64decode(a, validate=True))
                    for c, a in answers.items()
                }
            )
            return VerifierSharesReported(round_id, index, shares)
        except (VeilflError, ValueError, binascii.Error) as exc:
            refused = isinstance(exc, ProtocolError)
            return AggregatorFailed(round_id, index, str(exc), refused)

    async def _commit(self, index: int, command: CollectCommitments) -> Event:
        round_id = command.round_id
        try:
            response = await self._request(
                index,
                "POST",
                f"/v1/rounds/{round_id}/commit",
                round_id=round_id,
                json={"participants": list(command.participants)},
            )
            signature = base64.b64decode(str(response.json().get("signature")), validate=True)
            return CommitmentReported(round_id, index, signature)
        except (VeilflError, ValueError, binascii.Error) as exc:
            return AggregatorFailed(round_id, index, str(exc), isinstance(exc, ProtocolError))

    async def _holdings(self, index: int, round_id: int) -> Event:
        try:
            response = await self._request(
                index, "GET", f"/v1/rounds/{round_id}/holdings", round_id=round_id
            )
            body = response.json()
            clients = body.get("clients") if isinstance(body, dict) else None
            if not isinstance(clients, list) or not all(isinstance(c, str) for c in clients):
                raise WireFormatError(f"Aggregator {index} answered holdings that do not parse.")
            return HoldingsReported(round_id, index, frozenset(clients))
        except VeilflError as exc:
            return AggregatorFailed(round_id, index, str(exc), isinstance(exc, ProtocolError))

    async def _aggregate(self, index: int, command: CollectAggregateShares) -> Event:
        round_id = command.round_id
        body: dict[str, object] = {
            "participants": list(command.participants),
            "certificate": command.certificate.to_json(),
        }
        if command.noise_step is not None:
            body["noise_step"] = command.noise_step
            body["deals"] = [base64.b64encode(d).decode() for d in command.deals.get(index, ())]
        try:
            response = await self._request(
                index,
                "POST",
                f"/v1/rounds/{round_id}/aggregate",
                round_id=round_id,
                json=body,
            )
            share = await asyncio.to_thread(
                decode_share, response.content, expected_length=self._length, field=MERSENNE_31
            )
            return AggregateShareReported(round_id, index, share)
        except VeilflError as exc:
            return AggregatorFailed(round_id, index, str(exc), isinstance(exc, ProtocolError))

    async def _request(
        self, index: int, method: str, path: str, *, round_id: int, **kwargs: object
    ) -> httpx.Response:
        url = self._urls[index]
        try:
            response = await self._http.request(
                method,
                f"{url}{path}",
                auth=self._auth[index],
                extensions=for_round(round_id),
                **kwargs,  # type: ignore[arg-type]
            )
        except httpx.HTTPError as exc:
            self._note_down(index, f"{type(exc).__name__}: {exc}" if str(exc) else repr(exc))
            raise TransportError(f"Aggregator {index} at {url} is unreachable: {exc}.") from exc
        if response.status_code >= 500:
            self._note_down(index, f"HTTP {response.status_code}")
            raise TransportError(f"Aggregator {index} failed (HTTP {response.status_code}).")
        self._note_up(index)
        if response.status_code == 429:
            raise TransportError(f"Aggregator {index} failed (HTTP {response.status_code}).")
        if response.status_code != 200:
            raise ProtocolError(
                f"Aggregator {index} refused {method} {path} "
                f"(HTTP {response.status_code}): {response.text[:300]}"
            )
        return response

    def _note_down(self, index: int, problem: str) -> None:
        if index not in self._unreachable:
            self._unreachable.add(index)
            logger.warning(
                "aggregator %d at %s is unreachable (%s); its rounds go on without it "
                "while at least the threshold of aggregators answer",
                index,
                self._urls[index],
                problem,
            )

    def _note_up(self, index: int) -> None:
        if index in self._unreachable:
            self._unreachable.discard(index)
            logger.info("aggregator %d at %s answers again", index, self._urls[index])
