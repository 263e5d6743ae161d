"""What this client gave each coordinator: its rounds, the models it trained on, and
the epsilon each run of that coordinator may spend.

A coordinator can start a new run, or announce another mode, to reset any count it
keeps for the client; so the client keeps its own, per coordinator key (every run
description names its coordinator's key, and the run id binds it) and data set,
across run ids and in every mode:

* the rounds (and buffers) it handed in, which DP-FTRL's K limit counts
  (:func:`~veilfl.protocol.client_policy.check_participations`);
* a digest of every global model it trained on: training twice on the same model lets
  a coordinator that certifies two sums subtract them, so the client declines;
* the epsilon (against the coordinator) of each run it took part in, which its
  ``--max-epsilon`` adds up (basic composition: never less than the truth).

The data set is named by its identity: ``veilfl client`` passes
:func:`~veilfl.ml.data_sources.data_set_digest` of every example it read (SHA-256 of
the examples' float32 bytes and labels: the contents, not the path, so moving a file
keeps its record and editing it starts a new one). The same key training on other
data is, for these counts, another participant. Records written before data sets were
told apart count for every data set (never less than the truth).

With a key file (``veilfl client --identity F``) the record is kept next to it, in
``F.rounds.json``, written durably before each hand-in leaves; a fresh key is a new
client, and its record lives in memory.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from veilfl.durable_files import write_atomically
from veilfl.errors import ConfigurationError

__all__ = ["ParticipationRecord", "model_digest"]

_FORMAT = 3
_ANY_DATA: None = None  # an entry from before data sets were told apart


def model_digest(weights: Mapping[str, np.ndarray]) -> str:
    """SHA-256 (hex) of a model's tensors, by name, as float32 little-endian bytes."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode() + b"\x00")
        digest.update(np.ascontiguousarray(weights[name], dtype="<f4").tobytes())
    return digest.hexdigest()


@dataclass
class _Coordinator:
    rounds: set[tuple[str, int]] = field(default_factory=set)
    models: set[str] = field(default_factory=set)
    epsilon: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "rounds": sorted([run, r] for run, r in self.rounds),
            "models": sorted(self.models),
            "epsilon": {run: (None if math.isinf(e) else e) for run, e in self.epsilon.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Coordinator:
        return cls(
            rounds={(str(run), int(r)) for run, r in data.get("rounds", ())},
            models={str(m) for m in data.get("models", ())},
            epsilon={
                str(run): (math.inf if e is None else float(e))
                for run, e in dict(data.get("epsilon", {})).items()
            },
        )


_Key = tuple[str, str | None]


class ParticipationRecord:
    """This client's rounds, trained-on models and epsilons, per coordinator key and
    data set.

    Args:
        path: The JSON file that keeps them, or None for memory only.
        data_set: The identity of the data this client trains on (see the module
            docstring); what it reads and adds is this data set's.

    Raises:
        ConfigurationError: if the file exists but is not such a record.
    """

    def __init__(self, path: Path | None = None, *, data_set: str = "") -> None:
        self._path = path
        self._data_set = data_set
        self._coordinators: dict[_Key, _Coordinator] = {}
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text())
                if data.get("format") == _FORMAT:
                    self._coordinators = {
                        (str(entry["coordinator"]), entry["data_set"]): _Coordinator.from_json(
                            entry
                        )
                        for entry in data["entries"]
                    }
                elif data.get("format") == 2:  # per coordinator key, data set unknown
                    self._coordinators = {
                        (str(key), _ANY_DATA): _Coordinator.from_json(entry)
                        for key, entry in data["coordinators"].items()
                    }
                else:  # the first format: round ids per run id, coordinator unknown
                    self._coordinators["", _ANY_DATA] = _Coordinator(
                        rounds={(str(run), int(r)) for run, ids in data.items() for r in ids}
                    )
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                raise ConfigurationError(
                    f"{path} is not a record of handed-in rounds ({exc}); move it away only "
                    "if this client's key is new, or DP-FTRL's limit could be exceeded."
                ) from None

    @classmethod
    def beside(cls, key_file: Path | None, *, data_set: str = "") -> ParticipationRecord:
        """The record kept next to ``key_file`` (in memory without one), for the data
        set ``data_set``."""
        path = None if key_file is None else key_file.with_name(key_file.name + ".rounds.json")
        return cls(path, data_set=data_set)

    def _entry(self, coordinator: str) -> _Coordinator:
        """This data set's entry for ``coordinator``, with what older records kept for
        every data set."""
        merged = _Coordinator()
        for key in ((coordinator, self._data_set), (coordinator, _ANY_DATA)):
            entry = self._coordinators.get(key)
            if entry is not None:
                merged.rounds |= entry.rounds
                merged.models |= entry.models
                for run, epsilon in entry.epsilon.items():
                    merged.epsilon[run] = max(epsilon, merged.epsilon.get(run, 0.0))
        return merged

    def count(self, coordinator: str) -> int:
        """Distinct rounds handed in to ``coordinator`` (its key), in all its runs."""
        return len(self._entry(coordinator).rounds)

    def trained_on(self, coordinator: str, digest: str) -> bool:
        """Whether this client handed in an update trained on the model ``digest``."""
        return digest in self._entry(coordinator).models

    def earlier_epsilon(self, coordinator: str, *, run_id: str) -> float:
        """The epsilon of ``coordinator``'s other runs this client took part in, added."""
        return sum(e for run, e in self._entry(coordinator).epsilon.items() if run != run_id)

    def add(
        self,
        coordinator: str,
        run_id: str,
        round_id: int,
        *,
        model: str | None = None,
        epsilon: float | None = None,
    ) -> None:
        """Note a hand-in to ``coordinator``'s run ``run_id`` on the model ``model``
        (digest), and the run's ``epsilon`` (durably, before returning, when kept in a
        file)."""
        entry = self._coordinators.setdefault((coordinator, self._data_set), _Coordinator())
        before = (len(entry.rounds), len(entry.models), dict(entry.epsilon))
        entry.rounds.add((run_id, round_id))
        if model is not None:
            entry.models.add(model)
        if epsilon is not None:
            entry.epsilon[run_id] = epsilon
        if self._path is None or before == (len(entry.rounds), len(entry.models), entry.epsilon):
            return
        data = {
            "format": _FORMAT,
            "entries": [
                {"coordinator": coordinator, "data_set": data_set, **e.to_json()}
                for (coordinator, data_set), e in self._coordinators.items()
            ],
        }
        write_atomically(self._path, json.dumps(data).encode())
