"""The aggregator's async HTTP edge (``veilfl aggregator``).

It learns the run (id and vector length) from the coordinator, then takes sealed
shares from clients and answers the coordinator's request for an aggregate share.
``GET /metrics`` serves its Prometheus metrics
(:mod:`veilfl.aggregator.aggregator_metrics`).

Under distributed DP it also deals noise (``POST /v1/rounds/{r}/noise-deals``) and adds
the dealt noise to every sum it releases (the aggregate request carries the deals
addressed to it); its one noise state per run lives in the spool (``noise.state``,
written atomically before any deal or noised share leaves), so a restarted aggregator
continues it (:mod:`veilfl.secagg.dealt_noise`). The noise settings come from the
run's description (the published DP settings every client also sees); an operator who
does not trust the coordinator to show the aggregators the same settings as the
clients pins the least noise multiplier it deals with (``min_noise_multiplier``,
``--min-noise-multiplier``): runs with less, or without distributed DP, are refused.
Decrypting and adding a share is CPU work and runs in a worker thread; one lock
serialises access to the pure :class:`~veilfl.secagg.aggregator_node.AggregatorNode`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import shutil
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from veilfl.aggregator.access import AggregatorAccess
from veilfl.aggregator.aggregator_metrics import install_aggregator_metrics
from veilfl.aggregator.body_limits import CoordinatorBodyLimits
from veilfl.aggregator.run_follower import RunFollower
from veilfl.aggregator.share_spool import FileShareArchive
from veilfl.crypto.envelope import encode_share
from veilfl.crypto.keys import AggregatorKeyPair
from veilfl.durable_files import write_atomically
from veilfl.errors import (
    AuthenticationError,
    ConfigurationError,
    TransportError,
    WireFormatError,
)
from veilfl.protocol.client_policy import run_epsilon
from veilfl.protocol.messages import RunInfo
from veilfl.protocol.run_description import RunDescription, dealt_noise_profile
from veilfl.secagg.aggregator_node import AggregatorNode
from veilfl.secagg.aggregator_policy import AggregatorPolicy
from veilfl.secagg.aggregator_state import ShareArchive, ShareReceipt
from veilfl.secagg.commitment import CommitmentCertificate
from veilfl.secagg.contribution import ContributionLayout
from veilfl.secagg.dealt_noise import dealt_noise_config
from veilfl.secagg.run_consent import RunConsent, sign_consent
from veilfl.secagg.tree_noise import TreeNoiseAggregator
from veilfl.transport.body_limit import read_limited_body
from veilfl.transport.http_errors import install_error_handlers
from veilfl.transport.peer import certificate_rejected, tls_spoken_instead

__all__ = ["AggregatorService", "create_aggregator_app", "fetch_run"]

logger = logging.getLogger(__name__)
BINARY = "application/octet-stream"
NOISE_STATE = "noise.state"
"""The spool file that holds the run's noise state (secret: the folder is 0700)."""


