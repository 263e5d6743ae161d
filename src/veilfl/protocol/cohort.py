"""The shapes a round and a buffer share: a closed cohort, an update's placement, and
what a tick changed. Rounds (:mod:`veilfl.protocol.sync_round`) and buffers
(:mod:`veilfl.protocol.buffered`) both produce them; the coordinator core aggregates a
closed cohort the same way whichever produced it."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

from veilfl.protocol.messages import ClientReport

__all__ = ["ClosedCohort", "Placement", "TickOutcome"]


@dataclass(frozen=True)
class ClosedCohort:
    """A round, or a full buffer, whose accepted reports are final: the cohort whose
    updates are aggregated together and released as one new model version.

    Attributes:
        round_id: The round (for a buffer, the buffer id, which aggregators treat as a
            round).
        base_version: The model version the aggregate is applied to.
        participants: The accepted reports, in arrival order.
        opened_at: When the round (last) opened, or the buffer started filling.
        closed_at: When it closed.
        sampled: How many clients had been sampled (for a buffer, its size).
    """

    round_id: int
    base_version: int
    participants: tuple[ClientReport, ...]
    opened_at: float
    closed_at: float
    sampled: int

    @property
    def participant_ids(self) -> tuple[str, ...]:
        """Client ids of the participants, in arrival order."""
        return tuple(report.client_id for report in self.participants)

    def restricted_to(self, client_ids: Collection[str]) -> ClosedCohort:
        """The same cohort with only the participants in ``client_ids``."""
        kept = set(client_ids)
        return replace(
            self, participants=tuple(p for p in self.participants if p.client_id in kept)
        )


@dataclass(frozen=True)
class TickOutcome:
    """What a tick of a round or buffer schedule changed.

    Attributes:
        opened: A round opened (or reopened after a restart) with this id.
        restarted: The open round was restarted because too few clients reported.
        ready_to_close: The open round can close now; call :meth:`SyncRoundMachine.close`.
    """

    opened: int | None = None
    restarted: bool = False
    ready_to_close: bool = False


@dataclass(frozen=True)
class Placement:
    """Where an accepted update (or receipt) goes, decided before it is accepted.

    Attributes:
        round_id: The round or buffer it counts in.
        trained_version: The model version the client trained from.
        weight: A weight the protocol fixes (a buffered update's staleness weight), or
            None where the client's own weight applies.
    """

    round_id: int
    trained_version: int
    weight: float | None = None
