"""Command-line options for TLS, client enrollment and rate limits (shared by the
server, aggregator and client commands)."""

from __future__ import annotations

import argparse
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from veilfl.auth.enrollment import EnrollmentPolicy
from veilfl.auth.rate_limit import DEFAULT_RATE_LIMIT, RateLimit
from veilfl.errors import ConfigurationError
from veilfl.keyfiles import read_allowed_keys, read_tokens
from veilfl.tls import (
    INSECURE_WARNING,
    ServerCertificate,
    check_url_scheme,
    client_ssl_context,
    server_certificate,
    uvicorn_tls_options,
)

__all__ = [
    "TOKEN_ENV",
    "TransportSecurity",
    "add_enrollment_options",
    "add_rate_limit_options",
    "add_tls_options",
    "enrollment_from_args",
    "enrollment_token_from",
    "rate_limit_from_args",
    "transport_from_args",
]

logger = logging.getLogger("veilfl.security")
TOKEN_ENV = "VEILFL_ENROLLMENT_TOKEN"


@dataclass(frozen=True)
class TransportSecurity:
    """How a process serves and connects.

    Attributes:
        certificate: This server's certificate (None: plaintext HTTP, or not a server).
        verify: How outgoing connections verify servers (an SSL context trusting the
            run's CA, or True for the system's CAs).
        insecure: Plaintext HTTP was chosen explicitly.
    """

    certificate: ServerCertificate | None
    verify: ssl.SSLContext | bool
    insecure: bool

    def uvicorn_options(self) -> dict[str, str]:
        """``ssl_certfile``/``ssl_keyfile`` for uvicorn (empty for plaintext)."""
        return uvicorn_tls_options(self.certificate)

    def check_url(self, url: str) -> None:
        """Refuse an ``http://`` peer unless plaintext was chosen.

        Raises:
            ConfigurationError: saying what to pass instead.
        """
        check_url_scheme(url, insecure=self.insecure)


def add_tls_options(parser: argparse.ArgumentParser, *, serves: bool) -> None:
    """``--ca-cert`` and ``--insecure``; with ``serves``, also ``--tls-cert/--tls-key``."""
    group = parser.add_argument_group("transport security")
    if serves:
        group.add_argument("--tls-cert", type=Path, default=None, help="server certificate")
        group.add_argument("--tls-key", type=Path, default=None, help="its private key (0600)")
    group.add_argument(
        "--ca-cert",
        type=Path,
        default=None,
        help="CA that signed the servers' certificates (made by `veilfl certs`)",
    )
    group.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext HTTP without TLS (trusted test networks only; prints a warning)",
    )


def transport_from_args(args: argparse.Namespace, *, serves: bool) -> TransportSecurity:
    """The transport security the options ask for.

    Raises:
        ConfigurationError: if a server has neither a certificate nor ``--insecure``.
    """
    insecure = bool(args.insecure)
    certificate = None
    if serves:
        if args.tls_cert is not None or args.tls_key is not None:
            if args.tls_cert is None or args.tls_key is None:
                raise ConfigurationError("Pass both --tls-cert and --tls-key.")
            certificate = server_certificate(args.tls_cert, args.tls_key)
        elif not insecure:
            raise ConfigurationError(
                "Serve over TLS: pass --tls-cert and --tls-key (make them with `veilfl certs`), "
                "or --insecure for plaintext HTTP on a trusted test network."
            )
    if insecure:
        logger.warning(INSECURE_WARNING)
    verify: ssl.SSLContext | bool = (
        client_ssl_context(args.ca_cert) if args.ca_cert is not None else True
    )
    return TransportSecurity(certificate=certificate, verify=verify, insecure=insecure)


def add_enrollment_options(parser: argparse.ArgumentParser) -> None:
    """Who may join the run (at least one is required)."""
    group = parser.add_argument_group("client enrollment (choose at least one)")
    group.add_argument(
        "--enrollment-tokens",
        type=Path,
        default=None,
        help="file of one-time tokens, one per line (make it with `veilfl tokens`)",
    )
    group.add_argument(
        "--allowed-clients",
        type=Path,
        default=None,
        help="file of client public keys, one per line (`veilfl identity` prints them)",
    )
    group.add_argument(
        "--open-enrollment",
        action="store_true",
        help="let any client with a key join (development only)",
    )


def enrollment_from_args(args: argparse.Namespace) -> EnrollmentPolicy:
    """The enrollment policy the options ask for.

    Raises:
        ConfigurationError: if none is chosen, or a file cannot be read.
    """
    tokens = read_tokens(args.enrollment_tokens) if args.enrollment_tokens else []
    keys = read_allowed_keys(args.allowed_clients) if args.allowed_clients else []
    if not (tokens or keys or args.open_enrollment):
        raise ConfigurationError(
            "Choose who may join: --enrollment-tokens FILE (make one with `veilfl tokens`), "
            "--allowed-clients FILE (public keys from `veilfl identity`), or "
            "--open-enrollment for development."
        )
    if args.open_enrollment:
        logger.warning("open enrollment: any client holding a key can join this run")
    return EnrollmentPolicy(
        allowed_keys=frozenset(keys),
        token_digests=EnrollmentPolicy.from_tokens(tokens).token_digests if tokens else frozenset(),
        open=bool(args.open_enrollment),
    )


def add_rate_limit_options(parser: argparse.ArgumentParser) -> None:
    """``--rate-limit`` and ``--rate-burst`` (per client)."""
    group = parser.add_argument_group("rate limits")
    group.add_argument(
        "--rate-limit",
        type=float,
        default=DEFAULT_RATE_LIMIT.per_second,
        help="requests per second per client (0: unlimited)",
    )
    group.add_argument(
        "--rate-burst",
        type=float,
        default=DEFAULT_RATE_LIMIT.burst,
        help="requests a client may send at once",
    )


def rate_limit_from_args(args: argparse.Namespace) -> RateLimit | None:
    """The per-client rate limit (None: unlimited)."""
    if args.rate_limit <= 0:
        return None
    return RateLimit(per_second=args.rate_limit, burst=args.rate_burst)


def enrollment_token_from(explicit: str | None, file: Path | None = None) -> str | None:
    """The token from ``--enrollment-token``, ``--enrollment-token-file`` or
    ``$VEILFL_ENROLLMENT_TOKEN``, in that order.

    Raises:
        ConfigurationError: if the token file cannot be read or holds no token.
    """
    if explicit:
        return explicit.strip()
    if file is not None:
        try:
            text = file.read_text().strip()
        except OSError as exc:
            raise ConfigurationError(
                f"--enrollment-token-file {file} cannot be read: {exc.strerror}."
            ) from None
        if not text or "\n" in text:
            raise ConfigurationError(
                f"--enrollment-token-file {file} must hold exactly one token on one line."
            )
        return text
    return os.environ.get(TOKEN_ENV, "").strip() or None
