"""``veilfl identity`` (a client's Ed25519 key) and ``veilfl tokens`` (one-time
enrollment tokens)."""

from __future__ import annotations

import argparse
from pathlib import Path

from veilfl.auth.enrollment import generate_tokens
from veilfl.keyfiles import load_or_create_identity, write_tokens

__all__ = ["add_parsers"]


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``veilfl identity`` and ``veilfl tokens``."""
    identity = subparsers.add_parser(
        "identity", help="make (or show) a client's Ed25519 identity key"
    )
    identity.add_argument("--out", type=Path, required=True, help="identity file (0600)")
    identity.set_defaults(func=run_identity)
    tokens = subparsers.add_parser("tokens", help="make one-time client enrollment tokens")
    tokens.add_argument("--out", type=Path, required=True, help="token file to write (0600)")
    tokens.add_argument("--count", type=int, default=10, help="number of tokens")
    tokens.set_defaults(func=run_tokens)


def run_identity(args: argparse.Namespace) -> int:
    """Make the identity file if it is missing; print its public key and client id."""
    existed = args.out.exists()
    identity = load_or_create_identity(args.out)
    print(f"{'read' if existed else 'wrote'} {args.out} (private, 0600)")
    print(f"public key: {identity.public_key_text}")
    print(f"client id:  {identity.client_id}")
    print(
        "To enroll by allow-list, add the public key line to the coordinator's "
        "--allowed-clients file."
    )
    return 0


def run_tokens(args: argparse.Namespace) -> int:
    """Write ``--count`` tokens; each admits one client once."""
    write_tokens(generate_tokens(args.count), args.out)
    print(
        f"wrote {args.count} one-time tokens to {args.out} (0600). Start the coordinator with "
        f"--enrollment-tokens {args.out}; give each client one token "
        "(--enrollment-token or $VEILFL_ENROLLMENT_TOKEN)."
    )
    return 0
