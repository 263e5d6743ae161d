"""``veilfl keys``: make aggregator key pairs (private files mode 0600)."""

from __future__ import annotations

import argparse
from pathlib import Path

from veilfl.crypto.keys import generate_keypair
from veilfl.keyfiles import write_keypair

__all__ = ["add_parser", "key_paths", "run"]


def key_paths(folder: Path, index: int) -> tuple[Path, Path]:
    """The private and public key files of aggregator ``index`` in ``folder``."""
    return folder / f"aggregator-{index}.key", folder / f"aggregator-{index}.pub"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``veilfl keys``."""
    parser = subparsers.add_parser(
        "keys",
        help="make aggregator key pairs and print their fingerprints",
        description="Make one key pair per aggregator (an HPKE key that clients seal shares "
        "to, and an Ed25519 key that signs its commitments and its policy) and print each "
        "aggregator's fingerprint, which covers both public keys. Clients pin them with "
        "--aggregator-fingerprint, aggregators their peers with --peer-fingerprint, in "
        "index order.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the key files")
    parser.add_argument("--count", type=int, default=3, help="number of aggregators")
    parser.add_argument(
        "--kem",
        choices=["x25519", "mlkem768-x25519"],
        default="x25519",
        help="HPKE KEM (mlkem768-x25519: post-quantum hybrid)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the key files and print each fingerprint."""
    for index in range(1, args.count + 1):
        keypair = generate_keypair(args.kem)
        private, public = key_paths(args.out, index)
        write_keypair(keypair, private, public)
        print(
            f"aggregator {index}: {private} (private, 0600), {public}, "
            f"fingerprint {keypair.fingerprint}"
        )
    return 0
