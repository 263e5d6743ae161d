"""The coordinator's secure-aggregation backend: collect aggregate shares, reconstruct.

Given a closed round, it picks t or more aggregators that all hold the largest set of
reporting clients, asks each for its aggregate share over exactly that set, and
reconstructs the weighted sum as soon as t shares are in. An aggregator that fails
is dropped and the plan is made again without it, so a round survives up to m - t
aggregator failures. The coordinator never sees any individual update.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from veilfl.crypto.shamir import Share
from veilfl.errors import ProtocolError, TransportError, WireFormatError
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan
from veilfl.protocol.coordinator import RoundAggregate
from veilfl.protocol.sync_round import ClosedRound
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.reconstruction import plan_aggregation, reconstruct_aggregate

__all__ = ["AggregatorLink", "SecureAggregation"]

logger = logging.getLogger(__name__)


class AggregatorLink(Protocol):
    """How the coordinator asks aggregator ``index`` for its aggregate share."""

    def aggregate(self, index: int, round_id: int, participants: Sequence[str]) -> Share:
        """Aggregator ``index``'s share of the sum over ``participants``.

        Raises:
            TransportError: if the aggregator cannot be reached.
            ProtocolError: if it refuses.
        """
        ...


class SecureAggregation:
    """An :class:`~veilfl.protocol.coordinator.AggregationBackend` over m aggregators.

    Args:
        config: Secure-aggregation parameters.
        link: How to reach the aggregators.
        min_participants: Smallest participant list worth reconstructing.
    """

    def __init__(
        self, config: SecureAggregationConfig, link: AggregatorLink, *, min_participants: int
    ) -> None:
        self._config = config
        self._link = link
        self._min_participants = min_participants

    @property
    def config(self) -> SecureAggregationConfig:
        """The parameters."""
        return self._config

    def start_round(self, round_id: int) -> None:
        """Nothing to reset: aggregators key their state by round."""

    def client_privacy(self) -> ClientPrivacyPlan | None:
        """Secure aggregation alone asks nothing more of clients."""
        return None

    def can_continue(self) -> bool:
        """No budget here."""
        return True

    def plaintext(self) -> None:
        """Updates never travel in the clear here."""
        return None

    def aggregate(self, closed: ClosedRound) -> RoundAggregate:
        """Reconstruct the round's weighted sum from t aggregate shares.

        Raises:
            ProtocolError: if fewer than t aggregators holding enough clients answer.
        """
        acknowledged = {p.client_id: p.aggregators for p in closed.participants}
        alive = set(range(1, self._config.num_aggregators + 1))
        while True:
            plan = plan_aggregation(
                acknowledged,
                alive=alive,
                threshold=self._config.threshold,
                min_participants=self._min_participants,
            )
            shares: list[Share] = []
            for index in plan.aggregators:
                if len(shares) == self._config.threshold:
                    break
                try:
                    share = self._link.aggregate(index, closed.round_id, plan.participants)
                except (TransportError, ProtocolError, WireFormatError) as exc:
                    logger.warning(
                        "aggregator %d failed in round %d (%s); going on without it",
                        index,
                        closed.round_id,
                        exc,
                    )
                    alive.discard(index)
                    continue
                if share.index != index:
                    logger.warning("aggregator %d answered with share %d", index, share.index)
                    alive.discard(index)
                    continue
                shares.append(share)
            if len(shares) == self._config.threshold:
                result = reconstruct_aggregate(
                    shares, config=self._config, num_participants=len(plan.participants)
                )
                return RoundAggregate(
                    update=result.update,
                    participants=plan.participants,
                    mean_loss=result.mean_loss,
                    within_bound_count=result.within_bound_count,
                )
