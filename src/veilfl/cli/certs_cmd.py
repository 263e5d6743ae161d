"""``veilfl certs``: a local CA and server certificates for the coordinator and the
aggregators."""

from __future__ import annotations

import argparse
from pathlib import Path

from veilfl.tls import (
    issue_server_certificate,
    load_certificate_authority,
    make_certificate_authority,
)

__all__ = ["add_parser", "run"]

DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``veilfl certs``."""
    parser = subparsers.add_parser("certs", help="make a local CA and server certificates (TLS)")
    parser.add_argument("--out", type=Path, required=True, help="folder for CA and certificates")
    parser.add_argument(
        "--name",
        action="append",
        default=[],
        help="a server certificate to issue, e.g. coordinator, aggregator-1 (repeat)",
    )
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help=f"host name or address of the servers (repeat; default {', '.join(DEFAULT_HOSTS)})",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Make the CA if the folder has none, then one certificate per ``--name``."""
    folder: Path = args.out
    if (folder / "ca.key").exists():
        authority = load_certificate_authority(folder)
        print(f"using the CA in {folder}")
    else:
        authority = make_certificate_authority(folder)
        print(f"wrote {authority.cert_file} and {folder / 'ca.key'} (private, 0600)")
    hosts = args.host or list(DEFAULT_HOSTS)
    for name in args.name or ["coordinator"]:
        issued = issue_server_certificate(authority, folder, name, hosts)
        print(
            f"wrote {issued.cert_file} and {issued.key_file} (private, 0600) for {', '.join(hosts)}"
        )
    print(
        f"Servers: --tls-cert NAME.pem --tls-key NAME.key; everyone who connects: "
        f"--ca-cert {authority.cert_file}"
    )
    return 0
