"""The coordinator's side of secure aggregation: pick a consistent set, reconstruct.

Only the *sum* of the participants' vectors is ever reconstructed, from the
aggregate shares of at least t aggregators that all hold every participant.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

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
    held = _held_by_every(acknowledged, live)
    sizes = np.array([mask.bit_count() for mask in range(len(held))])
    best = int(held[sizes == threshold].max(initial=-1))
    if best < min_participants:
        raise ProtocolError(
            f"No {threshold} reachable aggregators hold shares from {min_participants} common "
            "clients; the round cannot be aggregated."
        )
    enough = max(min_participants, math.ceil(SPARE_KEEPING_SHARE * best))
    for size in range(len(live), threshold - 1, -1):
        masks = np.flatnonzero(sizes == size)
        most = int(held[masks].max())
        if most >= enough:
            break
    group = min(  # of the sets that hold the most, the one of the lowest indices
        tuple(j for i, j in enumerate(live) if mask >> i & 1)
        for mask in masks[held[masks] == most].tolist()
    )
    members = tuple(sorted(c for c, acks in acknowledged.items() if set(group) <= set(acks)))
    return AggregationPlan(aggregators=group, participants=members)


def _held_by_every(
    acknowledged: Mapping[str, Collection[int]], live: Sequence[int]
) -> npt.NDArray[np.int64]:
    """For every set S of ``live`` aggregators (bit i of the index: ``live[i]``), how
    many clients every aggregator of S holds: the clients counted by the exact set of
    live aggregators holding them, then summed over supersets (one pass per bit, so
    m·2^m additions whatever the clients send)."""
    bit = {j: 1 << i for i, j in enumerate(live)}
    held = np.zeros(1 << len(live), dtype=np.int64)
    for acks in acknowledged.values():
        held[sum(bit[j] for j in set(acks) if j in bit)] += 1
    for i in range(len(live)):
        pairs = held.reshape(-1, 2, 1 << i)  # [:, 0] lacks bit i, [:, 1] is the same with it
        pairs[:, 0, :] += pairs[:, 1, :]
    return held


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
        evaluation=decoded.evaluation,
    )
