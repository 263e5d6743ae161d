"""DP-FedAvg as a :class:`~veilfl.privacy.mechanisms.base.PrivacyMechanism`.

Client-level DP-FedAvg (McMahan et al. 2018; :mod:`veilfl.privacy.dp_fedavg`): rounds
are Poisson-sampled in secret, every release carries fresh Gaussian noise of standard
deviation z·C (the ``"fresh"`` schedule), adaptive clipping (Andrew et al. 2021) is
allowed, and the noise goes wherever the placement says (central, distributed or
local). Against the public the ledger charges the sampling rate q; against the
coordinator, which knows the sample, no amplification holds (:mod:`veilfl.privacy.report`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from veilfl.privacy.mechanisms.base import DealtNoisePlan, PrivacyFacts, PrivacyMechanism
from veilfl.privacy.mechanisms.schedule import FreshNoiseSchedule, ReleaseSchedule

if TYPE_CHECKING:
    from veilfl.privacy.dp_config import DpConfig
    from veilfl.privacy.report import PrivacyReport

__all__ = ["DpFedAvg"]


class DpFedAvg(PrivacyMechanism):
    """Poisson-sampled rounds with fresh Gaussian noise per release."""

    name: ClassVar[str] = "fedavg"
    title: ClassVar[str] = "DP-FedAvg"
    summary: ClassVar[str] = "DP-FedAvg, Poisson-sampled rounds"
    samples_clients: ClassVar[bool] = True
    adaptive_clipping: ClassVar[bool] = True

    def settings_json(self, config: DpConfig) -> dict[str, Any]:
        """Nothing: DP-FedAvg's run JSON (and run id) predates the mechanism key."""
        return {}

    def release_schedule(self, config: DpConfig, *, rounds: int) -> ReleaseSchedule:
        """Fresh noise per release."""
        return FreshNoiseSchedule()

    def dealt_noise(
        self, config: DpConfig, *, per_update_bound: float, expected_clients: float
    ) -> DealtNoisePlan:
        """z_Δ·B on the update, and 2σ_b on the clients' 2b - 1 bit under adaptive
        clipping (see :mod:`veilfl.secagg.dealt_noise`)."""
        return DealtNoisePlan(
            schedule=FreshNoiseSchedule.name,
            update_stddev=config.update_noise_multiplier(expected_clients) * per_update_bound,
            bit_stddev=2.0 * config.count_noise(expected_clients),
        )

    def sensitivity(self, config: DpConfig, *, rounds: int) -> float:
        """sqrt(rounds): a client may be in every release (no limit is enforced)."""
        return math.sqrt(rounds)

    def epsilon_against_coordinator(
        self, config: DpConfig, *, rounds: int, expected_clients: float
    ) -> float:
        """Every release a Gaussian mechanism of the run's multiplier (local noise: the
        client's own noise alone), composed over all ``rounds`` (zero-out); ``inf``
        under central noise."""
        from veilfl.privacy.accountant import exact_gaussian_epsilon  # scipy: on demand

        if config.placement == "central":
            return math.inf
        multiplier = config.noise_multiplier
        if config.placement == "local":
            multiplier = config.update_noise_multiplier(expected_clients)
        if not multiplier > 0:
            return math.inf
        return exact_gaussian_epsilon(multiplier / math.sqrt(rounds), delta=config.delta)

    def planned_epsilon(self, config: DpConfig, *, rounds: int, sample_rate: float) -> float:
        """The sampled Gaussian mechanism over ``rounds`` rounds at q."""
        from veilfl.privacy.accountant import epsilon_for

        return epsilon_for(
            noise_multiplier=config.noise_multiplier,
            sample_rate=sample_rate,
            rounds=rounds,
            delta=config.delta,
            accounting=config.accounting,
        )

    def noise_multiplier_for(
        self, config: DpConfig, *, target_epsilon: float, rounds: int, sample_rate: float
    ) -> float:
        """:func:`veilfl.privacy.accountant.noise_multiplier_for` (RDP-bracketed)."""
        from veilfl.privacy.accountant import noise_multiplier_for

        return noise_multiplier_for(
            target_epsilon=target_epsilon,
            sample_rate=sample_rate,
            rounds=rounds,
            delta=config.delta,
            accounting=config.accounting,
        )

    def derivation_note(
        self, config: DpConfig, *, target_epsilon: float, rounds: int, sample_rate: float
    ) -> str:
        """What the derived z spends, against the public."""
        return (
            f"noise multiplier {config.noise_multiplier:.4f} spends epsilon "
            f"{target_epsilon:.3f} against the public over {rounds} rounds "
            f"(q {sample_rate:.4g}, {config.accounting.upper()})"
        )

    def report(self, config: DpConfig, facts: PrivacyFacts) -> PrivacyReport:
        """:func:`~veilfl.privacy.report.dp_fedavg_report`."""
        from veilfl.privacy.report import dp_fedavg_report

        return dp_fedavg_report(
            placement=config.placement,
            ledger=facts.ledger,
            delta=config.delta,
            accounting=config.accounting,
            max_participations=min(facts.max_participations, facts.ledger.rounds),
            secret_poisson_sampling=facts.secret_sampling,
            secure_aggregation=facts.secure_aggregation,
            withheld_probability=facts.withheld_probability,
        )
