"""The coordinator's side of secure aggregation: pick a consistent set, reconstruct.

Only the *sum* of the participants' vectors is ever reconstructed, from the
aggregate shares of at least t aggregators that all hold every participant.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from veilfl.crypto.shamir import Share
from veilfl.errors import ProtocolError, ReconstructionError
from veilfl.secagg.contribution import ContributionLayout
from veilfl.strategy.aggregate import Aggregate

__all__ = ["SPARE_KEEPING_SHARE", "AggregationPlan", "plan_aggregation", "reconstruct_aggregate"]

SPARE_KEEPING_SHARE = 0.5
"""An aggregator stays in a round's plan while the clients it holds in common with the
others are at least this share of the most that any t aggregators hold: clients that
reached fewer aggregators (a minority) are left out rather than the aggregator, so no
client alone can shrink the set that verifies and sums (:func:`plan_aggregation`)."""


@dataclass(frozen=True)
class AggregationPlan:
    """Which aggregators to ask, and for the sum over which clients.

    Attributes:
        aggregators: Aggregator indices, at least t of them, each holding every participant.
        participants: The final participant list P.
    """

    aggregators: tuple[int, ...]
    participants: tuple[str, ...]


def plan_aggregation(
    acknowledged: Mapping[str, Collection[int]],
    *,
    alive: Collection[int],
    threshold: int,
    min_participants: int,
) -> AggregationPlan:
    """Choose the aggregators first, then the participants they all hold.

    Every aggregator of the plan verifies and can sum, so aggregators beyond t are the
    round's spares: they let it survive a failure after the holdings, and their
    answers are the consistency check of :func:`~veilfl.secagg.bounds.decide`. The
    plan is the **largest** set of alive aggregators (at least t) that hold a common
    list of at least :data:`SPARE_KEEPING_SHARE` of the most clients any t alive
    aggregators hold in common (and at least ``min_participants``); among sets of that
    size, the one that holds the most clients. The participants are the clients that
    every aggregator of the plan holds.

    So a client whose shares reached fewer aggregators than the others' (exactly t, say)
    is left out, and cannot remove a spare: only when the clients an aggregator lacks are
    more than half of the best list is the aggregator the one that failed (it was down
    or lost its spool), and dropping it from the plan keeps the round's clients.

    Args:
        acknowledged: For each reporting client, the aggregators that hold its share.
        alive: Aggregators believed reachable.
        threshold: t.
        min_participants: The smallest acceptable participant list.

    Returns:
        The plan: its aggregators and the clients all of them hold.

    Raises:
        ProtocolError: if no t aggregators hold at least ``min_participants`` clients.
    """
    live = sorted(set(alive))
    by_ack_set = Counter(frozenset(acks) & frozenset(live) for acks in acknowledged.values())

    def held_by_all(group: tuple[int, ...]) -> int:
        wanted = set(group)
        return sum(n for held, n in by_ack_set.items() if wanted <= held)

    def best_of(size: int) -> tuple[tuple[int, ...], int]:
        return max(
            ((group, held_by_all(group)) for group in combinations(live, size)),
            key=lambda pair: pair[1],
            default=((), -1),
        )

    _, best = best_of(threshold)
    if best < min_participants:
        raise ProtocolError(
            f"No {threshold} reachable aggregators hold shares from {min_participants} common "
            "clients; the round cannot be aggregated."
        )
    enough = max(min_participants, math.ceil(SPARE_KEEPING_SHARE * best))
    for size in range(len(live), threshold - 1, -1):
        group, count = best_of(size)
        if count >= enough:
            break
    members = tuple(sorted(c for c, acks in acknowledged.items() if set(group) <= set(acks)))
    return AggregationPlan(aggregators=group, participants=members)


def reconstruct_aggregate(
    shares: Sequence[Share],
    *,
    layout: ContributionLayout,
    participants: tuple[str, ...],
    trained_versions: tuple[int, ...],
) -> Aggregate:
    """Reconstruct the field sum from aggregate shares and decode it.

    With more than t shares, every share beyond the first t is checked to lie on the
    same polynomials: a mismatch means an aggregator corrupted its sum (valid clients'
    shares are consistent: the verifier checked that), and is an error, never a silently
    wrong model.

    Raises:
        ReconstructionError: with fewer than t shares, or shares that disagree.
        ProtocolError: if the decoded total weight is not positive.
    """
    config = layout.config
    if len(shares) < config.threshold:
        raise ReconstructionError(
            f"Reconstruction needs {config.threshold} aggregate shares; got {len(shares)}."
        )
    field_sum = config.scheme().reconstruct(list(shares), verify=len(shares) > config.threshold)
    decoded = layout.decode_sum(field_sum)
    if decoded.total_weight <= 0:
        raise ProtocolError("The reconstructed total weight is not positive; the round is empty.")
    return Aggregate(
        weighted_delta_sum=decoded.weighted_delta_sum,
        total_weight=decoded.total_weight,
        participants=participants,
        trained_versions=trained_versions,
        mean_loss=decoded.weighted_loss / decoded.total_weight,
        within_bound_count=decoded.unclipped_sum,
    )
