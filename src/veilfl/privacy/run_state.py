"""A DP run's privacy state after a release: what a restarted coordinator needs to
continue exactly where it stopped.

Epsilon is a pure function of the :class:`~veilfl.privacy.ledger.PrivacyLedger` (the
released rounds), the adaptive clipping norm evolves from round to round, and the
withheld-release term of delta sums over every sampling attempt. All three are
recorded with each released round, in the same transaction as the round itself
(``veilfl.server.run_store``), and restored from the last released round on restart:
never rebuilt from round ids, which abandoned and withheld rounds skip.

How often each client took part is not in here: it is the count of the released
rounds' participant lists, which the run store already keeps.

Under DP-FTRL with central noise the state also holds the secret the tree's block
noise is derived from (:mod:`veilfl.privacy.central_tree`), so that a restarted
coordinator removes exactly the noise it added; it never appears in a ``repr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from veilfl.errors import ConfigurationError, StorageError
from veilfl.privacy.ledger import PrivacyLedger

__all__ = ["RUN_STATE_VERSION", "DpRunState"]

RUN_STATE_VERSION = 1
"""Version of :meth:`DpRunState.to_json`'s layout."""


@dataclass(frozen=True)
class DpRunState:
    """A DP run's privacy state after its latest release.

    Attributes:
        ledger: The released rounds.
        clip_norm: The clipping norm of the next round (the adapted one under adaptive
            clipping).
        sampling_attempts: Poisson sampling attempts so far, released and withheld.
        withheld_probability: The union bound over those attempts on the chance that
            one client decided whether a round was withheld
            (:class:`~veilfl.privacy.sampling.PoissonSampler`).
        tree_noise_key: Under central DP-FTRL, the 32-byte secret of the tree's block
            noise; None otherwise.
        mechanism_state: The mechanism's release state beyond the key (JSON): a
            decoder's state, and under central noise the last round sums a release
            combines (schedules of window > 1, :mod:`veilfl.privacy.mechanisms.schedule`).
            Empty for DP-FedAvg and the tree. Secret like the key: it may hold
            noiseless sums.

    Raises:
        ConfigurationError: for a clipping norm that is not positive and finite, or
            counts out of range.
    """

    ledger: PrivacyLedger
    clip_norm: float
    sampling_attempts: int = 0
    withheld_probability: float = 0.0
    tree_noise_key: bytes | None = field(default=None, repr=False)
    mechanism_state: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise ConfigurationError(f"A clipping norm must be positive; got {self.clip_norm!r}.")
        if self.sampling_attempts < 0 or not 0 <= self.withheld_probability <= 1:
            raise ConfigurationError(
                "Sampling attempts must be at least 0 and the withheld bound in [0, 1]."
            )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; floats survive ``json`` exactly (shortest repr)."""
        return {
            "version": RUN_STATE_VERSION,
            "ledger": self.ledger.to_json(),
            "clip_norm": self.clip_norm,
            "sampling_attempts": self.sampling_attempts,
            "withheld_probability": self.withheld_probability,
            **(
                {} if self.tree_noise_key is None else {"tree_noise_key": self.tree_noise_key.hex()}
            ),
            **({"mechanism_state": self.mechanism_state} if self.mechanism_state else {}),
        }

    @classmethod
    def from_json(cls, data: Any) -> DpRunState:
        """Inverse of :meth:`to_json`.

        Raises:
            StorageError: if ``data`` is not a state this version wrote.
        """
        if not isinstance(data, dict) or data.get("version") != RUN_STATE_VERSION:
            raise StorageError(
                f"The stored privacy state is not in format version {RUN_STATE_VERSION}; "
                "resume the run with the veilfl version that started it."
            )
        try:
            return cls(
                ledger=PrivacyLedger.from_json(data["ledger"]),
                clip_norm=float(data["clip_norm"]),
                sampling_attempts=int(data["sampling_attempts"]),
                withheld_probability=float(data["withheld_probability"]),
                tree_noise_key=(
                    None
                    if data.get("tree_noise_key") is None
                    else bytes.fromhex(str(data["tree_noise_key"]))
                ),
                mechanism_state=dict(data.get("mechanism_state", {})),
            )
        except (KeyError, TypeError, ValueError, ConfigurationError) as error:
            raise StorageError(f"The stored privacy state is malformed ({error}).") from None
