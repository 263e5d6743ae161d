"""The synchronous FedAvg round as a pure state machine (McMahan et al. 2017).

No I/O, no clock and no global randomness: the caller passes ``now`` (seconds on any
monotonic clock) and a seeded or system random source for client sampling. The HTTP
coordinator and the in-process simulator drive this same machine.

Without DP a round samples a fixed number of joined clients from that (seeded,
repeatable) source. Under DP it samples the way the accountant assumes: every joined
client independently with probability q, from secret coins
(:class:`~veilfl.privacy.sampling.PoissonSampler`), so a round's size varies; a sample
smaller than the reports a release needs is withheld and drawn again at once. Under
DP-FTRL it samples nothing: a public rule picks clients within their participation
limits (:class:`~veilfl.privacy.participation.ParticipationLimits`), and a round opens
only once enough clients are eligible.

Life of a round::

    (idle) --tick: enough clients joined--> OPEN --all sampled reported, or deadline
    with >= min_clients--> CLOSING --complete()--> (idle, next round)

    OPEN --deadline with < min_clients--> OPEN again with a fresh sample (a restart)

    CLOSING --abandon(): aggregation cannot finish--> OPEN as a new round (next id,
    same model version, fresh sample)

Clients that were sampled but never report (stragglers, dropouts) are simply left out
when the round closes; the round needs only ``min_clients`` reports.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from veilfl.declared import check_declared, setting
from veilfl.errors import (
    ConfigurationError,
    ProtocolError,
    RoundMismatchError,
    StaleUpdateError,
    UnknownClientError,
)
from veilfl.protocol.cohort import ClosedCohort, Placement, TickOutcome
from veilfl.protocol.messages import ClientReport, Task, UpdateHeader

if TYPE_CHECKING:
    from veilfl.privacy.participation import ParticipationLimits
    from veilfl.privacy.sampling import PoissonSampler
    from veilfl.protocol.buffered import BufferTicket

MAX_DRAWS_PER_TICK = 1000
"""Withheld Poisson samples drawn again within one tick before the machine waits for
the next tick (and, with it, perhaps more joined clients)."""

__all__ = [
    "RoundConfig",
    "RoundPhase",
    "RoundStatus",
    "SyncRoundMachine",
]


@dataclass(frozen=True)
class RoundConfig:
    """How synchronous rounds are run.

    Attributes:
        num_rounds: Rounds to run before the run is done.
        clients_per_round: Clients sampled per round (a count). Exclusive with ``fraction``.
        fraction: Fraction C of joined clients sampled per round (at least one client).
        min_clients: Reports needed to close a round; fewer at the deadline restarts it.
        min_available_clients: Joined clients needed before the first round opens
            (defaults to the larger of ``min_clients`` and ``clients_per_round``).
        round_timeout_s: Seconds a round stays open before closing with who reported.
        poll_interval_s: How long a client not needed now is told to wait.
    """

    num_rounds: int = setting(flag="--rounds", help="number of rounds", at_least=1, cli_default=5)
    clients_per_round: int | None = setting(
        default=None, flag="--clients-per-round", help="clients sampled", at_least=1
    )
    fraction: float | None = setting(
        default=None, flag="--fraction", help="fraction C sampled", above=0, at_most=1
    )
    min_clients: int = setting(
        default=1,
        flag="--min-clients",
        help="reports needed to close (default 1; under secure aggregation, the "
        "aggregators' largest --min-participants)",
        at_least=1,
        cli_default=None,
    )
    min_available_clients: int | None = setting(
        default=None, flag="--min-available", help="joins before round 1"
    )
    round_timeout_s: float = setting(
        default=120.0, flag="--round-timeout", help="round deadline (s)", above=0
    )
    poll_interval_s: float = setting(
        default=0.5, flag=None, help="how long a client not needed now is told to wait (s)"
    )

    def __post_init__(self) -> None:
        if self.num_rounds < 1:
            raise ConfigurationError("num_rounds must be at least 1.")
        if (self.clients_per_round is None) == (self.fraction is None):
            raise ConfigurationError(
                "Give exactly one of clients_per_round (a count) or fraction (of joined clients)."
            )
        if self.clients_per_round is not None and self.clients_per_round < 1:
            raise ConfigurationError("clients_per_round must be at least 1.")
        if self.fraction is not None and not 0 < self.fraction <= 1:
            raise ConfigurationError("fraction must be in (0, 1].")
        if self.min_clients < 1:
            raise ConfigurationError("min_clients must be at least 1.")
        if self.clients_per_round is not None and self.min_clients > self.clients_per_round:
            raise ConfigurationError(
                f"min_clients ({self.min_clients}) cannot exceed clients_per_round "
                f"({self.clients_per_round}): the round could never close."
            )
        if self.round_timeout_s <= 0 or self.poll_interval_s <= 0:
            raise ConfigurationError("round_timeout_s and poll_interval_s must be positive.")
        check_declared(self)

    @property
    def clients_needed_to_start(self) -> int:
        """Joined clients required before a round opens."""
        if self.min_available_clients is not None:
            return max(self.min_available_clients, self.min_clients)
        return max(self.min_clients, self.clients_per_round or 1)

    def sample_size(self, num_available: int) -> int:
        """How many of ``num_available`` joined clients to sample."""
        if self.clients_per_round is not None:
            return min(self.clients_per_round, num_available)
        assert self.fraction is not None
        wanted = max(math.ceil(self.fraction * num_available), self.min_clients, 1)
        return min(wanted, num_available)


class RoundPhase(StrEnum):
    """Where the machine stands."""

    IDLE = "idle"
    OPEN = "open"
    CLOSING = "closing"
    DONE = "done"


@dataclass(frozen=True)
class RoundStatus:
    """A read-only view for status pages and logs."""

    phase: RoundPhase
    round_id: int
    model_version: int
    joined: int
    sampled: int
    reported: int
    deadline: float | None


@dataclass
class _OpenRound:
    round_id: int
    base_version: int
    sampled: frozenset[str]
    opened_at: float
    deadline: float
    reports: dict[str, ClientReport] = field(default_factory=dict)


class SyncRoundMachine:
    """Client sampling, deadlines, stragglers and round closing for synchronous FedAvg.

    Args:
        config: Round settings.
        rng: Random source for fixed-size client sampling. Pass ``random.Random(seed)``
            for repeatable experiments, or ``random.SystemRandom()``.
        next_round: The round to run next (``last completed + 1`` after a restart).
        model_version: The current global model version.
        sampler: Under DP, Poisson sampling with secret coins (then ``rng`` is unused
            and a round's size varies).
        limits: Under DP-FTRL, the participation limits whose public rule selects
            each round's clients (then ``rng`` is unused).
    """

    def __init__(
        self,
        config: RoundConfig,
        *,
        rng: random.Random,
        next_round: int = 1,
        model_version: int = 0,
        sampler: PoissonSampler | None = None,
        limits: ParticipationLimits | None = None,
    ) -> None:
        if sampler is not None and limits is not None:
            raise ConfigurationError("A round is Poisson-sampled or selected, not both.")
        self._config = config
        self._rng = rng
        self._sampler = sampler
        self._limits = limits
        self._round_id = next_round
        self._version = model_version
        self._joined: dict[str, float] = {}
        self._open: _OpenRound | None = None
        self._closing = False
        self._restarts = 0
        self._last_round: tuple[int, frozenset[str]] = (0, frozenset())
        self._ended = False

    # ----------------------------------------------------------------- queries
    @property
    def config(self) -> RoundConfig:
        """The round settings."""
        return self._config

    @property
    def phase(self) -> RoundPhase:
        """The current phase."""
        if self._ended or self._version >= self._config.num_rounds:
            return RoundPhase.DONE
        if self._open is None:
            return RoundPhase.IDLE
        return RoundPhase.CLOSING if self._closing else RoundPhase.OPEN

    @property
    def deadline(self) -> float | None:
        """The open round's deadline (None when no round is open)."""
        return None if self._open is None else self._open.deadline

    @property
    def done(self) -> bool:
        """Whether every planned round is complete (or the run ended early)."""
        return self.phase is RoundPhase.DONE

    @property
    def model_version(self) -> int:
        """The current global model version."""
        return self._version

    @property
    def round_id(self) -> int:
        """The round open now, or the next one to open."""
        return self._round_id

    @property
    def restarts(self) -> int:
        """How many times a round was restarted (for lack of reports) or abandoned."""
        return self._restarts

    def is_joined(self, client_id: str) -> bool:
        """Whether ``client_id`` joined this run."""
        return client_id in self._joined

    def status(self) -> RoundStatus:
        """A snapshot for status pages."""
        open_round = self._open
        return RoundStatus(
            phase=self.phase,
            round_id=self._round_id,
            model_version=self._version,
            joined=len(self._joined),
            sampled=len(open_round.sampled) if open_round else 0,
            reported=len(open_round.reports) if open_round else 0,
            deadline=open_round.deadline if open_round else None,
        )

    def describe(self) -> dict[str, object]:
        """A JSON-ready snapshot for status pages."""
        status = self.status()
        return {
            "phase": status.phase.value,
            "round_id": status.round_id,
            "model_version": status.model_version,
            "num_rounds": self._config.num_rounds,
            "joined": status.joined,
            "sampled": status.sampled,
            "reported": status.reported,
        }

    # ---------------------------------------------------------------- commands
    def join(self, client_id: str, *, now: float) -> None:
        """Register a client. Joining twice is harmless."""
        if not client_id:
            raise ProtocolError("A client id must not be empty.")
        self._joined.setdefault(client_id, now)

    def task_for(self, client_id: str, *, now: float) -> Task:
        """What ``client_id`` should do now (call :meth:`tick` first).

        Raises:
            UnknownClientError: if the client never joined.
        """
        self._require_joined(client_id)
        if self.phase is RoundPhase.DONE:
            return Task.done()
        open_round = self._open
        if (
            open_round is not None
            and not self._closing
            and client_id in open_round.sampled
            and client_id not in open_round.reports
        ):
            return Task.train(round_id=open_round.round_id, model_version=open_round.base_version)
        return Task.wait(retry_after_s=self._config.poll_interval_s)

    def ticket(self, client_id: str, *, trained_version: int, now: float = 0.0) -> BufferTicket:
        """Rounds have no buffer tickets.

        Raises:
            ProtocolError: always.
        """
        raise ProtocolError("This run has synchronous rounds; there are no buffer tickets.")

    def free_places(self, *, now: float) -> int:
        """Rounds have no buffer places: always 0."""
        return 0

    def admit(self, header: UpdateHeader) -> Placement | None:
        """Validate an update's (or receipt's) header without changing any state.

        Returns:
            Where it would count, or None if this client's update for this round is
            already in (a retry: the caller answers as for a success).

        Raises:
            UnknownClientError: the client never joined.
            RoundMismatchError: the round is not open, or the client was not sampled.
            StaleUpdateError: the update was trained on another model version.
        """
        self._require_joined(header.client_id)
        last_round, last_participants = self._last_round
        if header.round_id == last_round and header.client_id in last_participants:
            return None  # a retry of an update the last completed round already used
        open_round = self._open
        if open_round is None or header.round_id != open_round.round_id:
            current = "none" if open_round is None else str(open_round.round_id)
            raise RoundMismatchError(
                f"Round {header.round_id} is not open (open round: {current}); ask for a new task."
            )
        if header.client_id in open_round.reports:
            return None
        if self._closing:
            raise RoundMismatchError(
                f"Round {header.round_id} has closed; the update arrived too late."
            )
        if header.client_id not in open_round.sampled:
            raise RoundMismatchError(
                f"Client {header.client_id!r} was not sampled for round {header.round_id}."
            )
        if header.base_version != open_round.base_version:
            raise StaleUpdateError(
                f"The update was trained on model version {header.base_version}, but round "
                f"{header.round_id} uses version {open_round.base_version}; fetch the model "
                "again."
            )
        return Placement(round_id=header.round_id, trained_version=header.base_version)

    def accept(self, header: UpdateHeader, placement: Placement) -> bool:
        """Record an update admitted by :meth:`admit`, whose payload the caller has
        already validated.

        Returns:
            True if newly accepted; False for a duplicate (nothing changes).

        Raises:
            The errors of :meth:`admit`; on any of them nothing changes.
        """
        if self.admit(header) is None:
            return False
        assert self._open is not None
        self._open.reports[header.client_id] = ClientReport(
            client_id=header.client_id,
            num_samples=header.num_samples,
            loss=header.loss,
            aggregators=header.aggregators,
            trained_version=placement.trained_version,
            evaluation=header.evaluation,
            weight=placement.weight,
        )
        return True

    def tick(self, *, now: float) -> TickOutcome:
        """Advance time: open a round, restart a starved one, or signal it can close."""
        if self.phase is RoundPhase.DONE or self._closing:
            return TickOutcome()
        open_round = self._open
        if open_round is None:
            if len(self._joined) < self._config.clients_needed_to_start:
                return TickOutcome()
            self._open = self._sample(now)
            return TickOutcome(opened=None if self._open is None else self._round_id)
        if len(open_round.reports) == len(open_round.sampled):
            return TickOutcome(ready_to_close=True)
        if now >= open_round.deadline:
            if len(open_round.reports) >= self._config.min_clients:
                return TickOutcome(ready_to_close=True)
            self._restarts += 1
            self._open = self._sample(now)
            if self._open is None:
                return TickOutcome(restarted=True)
            return TickOutcome(opened=self._round_id, restarted=True)
        return TickOutcome()

    def close(self, *, now: float) -> ClosedCohort:
        """Fix the participant list of the open round; no update is accepted after this.

        Raises:
            ProtocolError: if no round is open or it lacks ``min_clients`` reports.
        """
        open_round = self._open
        if open_round is None or self._closing:
            raise ProtocolError("There is no open round to close.")
        if len(open_round.reports) < self._config.min_clients:
            raise ProtocolError(
                f"Round {open_round.round_id} has {len(open_round.reports)} reports but needs "
                f"{self._config.min_clients} to close."
            )
        self._closing = True
        return ClosedCohort(
            round_id=open_round.round_id,
            base_version=open_round.base_version,
            participants=tuple(open_round.reports.values()),
            opened_at=open_round.opened_at,
            closed_at=now,
            sampled=len(open_round.sampled),
        )

    def complete(self) -> int:
        """Mark the closing round done and the new model version current.

        Returns:
            The new model version.
        """
        if self._open is None or not self._closing:
            raise ProtocolError("complete() needs a round closed with close().")
        self._last_round = (self._open.round_id, frozenset(self._open.reports))
        self._open = None
        self._closing = False
        self._round_id += 1
        self._version += 1
        return self._version

    def abandon(self, *, now: float) -> int:
        """Give up on the closing round because it cannot be aggregated (say, an
        aggregator lost its shares): open the next round id with a fresh sample on the
        same model version. A new id, because aggregators that already answered for
        the old round rightly refuse to answer for it again. (Under Poisson sampling
        the round may open only at a later tick, if every sample this tick was too
        small.)

        Returns:
            The new round's id.

        Raises:
            ProtocolError: unless a round is closing.
        """
        if self._open is None or not self._closing:
            raise ProtocolError("abandon() needs a round closed with close().")
        self._closing = False
        self._round_id += 1
        self._restarts += 1
        self._open = self._sample(now)
        return self._round_id

    def abandon_training(self, client_id: str) -> None:
        """A client gave up on its task: nothing to free (it is simply a straggler)."""

    def end_run(self) -> None:
        """End the run before its planned rounds (a privacy budget is spent).

        Raises:
            ProtocolError: while a round is open.
        """
        if self._open is not None:
            raise ProtocolError("A run can only end between rounds.")
        self._ended = True

    # ----------------------------------------------------------------- private
    def _require_joined(self, client_id: str) -> None:
        if client_id not in self._joined:
            raise UnknownClientError(f"Client {client_id!r} has not joined this run; join first.")

    def _sample(self, now: float) -> _OpenRound | None:
        """A fresh sample for the current round id; None if every Poisson sample drawn
        now was too small, or too few clients are within their DP-FTRL limits (the
        next tick tries again)."""
        available = sorted(self._joined)
        if self._limits is not None:
            chosen = self._limits.select(
                available,
                size=self._config.sample_size(len(available)),
                minimum=self._config.min_clients,
                round_id=self._round_id,
            )
            if chosen is None:
                return None
            sampled = frozenset(chosen)
        elif self._sampler is None:
            size = self._config.sample_size(len(available))
            sampled = frozenset(self._rng.sample(available, size))
        else:
            for _ in range(MAX_DRAWS_PER_TICK):
                drawn = self._sampler.draw(available)
                if drawn is not None:
                    sampled = frozenset(drawn)
                    break
            else:
                return None
        return _OpenRound(
            round_id=self._round_id,
            base_version=self._version,
            sampled=sampled,
            opened_at=now,
            deadline=now + self._config.round_timeout_s,
        )
