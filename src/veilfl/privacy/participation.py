"""DP-FTRL's client selection: a public, deterministic rule that enforces the
participation limits the accountant assumes.

DP-FTRL's guarantee (Kairouz et al. 2021; :mod:`veilfl.privacy.dp_ftrl`) needs no
secret sampling, only that every client takes part in at most K released rounds
(``max_participations``), any two of them at least b released rounds apart
(``min_separation``). Rounds here are *steps*: released rounds, counted from 1, the
tree's leaves. A round that is abandoned or withheld releases nothing and consumes
no step, so a client selected for it has not taken part.

The rule, for step s with ``size`` clients wanted: among the joined clients that are
*eligible* (fewer than K participations, and none in the last b - 1 steps: their
last step l has s - l >= b), take those with the fewest participations first, then
those whose last participation is oldest, and break ties by SHA-256 of the round id
and the client id, so that a round restarted for lack of reports (a new round id)
does not pick the same stragglers again. Everything it uses is public: the rule
could be rerun by anyone who knows who took part. With a population of N and n
clients a round it works like round-robin: every client takes part every N/n steps.

Only released rounds change the state (:meth:`ParticipationLimits.record`), with the
clients the release actually summed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

from veilfl.errors import ConfigurationError, PrivacyError

__all__ = ["ParticipationLimits"]


class ParticipationLimits:
    """Who may take part in the next released round, and who is chosen.

    Args:
        max_participations: K.
        min_separation: b.
        steps: Released rounds so far (a resumed run).
        counts: Released rounds each client took part in (a resumed run).
        last_steps: The last step each client took part in (a resumed run).

    Raises:
        ConfigurationError: for K or b below 1, or a resumed state that breaks the
            limits.
    """

    def __init__(
        self,
        *,
        max_participations: int,
        min_separation: int,
        steps: int = 0,
        counts: Mapping[str, int] | None = None,
        last_steps: Mapping[str, int] | None = None,
    ) -> None:
        if max_participations < 1 or min_separation < 1 or steps < 0:
            raise ConfigurationError(
                "Participation limits need K >= 1, b >= 1 and a non-negative step count; "
                f"got {max_participations}, {min_separation} and {steps}."
            )
        self._max = max_participations
        self._separation = min_separation
        self._steps = steps
        self._counts: dict[str, int] = dict(counts or {})
        self._last: dict[str, int] = dict(last_steps or {})
        if any(c > max_participations for c in self._counts.values()) or any(
            not 1 <= s <= steps for s in self._last.values()
        ):
            raise ConfigurationError(
                "The restored participation counts break the run's limits or name steps "
                "that were never released; the run store does not match these settings."
            )

    @property
    def max_participations(self) -> int:
        """K."""
        return self._max

    @property
    def min_separation(self) -> int:
        """b."""
        return self._separation

    @property
    def steps(self) -> int:
        """Released rounds so far."""
        return self._steps

    @property
    def next_step(self) -> int:
        """The step the next released round takes."""
        return self._steps + 1

    def participations(self, client_id: str) -> int:
        """Released rounds ``client_id`` took part in."""
        return self._counts.get(client_id, 0)

    def last_step(self, client_id: str) -> int | None:
        """The last step ``client_id`` took part in, if any."""
        return self._last.get(client_id)

    def eligible(self, client_id: str) -> bool:
        """Whether ``client_id`` may take part in the next step."""
        if self.participations(client_id) >= self._max:
            return False
        last = self._last.get(client_id)
        return last is None or self.next_step - last >= self._separation

    def select(
        self, available: Sequence[str], *, size: int, minimum: int, round_id: int
    ) -> tuple[str, ...] | None:
        """The clients for round ``round_id`` (the next step), by the module's rule.

        Args:
            available: The joined clients.
            size: How many to take (fewer if fewer are eligible).
            minimum: The fewest a round may have.
            round_id: The round (only breaks ties).

        Returns:
            The chosen clients in sorted order, or None when fewer than ``minimum``
            are eligible (the round waits for more clients to join or to become
            eligible).
        """
        eligible = [c for c in available if self.eligible(c)]
        if len(eligible) < max(minimum, 1):
            return None

        def order(client: str) -> tuple[int, int, bytes]:
            tie = hashlib.sha256(f"{round_id}:{client}".encode()).digest()
            return (self.participations(client), self._last.get(client, 0), tie)

        return tuple(sorted(sorted(eligible, key=order)[:size]))

    def record(self, participants: Iterable[str]) -> int:
        """A round was released over ``participants``: it takes the next step.

        Returns:
            The step it took.

        Raises:
            PrivacyError: if a participant was not eligible (the limits the epsilon
                assumes would be broken; the coordinator selects only eligible
                clients, so only a bug gets here).
        """
        chosen = sorted(set(participants))
        broken = [c for c in chosen if not self.eligible(c)]
        if broken:
            raise PrivacyError(
                f"Clients {broken[:5]} are past their participation limits (K "
                f"{self._max}, b {self._separation}); releasing this round would break the "
                "guarantee."
            )
        self._steps += 1
        for client in chosen:
            self._counts[client] = self._counts.get(client, 0) + 1
            self._last[client] = self._steps
        return self._steps
