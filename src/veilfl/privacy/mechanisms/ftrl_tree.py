"""DP-FTRL with tree aggregation as a :class:`~veilfl.privacy.mechanisms.base.PrivacyMechanism`.

DP-FTRL (Kairouz et al. 2021; :mod:`veilfl.privacy.dp_ftrl`): no sampling; every
client takes part in at most K released rounds, at least b apart, which the
coordinator's public selection enforces and each client checks; the releases are the
changes of the tree's noised prefix sums (the ``"tree"`` schedule), with noise added
centrally or dealt by the aggregators. The same epsilon holds against the coordinator
and the public under distributed noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from veilfl.errors import ConfigurationError
from veilfl.privacy.mechanisms.base import DealtNoisePlan, PrivacyFacts, PrivacyMechanism
from veilfl.privacy.mechanisms.schedule import ReleaseSchedule, TreeNoiseSchedule

if TYPE_CHECKING:
    from veilfl.privacy.dp_config import DpConfig
    from veilfl.privacy.dp_ftrl import TreeDpConfig
    from veilfl.privacy.report import PrivacyReport

__all__ = ["DpFtrlTree"]


class DpFtrlTree(PrivacyMechanism):
    """Tree-aggregated noise, at most K participations b apart."""

    name: ClassVar[str] = "ftrl"
    title: ClassVar[str] = "DP-FTRL"
    summary: ClassVar[str] = (
        "DP-FTRL with tree aggregation (Kairouz et al. 2021), no sampling, the same "
        "epsilon against the coordinator and the public (with --dp distributed)"
    )
    samples_clients: ClassVar[bool] = False
    placements: ClassVar[frozenset[str]] = frozenset({"central", "distributed"})

    def tree_config(self, config: DpConfig, *, rounds: int) -> TreeDpConfig:
        """The tree's settings over ``rounds`` planned releases."""
        from veilfl.privacy.dp_ftrl import TreeDpConfig  # dp-accounting: clients need not

        if config.max_participations is None:
            raise ConfigurationError("DP-FTRL needs --dp-max-participations.")
        return TreeDpConfig(
            noise_multiplier=config.noise_multiplier,
            clip_norm=config.clip_norm,
            rounds=rounds,
            max_participations=config.max_participations,
            min_separation=config.min_separation,
            delta=config.delta,
            accounting=config.accounting,
        )

    def release_schedule(self, config: DpConfig, *, rounds: int) -> ReleaseSchedule:
        """The tree's prefix-sum changes."""
        return TreeNoiseSchedule()

    def dealt_noise(
        self, config: DpConfig, *, per_update_bound: float, expected_clients: float
    ) -> DealtNoisePlan:
        """z·B on every block of the update coordinates; no bit (fixed C)."""
        return DealtNoisePlan(
            schedule=TreeNoiseSchedule.name,
            update_stddev=config.noise_multiplier * per_update_bound,
        )

    def sensitivity(self, config: DpConfig, *, rounds: int) -> float:
        """:func:`~veilfl.privacy.dp_ftrl.tree_sensitivity` under (K, b)."""
        from veilfl.privacy.dp_ftrl import tree_sensitivity

        return tree_sensitivity(
            rounds=rounds,
            max_participations=config.max_participations or rounds,
            min_separation=config.min_separation,
        )

    def planned_epsilon(self, config: DpConfig, *, rounds: int, sample_rate: float) -> float:
        """:func:`~veilfl.privacy.dp_ftrl.dp_ftrl_epsilon` (``sample_rate`` unused)."""
        from veilfl.privacy.dp_ftrl import dp_ftrl_epsilon

        return dp_ftrl_epsilon(
            noise_multiplier=config.noise_multiplier,
            rounds=rounds,
            max_participations=config.max_participations or rounds,
            min_separation=config.min_separation,
            delta=config.delta,
            accounting=config.accounting,
        )

    def derivation_note(
        self, config: DpConfig, *, target_epsilon: float, rounds: int, sample_rate: float
    ) -> str:
        """What the derived block multiplier spends."""
        return (
            f"block noise multiplier {config.noise_multiplier:.4f} spends epsilon "
            f"{target_epsilon:.3f} over {rounds} {self.title} rounds (K "
            f"{config.max_participations or 1}, b {config.min_separation}, "
            f"{config.accounting.upper()})"
        )

    def report(self, config: DpConfig, facts: PrivacyFacts) -> PrivacyReport:
        """:func:`~veilfl.privacy.dp_ftrl.dp_ftrl_report`'s assumptions, with this
        mechanism's :meth:`planned_epsilon` after the releases so far (one number for
        both observers under distributed noise)."""
        from dataclasses import replace

        from veilfl.privacy.dp_ftrl import dp_ftrl_report

        distributed = config.placement == "distributed"
        report = dp_ftrl_report(
            self.tree_config(config, rounds=max(1, facts.rounds_released)),
            rounds_released=facts.rounds_released,
            noise_from_aggregators=distributed,
        )
        epsilon = self.planned_epsilon(config, rounds=facts.rounds_released, sample_rate=1.0)
        return replace(
            report,
            mechanism=report.mechanism.replace("DP-FTRL", self.title, 1),
            epsilon_public=epsilon,
            epsilon_coordinator=epsilon if distributed else None,
        )