async def fetch_run(
    coordinator_url: str,
    *,
    verify: ssl.SSLContext | bool = True,
    wait_s: float = 300.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RunDescription:
    """The coordinator's run description (its id recomputed from its spec), asked every
    half second while the coordinator starts up (it may take a while on a loaded
    machine), with a log line every 30 s of waiting.

    Raises:
        TransportError: if the coordinator does not answer within ``wait_s``, or its TLS
            certificate does not verify (not retried: nothing is sent to a server that
            fails it).
        ConfigurationError: if ``coordinator_url`` is ``http://`` and the coordinator
            speaks TLS (not retried either).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    said = started
    async with httpx.AsyncClient(
        base_url=coordinator_url, timeout=10.0, verify=verify, transport=transport
    ) as http:
        while True:
            try:
                response = await http.get("/v1/run")
                if response.status_code == 200:
                    return RunDescription.from_json(response.json())
            except httpx.TransportError as exc:
                if certificate_rejected(exc):
                    raise TransportError(
                        f"The coordinator at {coordinator_url} presented a TLS certificate that "
                        "does not verify against --ca-cert; refusing to attach."
                    ) from exc
                hint = await tls_spoken_instead(coordinator_url, exc)
                if hint is not None:
                    raise ConfigurationError(f"--coordinator: {hint}") from exc
            now = loop.time()
            if now - started >= wait_s:
                break
            if now - said >= 30.0:
                logger.info(
                    "still waiting for the coordinator at %s (%.0f s so far)",
                    coordinator_url,
                    now - started,
                )
                said = now
            await asyncio.sleep(0.5)
    raise TransportError(
        f"The coordinator at {coordinator_url} did not describe its run within {wait_s:.0f} s; "
        "check that it is running and that the URL is right."
    )


class AggregatorService:
    """Aggregator ``index``: a lock around an :class:`AggregatorNode`.

    Args:
        index: Share index, 1..m.
        keypair: This aggregator's key pair.
        spool: Folder for the shares of the open round; an aggregator restarted on the
            same folder takes its round back (default: a temporary folder, so a restart
            loses the round's shares).
        min_participants: The fewest clients this aggregator will sum over (set by
            the aggregator's operator, not by the coordinator).
        peer_fingerprints: Every aggregator's key fingerprint in index order, this one's
            included (``--peer-fingerprint``): a run with other aggregators is refused,
            and certificates are checked against these keys, so the coordinator cannot
            show fake peers and forge their commitments. Required unless
            ``trust_coordinator_peer_keys``.
        trust_coordinator_peer_keys: Take the peers' keys from the coordinator's run
            description, unchecked (``--trust-coordinator-peer-keys``): a coordinator
            can then invent every peer and certify as many participant lists as it
            likes, learning single clients' updates.
        min_noise_multiplier: If set, serve only runs with distributed DP whose noise
            multiplier is at least this (the operator's pin; see the module docstring).
        max_epsilon: If set, consent only to runs whose epsilon against the coordinator,
            computed from the run's description as a client computes it
            (:func:`~veilfl.protocol.client_policy.run_epsilon`), is at most this.
        allow_split_certificates: Serve a run whose certificate quorum lets two lists of
            a round be certified (``--allow-split-certificates``; see
            :class:`~veilfl.secagg.aggregator_node.AggregatorNode`).

    Raises:
        ConfigurationError: without ``peer_fingerprints`` or
            ``trust_coordinator_peer_keys``, or with a minimum below 1.
    """

    def __init__(
        self,
        *,
        index: int,
        keypair: AggregatorKeyPair,
        spool: Path | None,
        min_participants: int = 2,
        peer_fingerprints: Sequence[str] | None = None,
        trust_coordinator_peer_keys: bool = False,
        min_noise_multiplier: float | None = None,
        max_epsilon: float | None = None,
        allow_split_certificates: bool = False,
    ) -> None:
        if max_epsilon is not None and not max_epsilon > 0:
            raise ConfigurationError(f"--max-epsilon must be positive; got {max_epsilon}.")
        if min_participants < 1:
            raise ConfigurationError(
                f"--min-participants must be at least 1; got {min_participants}."
            )
        if not peer_fingerprints and not trust_coordinator_peer_keys:
            raise ConfigurationError(
                "This aggregator does not know its peers' keys: pass --peer-fingerprint for "
                "every aggregator of the run, this one included, in index order (`veilfl "
                "keys` prints them), or take them from the coordinator unchecked with "
                "--trust-coordinator-peer-keys."
            )
        pins = tuple(peer_fingerprints or ())
        if pins and (len(pins) < index or pins[index - 1] != keypair.fingerprint):
            raise ConfigurationError(
                f"--peer-fingerprint number {index} is not this aggregator's own fingerprint "
                f"{keypair.fingerprint}; list every aggregator's, in index order."
            )
        self.index = index
        self._allow_split_certificates = allow_split_certificates
        self._min_participants = min_participants
        self._min_noise_multiplier = min_noise_multiplier
        self._max_epsilon = max_epsilon
        self._peer_fingerprints = pins or None
        self._keypair = keypair
        self._spool_is_temporary = spool is None
        self._spool = spool or Path(tempfile.mkdtemp(prefix=f"veilfl-aggregator-{index}-"))
        self._spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = asyncio.Lock()
        self._node: AggregatorNode | None = None
        self._marker: dict[str, object] = {}
        self._consent: RunConsent | None = None
        self._refusal: tuple[str, str] | None = None

    def attach(self, run: RunInfo) -> None:
        """Serve the run described by the coordinator, and consent to it (signed): only
        after the run passed every check of this aggregator's operator.

        Raises:
            ConfigurationError: if the run has no secure aggregation, publishes another
                key for this aggregator or other peers than pinned, or less noise than
                pinned; the refusal is also what ``GET /v1/consent`` answers.
        """
        try:
            self._attach(run)
        except ConfigurationError as exc:
            self._refusal = (run.run_id, str(exc))
            raise
        self._refusal = None
        self._consent = sign_consent(
            self._keypair, index=self.index, run_id=run.run_id, noise=dealt_noise_profile(run)
        )

    def consent(self) -> RunConsent:
        """This aggregator's signed consent to the run it serves.

        Raises:
            ConfigurationError: if it refused the coordinator's latest run (the message
                names the run and the reason).
            TransportError: if it has not attached to a run yet.
        """
        if self._refusal is not None:
            run_id, reason = self._refusal
            raise ConfigurationError(f"Aggregator {self.index} refused run {run_id}: {reason}")
        if self._consent is None:
            raise TransportError("The aggregator has not attached to a run yet; retry shortly.")
        return self._consent

    def _attach(self, run: RunInfo) -> None:
        secure = run.secure
        if secure is None:
            raise ConfigurationError("The coordinator's run does not use secure aggregation.")
        published = {a.index: a for a in secure.aggregators}
        mine = published.get(self.index)
        if mine is None or mine.fingerprint != self._keypair.fingerprint:
            raise ConfigurationError(
                f"The coordinator does not publish this aggregator's key as aggregator "
                f"{self.index}; check --index and the key file."
            )
        fingerprints = tuple(a.fingerprint for a in secure.aggregators)
        if self._peer_fingerprints is None:
            logger.warning(
                "--trust-coordinator-peer-keys: the other aggregators' keys are the "
                "coordinator's word; it can invent peers, forge their commitments and learn "
                "single clients' updates. Pin them with --peer-fingerprint."
            )
        elif fingerprints != self._peer_fingerprints:
            raise ConfigurationError(
                f"The coordinator's run has aggregators {list(fingerprints)}, not the "
                f"{list(self._peer_fingerprints)} this aggregator's --peer-fingerprint names; "
                "refusing to serve it."
            )
        self._check_noise_pin(run)
        self._check_epsilon(run)
        layout = secure.layout
        run_id = run.run_id
        self._marker = {
            "run_id": run_id,
            "model_size": secure.model_size,
            "index": self.index,
            "fingerprints": list(fingerprints),
        }
        self._claim_spool()
        noise = self._noise_state(run, layout)
        node = AggregatorNode(
            index=self.index,
            keypair=self._keypair,
            run_id=run_id,
            layout=layout,
            peers=secure.signing_keys,
            archive_for_round=self._archive,
            min_participants=self._run_minimum(run),
            noise=noise,
            save_noise=self._save_noise,
            peer_public_keys={a.index: a.hpke_key() for a in secure.aggregators},
            allow_split_certificates=self._allow_split_certificates,
        )
        restored = node.restore(self._spooled_rounds())
        self._node = node
        if restored is not None:
            clients = len(node.open_rounds[restored])
            logger.info("restored round %d (%d shares) from %s", restored, clients, self._spool)
        if self._spool_is_temporary:
            logger.warning(
                "shares are spooled in the temporary folder %s: a restart loses the open "
                "round's shares; pass --spool DIR to make restarts safe",
                self._spool,
            )
        logger.info("aggregator %d serving run %s", self.index, run_id)

    def _run_minimum(self, run: RunInfo) -> int:
        """The fewest clients a sum of this run may have: the operator's minimum, or the
        contributions a DP release of the run needs if more (a sum over fewer is refused,
        so the release is withheld)."""
        needed = 0 if run.dp is None else run.dp.config.min_contributions
        return max(self._min_participants, needed)

    def _check_epsilon(self, run: RunInfo) -> None:
        """Refuse a run whose epsilon against the coordinator exceeds the operator's
        ``--max-epsilon`` (if it set one)."""
        ceiling = self._max_epsilon
        if ceiling is None:
            return
        epsilon = run_epsilon(run)
        if not epsilon <= ceiling:
            raise ConfigurationError(
                f"This aggregator serves runs of epsilon at most {ceiling:g} against the "
                f"coordinator (--max-epsilon); the coordinator's run has {epsilon:.4g}; "
                "refusing to serve it."
            )

    def _check_noise_pin(self, run: RunInfo) -> None:
        """Refuse a run with less noise than the operator pinned (if it pinned any)."""
        pin = self._min_noise_multiplier
        if pin is None:
            return
        dp = run.dp
        if dp is None or dp.config.placement != "distributed":
            has = "no distributed DP"
        elif dp.config.noise_multiplier < pin:
            has = f"noise multiplier {dp.config.noise_multiplier:g}"
        else:
            return
        raise ConfigurationError(
            f"This aggregator deals distributed DP noise of multiplier at least {pin:g} "
            f"(--min-noise-multiplier); the coordinator's run has {has}; refusing to serve it."
        )

    def _noise_state(self, run: RunInfo, layout: ContributionLayout) -> TreeNoiseAggregator | None:
        """The run's noise state under distributed DP: the spool's, else a fresh one."""
        dp = run.dp
        if dp is None or dp.config.placement != "distributed":
            return None
        if dp.expected_clients is None:
            raise ConfigurationError(
                "The coordinator's run uses distributed DP but does not say how many clients "
                "it expects per round; the aggregator cannot size the noise it deals. Use "
                "the same veilfl version as the coordinator."
            )
        config = dealt_noise_config(dp.config, layout=layout, expected_clients=dp.expected_clients)
        path = self._spool / NOISE_STATE
        if path.exists():
            state = TreeNoiseAggregator.from_bytes(
                path.read_bytes(), config=config, index=self.index
            )
            logger.info("continuing the noise state (step %d)", state.released_steps)
            return state
        return TreeNoiseAggregator(config, index=self.index)

    def _save_noise(self, data: bytes) -> None:
        write_atomically(self._spool / NOISE_STATE, data)

    def _claim_spool(self) -> None:
        """Tie the spool to this run and its aggregators; another run's state is cleared."""
        marker = self._spool / "run.json"
        wanted = self._marker
        if marker.exists():
            try:
                held = json.loads(marker.read_text())
            except (OSError, ValueError):
                held = None
            if held == wanted:
                return
            logger.warning("the spool %s holds another run's shares; clearing it", self._spool)
            for folder in self._spool.glob("round-*"):
                shutil.rmtree(folder, ignore_errors=True)
            (self._spool / NOISE_STATE).unlink(missing_ok=True)
        write_atomically(marker, json.dumps(wanted).encode())

    def _spooled_rounds(self) -> list[int]:
        rounds = []
        for folder in self._spool.glob("round-*"):
            suffix = folder.name.removeprefix("round-")
            if folder.is_dir() and suffix.isdigit():
                rounds.append(int(suffix))
        return rounds

    def _archive(self, round_id: int) -> ShareArchive:
        return FileShareArchive(self._spool / f"round-{round_id}")

    @property
    def run_id(self) -> str:
        """The run served now."""
        return str(self._marker.get("run_id", ""))

    def _require_node(self) -> AggregatorNode:
        if self._node is None:
            raise TransportError("The aggregator has not attached to a run yet; retry shortly.")
        return self._node

    def coordinator_body_limits(self) -> CoordinatorBodyLimits:
        """The largest body each coordinator-only endpoint accepts for the run served.

        Raises:
            TransportError: before the aggregator has attached to a run.
        """
        node = self._require_node()
        return CoordinatorBodyLimits.for_run(node.layout, max_participants=node.max_participants)

    def policy(self) -> AggregatorPolicy:
        """This aggregator's policy (its operator's settings), signed with its key.
        Clients and the coordinator read it; it is served before any run is attached."""
        unsigned = AggregatorPolicy(
            index=self.index,
            fingerprint=self._keypair.fingerprint,
            min_participants=self._min_participants,
        )
        return AggregatorPolicy(
            index=unsigned.index,
            fingerprint=unsigned.fingerprint,
            min_participants=unsigned.min_participants,
            signature=self._keypair.sign(unsigned.statement()),
        )

    async def receive(self, round_id: int, client_id: str, envelope: bytes) -> ShareReceipt:
        """Open and check one sealed share (outside the lock: it is the costly part),
        then store and add it."""
        node = self._require_node()
        opened = await asyncio.to_thread(node.open_share, round_id, client_id, envelope)
        async with self._lock:
            return await asyncio.to_thread(node.take_share, opened)

    async def verify(
        self, round_id: int, clients: Sequence[str], query_seed: bytes
    ) -> dict[str, bytes]:
        """Each client's verifier share for ``query_seed``, encoded."""
        node = self._require_node()
        async with self._lock:
            answers = await asyncio.to_thread(node.verify, round_id, clients, query_seed)
        return {client: share.to_bytes() for client, share in answers.items()}

    async def commit(self, round_id: int, participants: Sequence[str]) -> bytes:
        """This aggregator's signed commitment to ``participants``."""
        node = self._require_node()
        async with self._lock:
            return await asyncio.to_thread(node.commit, round_id, participants)

    async def holdings(self, round_id: int) -> frozenset[str]:
        """The clients whose shares of ``round_id`` this aggregator holds."""
        node = self._require_node()
        async with self._lock:
            return node.holdings(round_id)

    async def aggregate(
        self,
        round_id: int,
        participants: Sequence[str],
        certificate: CommitmentCertificate,
        *,
        noise_step: int | None = None,
        deals: Sequence[bytes] = (),
    ) -> bytes:
        """The encoded aggregate share over ``participants``, against a certificate
        (with the dealt noise added, under distributed DP)."""
        node = self._require_node()
        async with self._lock:
            share = await asyncio.to_thread(
                lambda: node.aggregate(
                    round_id, participants, certificate, noise_step=noise_step, deals=deals
                )
            )
        return await asyncio.to_thread(encode_share, share)

    async def deal_noise(self, round_id: int, step: int) -> dict[int, bytes]:
        """This aggregator's sealed, signed noise deals for ``round_id``, by recipient."""
        node = self._require_node()
        async with self._lock:
            return await asyncio.to_thread(node.deal_noise, round_id, step)

    def spool_usage(self) -> tuple[int, int]:
        """Files and bytes in the spool folder (walks it: call it off the event loop)."""
        files = size = 0
        for path in self._spool.rglob("*"):
            try:
                if path.is_file():
                    files += 1
                    size += path.stat().st_size
            except OSError:  # removed while we looked (a round was dropped)
                continue
        return files, size

    def status(self) -> dict[str, Any]:
        """Rounds held and how many clients each has summed."""
        rounds = self._node.open_rounds if self._node else {}
        return {
            "index": self.index,
            "attached": self._node is not None,
            "fingerprint": self._keypair.fingerprint,
            "rounds": {str(r): len(c) for r, c in rounds.items()},
        }


class CertificateBody(BaseModel):
    """A commitment certificate as :meth:`CommitmentCertificate.to_json` writes it (a
    round id that is not a 64-bit whole number, ``1e999`` say, is refused here)."""

    round_id: int = Field(ge=0, lt=2**64)
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    signatures: dict[str, str] = Field(max_length=16)


class AggregateRequest(BaseModel):
    """Body of ``POST /v1/rounds/{round_id}/aggregate``: the list, and the certificate
    that a quorum of the aggregators committed to it."""

    participants: list[str] = Field(min_length=1, max_length=1_000_000)
    certificate: CertificateBody
    noise_step: int | None = Field(default=None, ge=1)
    deals: list[str] = Field(default_factory=list, max_length=64)


class NoiseDealsRequest(BaseModel):
    """Body of ``POST /v1/rounds/{round_id}/noise-deals``: the noise step."""

    step: int = Field(ge=1)


class NoiseDealsResponse(BaseModel):
    """The sealed, signed deals by recipient index, standard base64."""

    round_id: int
    deals: dict[str, str]


class VerifyRequest(BaseModel):
    """Body of ``POST /v1/rounds/{round_id}/verify``: whose proofs to answer, for which
    query seed (64 hex digits; one per round)."""

    clients: list[str] = Field(min_length=1, max_length=1_000_000)
    query_seed: str = Field(pattern=r"^[0-9a-f]{64}$")


class VerifyResponse(BaseModel):
    """Each client's verifier share, standard base64."""

    round_id: int
    answers: dict[str, str]


class CommitRequest(BaseModel):
    """Body of ``POST /v1/rounds/{round_id}/commit``: the list to commit to."""

    participants: list[str] = Field(min_length=1, max_length=1_000_000)


class CommitResponse(BaseModel):
    """This aggregator's signature of its commitment, standard base64."""

    round_id: int
    signature: str


class PolicyResponse(BaseModel):
    """The aggregator's signed policy."""

    index: int
    fingerprint: str
    min_participants: int
    signature: str


class Holdings(BaseModel):
    """Answer to ``GET /v1/rounds/{round_id}/holdings``: whose shares this aggregator
    holds (the coordinator builds the participant list from these, not from receipts)."""

    round_id: int
    clients: list[str]


class ShareAccepted(BaseModel):
    """Answer to a share upload."""

    aggregator_index: int
    round_id: int
    duplicate: bool


_Body = TypeVar("_Body", bound=BaseModel)


def _inline_refs(schema: Any, definitions: dict[str, Any]) -> Any:
    """``schema`` with every ``#/$defs/...`` reference replaced by its definition."""
    if isinstance(schema, dict):
        reference = schema.get("$ref", "")
        if reference.startswith("#/$defs/"):
            return _inline_refs(definitions[reference.removeprefix("#/$defs/")], definitions)
        return {k: _inline_refs(v, definitions) for k, v in schema.items() if k != "$defs"}
    if isinstance(schema, list):
        return [_inline_refs(v, definitions) for v in schema]
    return schema


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for an endpoint that reads ``model`` itself (after its signature check)."""
    schema = model.model_json_schema()
    inlined = _inline_refs(schema, schema.get("$defs", {}))
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inlined}}}}


def _parse_body(model: type[_Body], body: bytes) -> _Body:
    """``body`` as ``model``; a body that does not validate is a 422, as FastAPI's own."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None


def create_aggregator_app(
    service: AggregatorService,
    *,
    coordinator_url: str | None,
    max_share_bytes: int,
    access: AggregatorAccess,
    run: RunInfo | None = None,
    verify: ssl.SSLContext | bool = True,
    follow_interval_s: float | None = None,
    coordinator_transport: httpx.AsyncBaseTransport | None = None,
    on_run_done: Callable[[], None] | None = None,
) -> FastAPI:
    """The aggregator's FastAPI application.

    Args:
        service: The aggregator.
        coordinator_url: Where to learn the run at start-up.
        max_share_bytes: Largest envelope accepted.
        access: Who may send shares (admitted clients) and ask for aggregates (the
            coordinator).
        run: The run description, if it is known already (the aggregator attaches
            at once and does not ask the coordinator).
        verify: How to verify the coordinator's TLS certificate.
        follow_interval_s: With a coordinator URL, check every this many seconds
            (and whenever a share's admission does not verify) whether the coordinator
            started a new run, and follow it (see :mod:`veilfl.aggregator.run_follower`).
            None: serve the first run only.
        coordinator_transport: An httpx transport to the coordinator (tests).
        on_run_done: Called once the coordinator reports the run done (when following
            it); ``veilfl aggregator`` exits then. None: serve on.
    """
    if run is not None:
        access.attach(run)
        service.attach(run)
    elif coordinator_url is None:
        raise ConfigurationError("Give the aggregator the coordinator's URL or the run.")
    follower: RunFollower | None = None

    def attach(described: RunInfo) -> None:
        service.attach(described)
        access.attach(described)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal follower
        if coordinator_url is None or (follow_interval_s is None and run is not None):
            yield
            return
        if follow_interval_s is None:  # serve one run: learn it before serving
            described = await fetch_run(
                coordinator_url, verify=verify, transport=coordinator_transport
            )
            try:
                attach(described.info)
            except ConfigurationError as exc:  # GET /v1/consent says so to the coordinator
                logger.error("refusing run %s: %s", described.run_id, exc)
            yield
            return
        # Serve at once (the coordinator reads this aggregator's policy before it
        # creates the run) and attach to the run as soon as the coordinator describes it.
        initial = "" if run is None else run.run_id
        if run is None:  # a coordinator that is up already is followed at once
            try:
                described = await fetch_run(
                    coordinator_url, verify=verify, wait_s=0.0, transport=coordinator_transport
                )
            except TransportError as exc:  # not up yet: the follower keeps asking
                cause = exc.__cause__
                if isinstance(cause, httpx.TransportError) and certificate_rejected(cause):
                    raise  # a coordinator whose certificate fails: one line, at once
            else:
                with contextlib.suppress(ConfigurationError):
                    attach(described.info)  # a refusal is the follower's to report
                    initial = described.run_id
        follower = RunFollower(
            coordinator_url,
            attach=attach,
            run_id=initial,
            verify=verify,
            interval_s=follow_interval_s,
            transport=coordinator_transport,
        )

        async def follow(follower: RunFollower) -> None:
            await follower.follow(until_done=on_run_done is not None)
            if on_run_done is not None:
                on_run_done()

        following = asyncio.create_task(follow(follower))
        try:
            yield
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following

    app = FastAPI(
        title=f"veilfl aggregator {service.index}",
        version="1",
        description="Sums HPKE-sealed Shamir shares; answers with aggregate shares only.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_aggregator_metrics(app, service)

    async def coordinator_body(
        request: Request,
        round_id: int,
        model: type[_Body],
        limit: Callable[[CoordinatorBodyLimits], int],
    ) -> _Body:
        """A coordinator request's body: at most its declared size (413, unread,
        otherwise), signed by the coordinator, and only then parsed."""
        body = await read_limited_body(request, limit=limit(service.coordinator_body_limits()))
        await access.check_coordinator(request, round_id=round_id, body=body)
        return _parse_body(model, body)

    @app.post(
        "/v1/rounds/{round_id}/shares",
        status_code=202,
        response_model=ShareAccepted,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {BINARY: {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def upload_share(round_id: int, request: Request) -> ShareAccepted:
        body = await read_limited_body(request, limit=max_share_bytes)
        try:
            client_id = await access.share_sender(request, round_id=round_id, body=body)
        except AuthenticationError:
            # Perhaps the coordinator started a new run: follow it, then check again.
            if follower is None or not await follower.check_soon():
                raise
            client_id = await access.share_sender(request, round_id=round_id, body=body)
        if not body:
            raise WireFormatError("The share body is empty; send the sealed share bytes.")
        receipt = await service.receive(round_id, client_id, body)
        return ShareAccepted(
            aggregator_index=receipt.aggregator_index,
            round_id=receipt.round_id,
            duplicate=receipt.duplicate,
        )

    @app.post(
        "/v1/rounds/{round_id}/aggregate",
        response_class=Response,
        responses={200: {"content": {BINARY: {}}, "description": "the aggregate share"}},
        openapi_extra=_json_body(AggregateRequest),
    )
    async def aggregate(round_id: int, request: Request) -> Response:
        body = await coordinator_body(request, round_id, AggregateRequest, lambda b: b.aggregate)
        certificate = CommitmentCertificate.from_json(
            body.certificate.model_dump(), run_id=service.run_id, participants=body.participants
        )
        try:
            deals = [base64.b64decode(d, validate=True) for d in body.deals]
        except ValueError:
            raise WireFormatError("A noise deal is not standard base64.") from None
        share = await service.aggregate(
            round_id, body.participants, certificate, noise_step=body.noise_step, deals=deals
        )
        return Response(content=share, media_type=BINARY)

    @app.post(
        "/v1/rounds/{round_id}/noise-deals",
        response_model=NoiseDealsResponse,
        openapi_extra=_json_body(NoiseDealsRequest),
    )
    async def noise_deals(round_id: int, request: Request) -> NoiseDealsResponse:
        body = await coordinator_body(request, round_id, NoiseDealsRequest, lambda b: b.noise_deals)
        deals = await service.deal_noise(round_id, body.step)
        return NoiseDealsResponse(
            round_id=round_id,
            deals={str(j): base64.b64encode(d).decode() for j, d in deals.items()},
        )

    @app.post(
        "/v1/rounds/{round_id}/verify",
        response_model=VerifyResponse,
        openapi_extra=_json_body(VerifyRequest),
    )
    async def verify_contributions(round_id: int, request: Request) -> VerifyResponse:
        body = await coordinator_body(
            request, round_id, VerifyRequest, lambda b: b.participant_list
        )
        answers = await service.verify(round_id, body.clients, bytes.fromhex(body.query_seed))
        return VerifyResponse(
            round_id=round_id,
            answers={c: base64.b64encode(a).decode() for c, a in answers.items()},
        )

    @app.post(
        "/v1/rounds/{round_id}/commit",
        response_model=CommitResponse,
        openapi_extra=_json_body(CommitRequest),
    )
    async def commit(round_id: int, request: Request) -> CommitResponse:
        body = await coordinator_body(
            request, round_id, CommitRequest, lambda b: b.participant_list
        )
        signature = await service.commit(round_id, body.participants)
        return CommitResponse(round_id=round_id, signature=base64.b64encode(signature).decode())

    @app.get("/v1/policy", response_model=PolicyResponse)
    async def policy() -> PolicyResponse:
        return PolicyResponse(**service.policy().to_json())

    @app.get("/v1/consent")
    async def consent() -> dict[str, Any]:
        try:
            return service.consent().to_json()
        except ConfigurationError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None

    @app.get("/v1/rounds/{round_id}/holdings", response_model=Holdings)
    async def holdings(round_id: int, request: Request) -> Holdings:
        await access.check_coordinator(request, round_id=round_id)
        return Holdings(round_id=round_id, clients=sorted(await service.holdings(round_id)))

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        return service.status()

    return app
