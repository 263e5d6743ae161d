"""How a closed cohort becomes an :class:`~veilfl.strategy.Aggregate`, without I/O.

An :class:`AggregationBackend` serves a whole run; for each closed cohort it starts an
:class:`AggregationJob`, a small state machine that asks for what it needs as commands
(:mod:`veilfl.protocol.effects`), is fed the answers as events, and ends with the
aggregate. Plaintext aggregation has nothing to ask: its job is finished at once.
Secure aggregation (:mod:`veilfl.protocol.secure_aggregation`) asks the aggregators;
differential privacy (:mod:`veilfl.protocol.private_aggregation`) wraps either.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from veilfl.errors import ProtocolError, UpdateRejectedError
from veilfl.privacy.clipping import clip_l2, unclipped_bit
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan
from veilfl.protocol.cohort import ClosedCohort
from veilfl.protocol.effects import Effect, Event
from veilfl.protocol.messages import ClientReport, UpdateHeader
from veilfl.strategy.aggregate import Aggregate, WeightedSum
from veilfl.strategy.federated_evaluation import FederatedEvaluation
from veilfl.tensors import TensorSpec, Weights, flatten

__all__ = [
    "AggregationBackend",
    "AggregationJob",
    "FinishedJob",
    "PlaintextAggregation",
    "weighted_mean_loss",
]


class AggregationJob(Protocol):
    """Aggregating one closed cohort."""

    @property
    def round_id(self) -> int:
        """The round (or buffer) being aggregated."""
        ...

    @property
    def result(self) -> Aggregate | None:
        """The aggregate once done; None while the job still waits for answers."""
        ...

    def drain(self) -> list[Effect]:
        """Commands to perform and notices to publish, queued since the last call."""
        ...

    def handle(self, event: Event) -> None:
        """Take one answer to a command this job issued (others are ignored)."""

    def tick(self, *, now: float) -> None:
        """Let time pass: a stalled job asks again once its retry interval is over."""

    def status(self) -> str:
        """What the job is doing now, in a few words (for status pages)."""
        ...


class AggregationBackend(Protocol):
    """Turns each closed cohort of a run into its aggregate."""

    def open_cohort(self, round_id: int) -> None:
        """Forget everything from earlier rounds (or an earlier attempt at this one)."""

    def begin(self, cohort: ClosedCohort) -> AggregationJob:
        """Start aggregating ``cohort``."""
        ...

    def check_receipt(self, header: UpdateHeader) -> None:
        """Refuse a malformed receipt (secure aggregation) before anything changes.

        Raises:
            ProtocolError: naming what is wrong.
        """

    def client_privacy(self) -> ClientPrivacyPlan | None:
        """What clients must do to their updates this round (None: nothing)."""
        ...

    def can_continue(self) -> bool:
        """Whether another release is allowed (False once a DP budget is spent)."""
        ...

    def plaintext(self) -> PlaintextAggregation | None:
        """The backend that takes plaintext updates, if updates travel in the clear."""
        ...


class FinishedJob:
    """A job whose aggregate is known from the start (plaintext aggregation)."""

    def __init__(self, round_id: int, aggregate: Aggregate) -> None:
        self._round_id = round_id
        self._aggregate = aggregate

    @property
    def round_id(self) -> int:
        """The round."""
        return self._round_id

    @property
    def result(self) -> Aggregate:
        """The aggregate."""
        return self._aggregate

    def drain(self) -> list[Effect]:
        """Nothing to ask."""
        return []

    def handle(self, event: Event) -> None:
        """Nothing to hear."""

    def tick(self, *, now: float) -> None:
        """Nothing to retry."""

    def status(self) -> str:
        """Done."""
        return "aggregated"


def weighted_mean_loss(reports: tuple[ClientReport, ...]) -> float | None:
    """Sample-weighted mean of the reported losses (None where clients report none)."""
    if not reports or any(r.loss is None or r.num_samples is None for r in reports):
        return None
    weights = np.array([r.num_samples for r in reports], dtype=np.float64)
    losses = np.array([r.loss for r in reports], dtype=np.float64)
    return float(np.average(losses, weights=weights))


class PlaintextAggregation:
    """Plain FedAvg aggregation: the coordinator sees each update and sums it at once.

    Memory is O(model size): updates are folded into a running sum as they arrive.

    Args:
        spec: The model's tensors.
        uniform_weights: Weigh every client the same (DP-FedAvg).
    """

    def __init__(self, spec: TensorSpec, *, uniform_weights: bool = False) -> None:
        self._spec = spec
        self._clip_norm: float | None = None
        self._uniform = uniform_weights
        self._round_id: int | None = None
        self._sum = WeightedSum(spec.total_size)
        self._clients: set[str] = set()
        self._bit_sum = 0.0

    def open_cohort(self, round_id: int) -> None:
        """Start an empty sum for ``round_id``."""
        self._round_id = round_id
        self._sum = WeightedSum(self._spec.total_size)
        self._clients = set()
        self._bit_sum = 0.0

    def clip_on_arrival(self, clip_norm: float | None) -> None:
        """Central DP over plaintext (a trusted coordinator): clip each update to
        ``clip_norm`` as it arrives and sum the updates' +-1/2 unclipped bits
        (:func:`~veilfl.privacy.clipping.unclipped_bit`), as clients do under secure
        aggregation."""
        self._clip_norm = clip_norm

    def check_receipt(self, header: UpdateHeader) -> None:
        """Plaintext runs take updates, not receipts.

        Raises:
            ProtocolError: always.
        """
        raise ProtocolError(
            "This run aggregates in plaintext; upload the update to /v1/rounds/{round}/updates."
        )

    def client_privacy(self) -> ClientPrivacyPlan | None:
        """Plaintext clients do nothing to their updates."""
        return None

    def can_continue(self) -> bool:
        """No budget here."""
        return True

    def plaintext(self) -> PlaintextAggregation:
        """Updates come here in the clear."""
        return self

    def add(self, header: UpdateHeader, delta: Weights, *, weight: float | None = None) -> None:
        """Fold one validated update into the round's sum.

        Args:
            header: The update's metadata.
            delta: The update.
            weight: Its weight, when the protocol fixes it (a buffered update's staleness
                weight); by default the sample count, or 1 under DP.

        Raises:
            UpdateRejectedError: if the header states no sample count.
        """
        if header.round_id != self._round_id:
            raise ProtocolError(f"Round {header.round_id} is not being aggregated.")
        if header.num_samples is None or header.loss is None:
            raise UpdateRejectedError(
                "A plaintext update must state num_samples and loss in its metadata."
            )
        vector = flatten(delta, self._spec)
        if self._clip_norm is not None:
            clipped = clip_l2(vector, clip_norm=self._clip_norm)
            vector = clipped.vector.astype(np.float32)
            self._bit_sum += unclipped_bit(clipped.within_bound)
        if weight is None:
            weight = 1.0 if self._uniform else float(header.num_samples)
        self._sum.add(vector, weight=weight)
        self._clients.add(header.client_id)

    def begin(self, cohort: ClosedCohort) -> FinishedJob:
        """The running sum, which must cover exactly the cohort's participants.

        Raises:
            ProtocolError: if it does not.
        """
        if set(cohort.participant_ids) != self._clients:
            raise ProtocolError("The participant list does not match the updates that were summed.")
        return FinishedJob(
            cohort.round_id,
            Aggregate(
                weighted_delta_sum=self._sum.vector(),
                total_weight=self._sum.total_weight,
                participants=cohort.participant_ids,
                trained_versions=tuple(p.trained_version for p in cohort.participants),
                mean_loss=weighted_mean_loss(cohort.participants),
                within_bound_count=self._bit_sum if self._clip_norm else None,
                evaluation=FederatedEvaluation.total(
                    p.evaluation for p in cohort.participants if p.evaluation is not None
                ),
            ),
        )
