"""The rounds this client has handed in, per run: what its DP-FTRL check counts.

Under DP-FTRL a client's epsilon holds only if it takes part in at most K released
rounds, and only the coordinator's selection keeps to K. The client therefore counts
for itself (:func:`~veilfl.protocol.client_policy.check_participations`). With a key
file (``veilfl client --identity F``) the count is kept next to it, in
``F.rounds.json``, so that it survives restarts of the client; a fresh key is a new
client, and its count lives in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

from veilfl.durable_files import write_atomically
from veilfl.errors import ConfigurationError

__all__ = ["ParticipationRecord"]


class ParticipationRecord:
    """Round ids handed in, per run id.

    Args:
        path: The JSON file that keeps them, or None for memory only.

    Raises:
        ConfigurationError: if the file exists but is not such a record.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._rounds: dict[str, set[int]] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
                self._rounds = {str(run): {int(r) for r in rounds} for run, rounds in data.items()}
            except (ValueError, TypeError, AttributeError) as exc:
                raise ConfigurationError(
                    f"{path} is not a record of handed-in rounds ({exc}); move it away only "
                    "if this client's key is new, or DP-FTRL's limit could be exceeded."
                ) from None

    @classmethod
    def beside(cls, key_file: Path | None) -> ParticipationRecord:
        """The record kept next to ``key_file`` (in memory without one)."""
        return cls(None if key_file is None else key_file.with_name(key_file.name + ".rounds.json"))

    def count(self, run_id: str) -> int:
        """Distinct rounds of ``run_id`` handed in."""
        return len(self._rounds.get(run_id, ()))

    def add(self, run_id: str, round_id: int) -> None:
        """Note a hand-in (durably, before returning, when kept in a file)."""
        rounds = self._rounds.setdefault(run_id, set())
        if round_id in rounds:
            return
        rounds.add(round_id)
        if self._path is not None:
            data = {run: sorted(ids) for run, ids in self._rounds.items()}
            write_atomically(self._path, json.dumps(data).encode())
