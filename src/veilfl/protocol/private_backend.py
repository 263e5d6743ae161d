"""What the coordinator asks of a private backend, whatever the mechanism.

A private backend wraps the aggregation backend (plaintext or secure) with a privacy
mechanism's clipping, noise, denominator and accounting
(:mod:`veilfl.privacy.mechanisms`). Two implement it:
:class:`~veilfl.protocol.private_aggregation.PrivateAggregation` for mechanisms that
sample clients (DP-FedAvg) and
:class:`~veilfl.protocol.private_ftrl.FtrlAggregation` for those that limit
participation (DP-FTRL); the coordinator, the server and the simulators see only this
interface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from veilfl.protocol.aggregation import AggregationBackend

if TYPE_CHECKING:
    from veilfl.privacy.dp_config import DpConfig
    from veilfl.privacy.ledger import PrivacyLedger
    from veilfl.privacy.report import PrivacyReport
    from veilfl.privacy.run_state import DpRunState

__all__ = ["PrivacyBackend"]


class PrivacyBackend(AggregationBackend, Protocol):
    """An aggregation backend that privatizes every release and accounts for it."""

    @property
    def config(self) -> DpConfig:
        """The run's DP settings (its mechanism among them)."""

    @property
    def clip_norm(self) -> float:
        """The next round's clipping norm (adapted under adaptive clipping)."""

    @property
    def ledger(self) -> PrivacyLedger:
        """The releases so far, as charged."""

    @property
    def expected_clients(self) -> float:
        """The fixed denominator."""

    @property
    def secret_sampling(self) -> bool:
        """Whether clients are Poisson-sampled with coins the public never sees."""

    def report(self) -> PrivacyReport:
        """Epsilon against each observer after the releases so far."""

    def state(self) -> DpRunState:
        """What a restarted coordinator passes back to continue exactly."""
