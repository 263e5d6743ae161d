"""The privacy ledger: what a run has released, in a form that survives restarts.

The ledger is the list of released mechanisms, each a run of ``count`` consecutive
rounds of one (possibly Poisson-subsampled) Gaussian mechanism with noise multiplier
z and sampling rate q. It is all an accountant needs: epsilon is a pure function of
the ledger and delta (see :mod:`veilfl.privacy.accountant`). A coordinator stores
:meth:`PrivacyLedger.to_json` in its run store after every release and rebuilds the
ledger from it on restart, so epsilon continues exactly where it stopped.

Rounds are counted by *releases*, never by round ids: an abandoned round skips an id
but releases nothing, and a withheld round (too few noise contributions) releases
nothing either. A ledger rebuilt from an old store that only kept a count uses
:meth:`PrivacyLedger.from_released_rounds` with the number of rounds actually
released.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import dp_accounting

from veilfl.errors import ConfigurationError, StorageError

__all__ = ["LEDGER_FORMAT_VERSION", "PrivacyLedger", "ReleasedRounds"]

LEDGER_FORMAT_VERSION = 1
"""Version of :meth:`PrivacyLedger.to_json`'s layout."""


@dataclass(frozen=True)
class ReleasedRounds:
    """``count`` consecutive released rounds of one sampled Gaussian mechanism.

    Attributes:
        noise_multiplier: z, the noise standard deviation over the L2 sensitivity.
        sample_rate: q, each client's chance of taking part (Poisson sampling); 1.0
            for no sampling, or for an observer who knows the sample.
        count: How many rounds.

    Raises:
        ConfigurationError: for z not positive and finite, q outside (0, 1], or a
            count below 1.
    """

    noise_multiplier: float
    sample_rate: float
    count: int = 1

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise ConfigurationError(
                f"A released round needs a positive, finite noise multiplier; got "
                f"{self.noise_multiplier!r}."
            )
        if not 0 < self.sample_rate <= 1:
            raise ConfigurationError(
                f"The client sampling rate must be in (0, 1]; got {self.sample_rate!r}."
            )
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ConfigurationError(f"A ledger entry counts at least 1 round; got {self.count!r}.")

    def dp_event(self) -> dp_accounting.DpEvent:
        """The entry as a ``dp-accounting`` event."""
        gaussian: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        if self.sample_rate < 1.0:
            gaussian = dp_accounting.PoissonSampledDpEvent(self.sample_rate, gaussian)
        return dp_accounting.SelfComposedDpEvent(gaussian, self.count)


@dataclass(frozen=True)
class PrivacyLedger:
    """The released rounds of a run, oldest first (immutable: recording returns a new
    ledger).

    Attributes:
        entries: Runs of identical rounds; consecutive rounds with the same z and q
            share one entry.
    """

    entries: tuple[ReleasedRounds, ...] = ()

    @classmethod
    def from_released_rounds(
        cls, rounds: int, *, noise_multiplier: float, sample_rate: float
    ) -> PrivacyLedger:
        """A ledger of ``rounds`` released rounds with one z and q.

        Args:
            rounds: Rounds actually *released* (not the last round id: abandoned and
                withheld rounds skip ids and release nothing).
            noise_multiplier: z.
            sample_rate: q.

        Raises:
            ConfigurationError: for a negative count or invalid z or q.
        """
        if rounds < 0:
            raise ConfigurationError(f"A run cannot have released {rounds} rounds.")
        ledger = cls()
        return (
            ledger
            if rounds == 0
            else ledger.record(
                noise_multiplier=noise_multiplier, sample_rate=sample_rate, count=rounds
            )
        )

    @property
    def rounds(self) -> int:
        """Rounds released in total."""
        return sum(entry.count for entry in self.entries)

    def record(
        self, *, noise_multiplier: float, sample_rate: float, count: int = 1
    ) -> PrivacyLedger:
        """This ledger with ``count`` more released rounds.

        Raises:
            ConfigurationError: for invalid z, q or count.
        """
        added = ReleasedRounds(noise_multiplier, sample_rate, count)
        if self.entries:
            last = self.entries[-1]
            if (last.noise_multiplier, last.sample_rate) == (noise_multiplier, sample_rate):
                merged = ReleasedRounds(noise_multiplier, sample_rate, last.count + count)
                return PrivacyLedger((*self.entries[:-1], merged))
        return PrivacyLedger((*self.entries, added))

    def dp_event(self) -> dp_accounting.DpEvent:
        """All released rounds, composed, as one ``dp-accounting`` event."""
        return dp_accounting.ComposedDpEvent([entry.dp_event() for entry in self.entries])

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; floats survive ``json`` exactly (shortest repr)."""
        return {
            "version": LEDGER_FORMAT_VERSION,
            "entries": [
                {
                    "noise_multiplier": entry.noise_multiplier,
                    "sample_rate": entry.sample_rate,
                    "count": entry.count,
                }
                for entry in self.entries
            ],
        }

    @classmethod
    def from_json(cls, data: Any) -> PrivacyLedger:
        """Inverse of :meth:`to_json`.

        Raises:
            StorageError: if ``data`` is not a ledger this version wrote, naming what
                is wrong.
        """
        if not isinstance(data, dict) or data.get("version") != LEDGER_FORMAT_VERSION:
            raise StorageError(
                f"The stored privacy ledger is not in format version {LEDGER_FORMAT_VERSION}; "
                "it was written by another veilfl version or is damaged. Resume the run "
                "with the veilfl version that started it."
            )
        entries = data.get("entries")
        if not isinstance(entries, list):
            raise StorageError("The stored privacy ledger has no list of entries.")
        ledger = cls()
        for position, entry in enumerate(entries):
            try:
                ledger = ledger.record(
                    noise_multiplier=float(entry["noise_multiplier"]),
                    sample_rate=float(entry["sample_rate"]),
                    count=entry["count"],
                )
            except (KeyError, TypeError, ValueError, ConfigurationError) as error:
                raise StorageError(
                    f"Entry {position} of the stored privacy ledger is malformed ({error})."
                ) from None
        return ledger
