"""``--quorum`` and ``--allow-split-certificates``: how many aggregators certify a round's
participant list, declared once for ``veilfl server``, ``simulate`` and ``demo``.

The default, ``ceil((m + t) / 2)``, is the least quorum q with ``2q - m >= t``: any two
certificates then share t signers, so the coordinator and t - 1 colluding aggregators
cannot certify two lists of one round (:mod:`veilfl.secagg.commitment`). A smaller
quorum is refused by :class:`~veilfl.secagg.config.SecureAggregationConfig` unless
``--allow-split-certificates`` accepts the risk.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_quorum_options", "quorum_from_args"]


def add_quorum_options(group: argparse._ActionsContainer) -> None:
    """Add ``--quorum`` and ``--allow-split-certificates`` beside ``--threshold``."""
    group.add_argument(
        "--quorum",
        type=int,
        default=None,
        metavar="Q",
        help="aggregators whose signatures certify a round's participant list (default "
        "ceil((m + t) / 2): then t - 1 colluding aggregators cannot help the coordinator "
        "certify a second list; a round needs Q live aggregators)",
    )
    group.add_argument(
        "--allow-split-certificates",
        action="store_true",
        help="UNSAFE: accept a --quorum Q with 2Q - m < t, with which the coordinator and "
        "t - 1 colluding aggregators can certify two participant lists of one round and "
        "learn one client's update from their difference",
    )


def quorum_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~veilfl.secagg.config.SecureAggregationConfig` keywords the two
    options give (``quorum`` 0: the default)."""
    return {
        "quorum": 0 if args.quorum is None else int(args.quorum),
        "allow_split_certificates": bool(args.allow_split_certificates),
    }
