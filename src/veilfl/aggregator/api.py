"""Start an aggregator from Python: :func:`run_aggregator` (``veilfl aggregator`` calls it)."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from pathlib import Path

from veilfl.auth.rate_limit import DEFAULT_RATE_LIMIT, RateLimit
from veilfl.crypto.keys import AggregatorKeyPair
from veilfl.errors import ConfigurationError, TransportError
from veilfl.keyfiles import read_private_key
from veilfl.logging_setup import uvicorn_log_options
from veilfl.protocol.aggregator_minimums import DEFAULT_MIN_PARTICIPANTS
from veilfl.tls import ServerCertificate, check_url_scheme, uvicorn_tls_options

__all__ = ["FOLLOW_INTERVAL_S", "run_aggregator"]

FOLLOW_INTERVAL_S = 2.0
"""How often a running aggregator checks whether its coordinator started a new run."""

logger = logging.getLogger("veilfl.aggregator")


async def run_aggregator(
    *,
    index: int,
    key: AggregatorKeyPair | Path,
    coordinator_url: str,
    peer_fingerprints: Sequence[str] | None,
    host: str = "127.0.0.1",
    port: int = 8090,
    certificate: ServerCertificate | None = None,
    verify: ssl.SSLContext | bool = True,
    insecure: bool = False,
    spool: Path | None = None,
    min_participants: int = DEFAULT_MIN_PARTICIPANTS,
    max_share_bytes: int = 64 * 2**20,
    trust_coordinator_peer_keys: bool = False,
    min_noise_multiplier: float | None = None,
    max_epsilon: float | None = None,
    allow_split_certificates: bool = False,
    rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
    stay: bool = False,
    log_level: str = "info",
) -> None:
    """Serve as aggregator ``index`` of the coordinator's run until it is done.

    The aggregator learns the run from the coordinator, checks it against its own
    policy (its peers, minimum participants, noise, epsilon) and consents to it, signed;
    it then takes clients' shares and answers the coordinator's aggregate requests.

    Args:
        index: Share index, 1..m.
        key: This aggregator's key pair, or its private key file (0600, `veilfl keys`).
        coordinator_url: Where to learn the run.
        peer_fingerprints: The fingerprint of each aggregator of the run, this one
            included, in index order; a run with other aggregators is refused. None
            only with ``trust_coordinator_peer_keys``.
        host: Address to listen on.
        port: Port to listen on.
        certificate: This server's TLS certificate; None serves plaintext HTTP, which
            needs ``insecure``.
        verify: How to verify the coordinator's certificate (an SSL context trusting
            the run's CA, see :func:`veilfl.tls.client_ssl_context`).
        insecure: Plaintext HTTP was chosen (trusted test networks only).
        spool: Folder for the open round's shares; restarting on it takes the round
            back (None: in memory).
        min_participants: Never answer with a sum over fewer clients than this.
        max_share_bytes: Largest share accepted.
        trust_coordinator_peer_keys: UNSAFE: take the peers' keys from the coordinator
            unchecked (it could then invent them and learn single clients' updates).
        min_noise_multiplier: Serve only runs with distributed DP noise of at least this.
        max_epsilon: Consent only to runs whose epsilon is at most this.
        allow_split_certificates: UNSAFE: serve a run whose quorum lets two
            certificates of a round share fewer than t aggregators.
        rate_limit: Per-client request limit (None: unlimited).
        stay: Keep serving after the run is done, following the coordinator's next run
            (until cancelled).
        log_level: The level uvicorn's own lines are shown at.

    Raises:
        ConfigurationError: for settings that contradict each other, or an
            ``http://`` coordinator without ``insecure``.
        TransportError: if the server could not start (say, the port is taken).
    """
    import uvicorn  # the web stack loads only for the role that serves

    from veilfl.aggregator.access import AggregatorAccess
    from veilfl.aggregator.service import AggregatorService, create_aggregator_app

    if certificate is None and not insecure:
        raise ConfigurationError(
            f"Aggregator {index} needs a TLS certificate, or insecure=True for plaintext "
            "HTTP on a trusted test network."
        )
    check_url_scheme(coordinator_url, insecure=insecure)
    service = AggregatorService(
        index=index,
        keypair=read_private_key(key) if isinstance(key, Path) else key,
        spool=spool,
        min_participants=min_participants,
        peer_fingerprints=peer_fingerprints or None,
        trust_coordinator_peer_keys=trust_coordinator_peer_keys,
        min_noise_multiplier=min_noise_multiplier,
        max_epsilon=max_epsilon,
        allow_split_certificates=allow_split_certificates,
    )
    logger.info(
        "serving; the run comes from the coordinator at %s once it describes one",
        coordinator_url,
    )
    server: uvicorn.Server | None = None

    def run_done() -> None:
        logger.info("the run is done; exiting (pass --stay to serve on)")
        if server is not None:
            server.should_exit = True

    app = create_aggregator_app(
        service,
        coordinator_url=coordinator_url,
        follow_interval_s=FOLLOW_INTERVAL_S,
        max_share_bytes=max_share_bytes,
        access=AggregatorAccess(index=index, rate_limit=rate_limit),
        verify=verify,
        on_run_done=None if stay else run_done,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            timeout_keep_alive=60,
            backlog=4096,
            **uvicorn_log_options(log_level),
            **uvicorn_tls_options(certificate),  # type: ignore[arg-type]
        )
    )
    try:
        await server.serve()
    except SystemExit:  # uvicorn's way of saying it could not start
        raise TransportError(
            f"Aggregator {index} could not serve on {host}:{port} (see the log); is the port taken?"
        ) from None
