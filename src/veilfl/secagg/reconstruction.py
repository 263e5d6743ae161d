"""The coordinator's side of secure aggregation: pick a consistent set, reconstruct.

Only the *sum* of the participants' vectors is ever reconstructed, from the
aggregate shares of at least t aggregators that all hold every participant.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from veilfl.crypto.shamir import Share
from veilfl.errors import ProtocolError, ReconstructionError
from veilfl.secagg.contribution import ContributionLayout
from veilfl.strategy.aggregate import Aggregate

__all__ = ["AggregationPlan", "plan_aggregation", "reconstruct_aggregate"]


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
    """Choose aggregators and the largest participant list they all hold.

    Args:
        acknowledged: For each reporting client, the aggregators that acknowledged its share.
        alive: Aggregators believed reachable.
        threshold: t.
        min_participants: The smallest acceptable participant list.

    Returns:
        The participant list that the most clients reach through some t aggregators,
        and every alive aggregator holding all of it (the spares cover a failure
        during collection).

    Raises:
        ProtocolError: if no t aggregators hold at least ``min_participants`` clients.
    """
    live = sorted(set(alive))
    alive_set = frozenset(live)
    by_ack_set = Counter(frozenset(acks) & alive_set for acks in acknowledged.values())
    best_group: tuple[int, ...] | None = None
    best_count = -1
    for group in combinations(live, threshold):
        wanted = set(group)
        count = sum(n for held, n in by_ack_set.items() if wanted <= held)
        if count > best_count:
            best_group, best_count = group, count
    if best_group is None or best_count < min_participants:
        raise ProtocolError(
            f"No {threshold} reachable aggregators hold shares from {min_participants} common "
            "clients; the round cannot be aggregated."
        )
    core = set(best_group)
    members = tuple(sorted(c for c, acks in acknowledged.items() if core <= set(acks)))
    spares = tuple(j for j in live if all(j in acknowledged[c] for c in members))
    return AggregationPlan(aggregators=spares, participants=members)


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
