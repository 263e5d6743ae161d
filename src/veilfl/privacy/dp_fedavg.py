"""Client-level DP-FedAvg (McMahan et al. 2018): settings and each side's pure steps.

Every client's update is clipped to L2 norm C and weighted equally; a round releases
the sum of the clipped updates plus Gaussian noise of standard deviation z·C, divided
by the expected number of clients (the fixed-denominator estimator). Where the noise
is added is selectable:

* ``central`` — the coordinator adds N(0, (z·C)²) to the sum it reconstructed (it sees
  the noiseless sum: trust it, or pair it with secure aggregation and trust it a little);
* ``distributed`` — clients add no noise: they send verified, noise-free contributions
  under secure aggregation, and the m aggregators deal fresh discrete Gaussian noise
  into every released sum, Shamir-shared among themselves, so that no party (the
  coordinator included, with up to t - 1 aggregators) ever sees an un-noised
  aggregate (:mod:`veilfl.secagg.dealt_noise`; the discrete Gaussian sum as in
  Kairouz, Liu and Steinke 2021). Needs secure aggregation;
* ``local`` — each client adds the full N(0, (z·C)²) itself.

With adaptive clipping (Andrew et al. 2021) each client also contributes
:func:`~veilfl.privacy.clipping.unclipped_bit`, +1/2 if its update was within C and
−1/2 if not (sensitivity 1/2), summed with noise of standard deviation σ_b: a
Gaussian mechanism with multiplier σ_b / (1/2) = 2σ_b. The accountant is charged
noise multiplier z; the update noise uses z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2), so that the
two Gaussian mechanisms, run on the same sample, together cost exactly one Gaussian
mechanism with multiplier z (Andrew et al. 2021, Theorem 1; the composition of
Gaussians adds their inverse squared multipliers). The coordinator recovers the
fraction with :func:`~veilfl.privacy.clipping.unclipped_fraction`.

The same settings also select DP-FTRL with tree aggregation (Kairouz et al. 2021;
:mod:`veilfl.privacy.dp_ftrl`): ``mechanism="ftrl"`` with the participation limits
``max_participations`` (K) and ``min_separation`` (b). Clients then do exactly what
they do under central or distributed DP-FedAvg (clip, add nothing); only the
coordinator's selection, the noise schedule and the accounting differ.

``min_clients`` is the number of contributions a release needs
(:attr:`DpConfig.min_contributions`): a release over fewer is withheld (see
:func:`veilfl.privacy.validation.check_dp_settings`). The noise itself does not depend
on it under any placement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from veilfl.crypto.csprng import CsprngStream
from veilfl.declared import check_declared, setting
from veilfl.errors import ConfigurationError
from veilfl.privacy.clipping import (
    UNCLIPPED_BIT_SENSITIVITY,
    AdaptiveClipping,
    clip_l2,
    unclipped_bit,
)
from veilfl.privacy.noise import gaussian

if TYPE_CHECKING:  # the accountant imports dp-accounting (scipy): clients need not
    from veilfl.privacy.accountant import Accounting
    from veilfl.privacy.dp_ftrl import TreeDpConfig

__all__ = [
    "ClientPrivacyPlan",
    "DpConfig",
    "DpMechanism",
    "NoisePlacement",
    "PrivateVector",
    "privatize",
]

NoisePlacement = Literal["central", "distributed", "local"]

DpMechanism = Literal["fedavg", "ftrl"]
"""``fedavg``: DP-FedAvg, Poisson-sampled rounds with fresh noise (McMahan et al. 2018).
``ftrl``: DP-FTRL, tree-aggregated noise and no sampling (Kairouz et al. 2021)."""


@dataclass(frozen=True)
class DpConfig:
    """Differential-privacy settings of a run.

    Attributes:
        placement: Where the noise is added.
        noise_multiplier: z, noise standard deviation over clipping norm (total).
        clip_norm: C, the clipping norm (the initial one when adaptive).
        delta: The delta at which epsilon is reported.
        target_epsilon: Training stops before the round that would exceed it.
        min_clients: The number of contributions a release needs (also
            :attr:`min_contributions`): a release with fewer is withheld.
        adaptive: Adaptive clipping rule, or None for a fixed C.
        count_stddev: σ_b, noise on the sum of the clients' +-1/2 unclipped bits
            (adaptive only); default: expected clients per round / 20, as Andrew et
            al. suggest.
        accounting: How epsilon is computed: ``"rdp"`` or ``"pld"`` (never looser
            than RDP; see :mod:`veilfl.privacy.accountant`).
        mechanism: ``"fedavg"`` or ``"ftrl"`` (:data:`DpMechanism`). Under ``ftrl``,
            ``noise_multiplier`` is each tree block's noise over C.
        max_participations: DP-FTRL's K, the most released rounds one client may take
            part in (None under DP-FedAvg).
        min_separation: DP-FTRL's b, the fewest released rounds between two of a
            client's rounds (1 allows consecutive rounds).

    Raises:
        ConfigurationError: for invalid or contradictory values, naming the flag.
    """

    placement: NoisePlacement = setting(
        flag="--dp",
        help="where DP noise is added (distributed: dealt by the aggregators into every "
        "secure sum; needs secure aggregation)",
    )
    noise_multiplier: float = setting(
        flag="--noise-multiplier", help="z (noise / C)", above=0, cli_default=None
    )
    clip_norm: float = setting(
        flag="--clip-norm", help="L2 clipping norm C", above=0, cli_default=1.0
    )
    delta: float = setting(default=1e-5, flag="--delta", help="delta for epsilon", above=0, below=1)
    target_epsilon: float | None = setting(
        default=None,
        flag="--target-epsilon",
        help="privacy budget; derives z when --noise-multiplier is not given, and "
        "training stops once it is spent",
    )
    min_clients: int = setting(
        default=1,
        flag="--dp-min-clients",
        help="a release sums at least this many clients, or is withheld "
        "(default: the minimum clients per round)",
        at_least=1,
        cli_default=None,
    )
    adaptive: AdaptiveClipping | None = setting(
        default=None,
        flag="--adaptive-clipping",
        help="adapt C toward this quantile of update norms (Andrew et al. 2021)",
        metavar="QUANTILE",
        cli_type=float,
        to_value=lambda quantile: AdaptiveClipping(target_quantile=quantile),
    )
    count_stddev: float | None = setting(
        default=None,
        flag=None,
        help="noise on the count of unclipped updates (default: expected clients / 20)",
    )
    accounting: Accounting = setting(
        default="rdp",
        flag="--accounting",
        help="how epsilon is computed: Renyi DP, or privacy loss distributions (tighter, "
        "never looser than RDP)",
        choices=("rdp", "pld"),
    )
    mechanism: DpMechanism = setting(
        default="fedavg",
        flag="--dp-mechanism",
        help="fedavg: DP-FedAvg, Poisson-sampled rounds; ftrl: DP-FTRL with tree "
        "aggregation (Kairouz et al. 2021), no sampling, the same epsilon against the "
        "coordinator and the public (with --dp distributed)",
    )
    max_participations: int | None = setting(
        default=None,
        flag="--dp-max-participations",
        help="DP-FTRL: the most rounds one client takes part in (default: the fewest "
        "that fill every round, ceil(rounds x clients per round / population))",
        metavar="K",
    )
    min_separation: int = setting(
        default=1,
        flag="--dp-min-separation",
        help="DP-FTRL: the fewest rounds between two of a client's rounds (default: "
        "population // clients per round)",
        metavar="B",
        cli_default=None,
    )

    def __post_init__(self) -> None:
        self._check_mechanism()
        if self.accounting not in ("rdp", "pld"):
            raise ConfigurationError(
                f"Unknown accounting {self.accounting!r}; use --accounting rdp or pld."
            )
        if self.placement not in ("central", "distributed", "local"):
            raise ConfigurationError(
                f"Unknown noise placement {self.placement!r}; use central, distributed or local."
            )
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise ConfigurationError(
                "A DP run needs a positive noise multiplier; to train without noise, turn "
                "differential privacy off explicitly."
            )
        if not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise ConfigurationError("A DP run needs a positive clipping norm.")
        if not 0 < self.delta < 1:
            raise ConfigurationError("delta must be in (0, 1).")
        if self.min_clients < 1:
            raise ConfigurationError("min_clients must be at least 1.")
        if self.adaptive is not None and self.placement == "local":
            raise ConfigurationError(
                "Adaptive clipping needs a noised count of clipped updates, which local "
                "noise does not provide; use a fixed clipping norm or central/distributed noise."
            )
        check_declared(self)

    def _check_mechanism(self) -> None:
        if self.mechanism not in ("fedavg", "ftrl"):
            raise ConfigurationError(
                f"Unknown DP mechanism {self.mechanism!r}; use --dp-mechanism fedavg or ftrl."
            )
        if self.mechanism == "fedavg":
            if self.max_participations is not None or self.min_separation != 1:
                raise ConfigurationError(
                    "--dp-max-participations and --dp-min-separation are DP-FTRL's "
                    "participation limits; add --dp-mechanism ftrl or drop them."
                )
            return
        if self.placement == "local":
            raise ConfigurationError(
                "--dp-mechanism ftrl adds tree noise to the sums (--dp central or "
                "distributed); --dp local noises each update on its own."
            )
        if self.adaptive is not None:
            raise ConfigurationError(
                "--dp-mechanism ftrl uses a fixed clipping norm; drop --adaptive-clipping."
            )
        if self.max_participations is None or self.max_participations < 1:
            raise ConfigurationError(
                "--dp-mechanism ftrl needs --dp-max-participations K >= 1: its epsilon "
                "holds for clients that take part in at most K rounds."
            )
        if self.min_separation < 1:
            raise ConfigurationError(
                f"--dp-min-separation must be at least 1; got {self.min_separation}."
            )

    @property
    def is_ftrl(self) -> bool:
        """Whether the run uses DP-FTRL (tree aggregation, no sampling)."""
        return self.mechanism == "ftrl"

    def tree_config(self, *, rounds: int) -> TreeDpConfig:
        """DP-FTRL's settings over ``rounds`` planned releases (the tree's length).

        Raises:
            ConfigurationError: under DP-FedAvg.
        """
        from veilfl.privacy.dp_ftrl import TreeDpConfig  # dp-accounting: clients need not

        if not self.is_ftrl or self.max_participations is None:
            raise ConfigurationError("These DP settings are DP-FedAvg's, not DP-FTRL's.")
        return TreeDpConfig(
            noise_multiplier=self.noise_multiplier,
            clip_norm=self.clip_norm,
            rounds=rounds,
            max_participations=self.max_participations,
            min_separation=self.min_separation,
            delta=self.delta,
            accounting=self.accounting,
        )

    @property
    def min_contributions(self) -> int:
        """The number of noise contributions a release needs (``--dp-min-clients``)."""
        return self.min_clients

    def count_noise(self, expected_clients: float) -> float:
        """σ_b (0 without adaptive clipping)."""
        if self.adaptive is None:
            return 0.0
        return self.count_stddev if self.count_stddev is not None else expected_clients / 20

    def update_noise_multiplier(self, expected_clients: float) -> float:
        """z_Δ: the multiplier left for the update once the count's noise is paid for:
        ``(z⁻² − (σ_b / (1/2))⁻²)^(−1/2)``, exact for the +-1/2 bit.

        Raises:
            ConfigurationError: if the count noise is too small to leave any budget.
        """
        sigma_b = self.count_noise(expected_clients)
        if sigma_b == 0:
            return self.noise_multiplier
        remainder = self.noise_multiplier**-2 - (sigma_b / UNCLIPPED_BIT_SENSITIVITY) ** -2
        if remainder <= 0:
            raise ConfigurationError(
                f"The noise on the clipped count (sigma_b = {sigma_b:g}) leaves no budget for "
                f"noise multiplier {self.noise_multiplier:g}: adaptive clipping needs "
                "z < 2 sigma_b; raise count_stddev or lower the noise multiplier."
            )
        return float(remainder**-0.5)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "placement": self.placement,
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm,
            "delta": self.delta,
            "target_epsilon": self.target_epsilon,
            "min_clients": self.min_clients,
            "adaptive": (
                None
                if self.adaptive is None
                else {
                    "target_quantile": self.adaptive.target_quantile,
                    "learning_rate": self.adaptive.learning_rate,
                }
            ),
            "count_stddev": self.count_stddev,
            "accounting": self.accounting,
            **(
                {
                    "mechanism": self.mechanism,
                    "max_participations": self.max_participations,
                    "min_separation": self.min_separation,
                }
                if self.is_ftrl
                else {}
            ),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DpConfig:
        """Inverse of :meth:`to_json`."""
        adaptive = data.get("adaptive")
        return cls(
            placement=data["placement"],
            noise_multiplier=float(data["noise_multiplier"]),
            clip_norm=float(data["clip_norm"]),
            delta=float(data["delta"]),
            target_epsilon=data.get("target_epsilon"),
            min_clients=int(data["min_clients"]),
            adaptive=None if adaptive is None else AdaptiveClipping(**adaptive),
            count_stddev=data.get("count_stddev"),
            accounting=data.get("accounting", "rdp"),
            mechanism=data.get("mechanism", "fedavg"),
            max_participations=(
                None if data.get("max_participations") is None else int(data["max_participations"])
            ),
            min_separation=int(data.get("min_separation", 1)),
        )


@dataclass(frozen=True)
class ClientPrivacyPlan:
    """What a client must do to its update in one round (sent with its task).

    Attributes:
        placement: Where the noise goes.
        clip_norm: This round's C.
        update_stddev: Standard deviation of the client's own noise on each update
            coordinate, in update units (local: z_Δ·C; central and distributed: 0, the
            aggregators deal the distributed noise).
        count_stddev: The client's own noise on its "unclipped" bit (always 0 now: the
            aggregators deal the count's noise under distributed placement).
        reports_bit: Whether the client reports its +-1/2 unclipped bit (adaptive
            clipping only: without it the bit sum would be released without noise).
    """

    placement: NoisePlacement
    clip_norm: float
    update_stddev: float
    count_stddev: float
    reports_bit: bool = False

    @classmethod
    def for_round(
        cls, config: DpConfig, *, clip_norm: float, expected_clients: float
    ) -> ClientPrivacyPlan:
        """The plan for a round with clipping norm ``clip_norm``."""
        z_update = config.update_noise_multiplier(expected_clients)
        bit = config.adaptive is not None
        if config.placement == "local":
            return cls("local", clip_norm, z_update * clip_norm, 0.0)
        if config.placement == "distributed":
            return cls("distributed", clip_norm, 0.0, 0.0, bit)
        return cls("central", clip_norm, 0.0, 0.0, bit)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dict(vars(self))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClientPrivacyPlan:
        """Inverse of :meth:`to_json`."""
        return cls(
            placement=data["placement"],
            clip_norm=float(data["clip_norm"]),
            update_stddev=float(data["update_stddev"]),
            count_stddev=float(data["count_stddev"]),
            reports_bit=bool(data.get("reports_bit", False)),
        )


@dataclass(frozen=True)
class PrivateVector:
    """A clipped (and, for local noise, noised) update, ready to send or share.

    Attributes:
        vector: The clipped (and possibly noised) flat update.
        within_bound: Whether the update needed no clipping.
        bit: The client's contribution to the noised unclipped count,
            :func:`~veilfl.privacy.clipping.unclipped_bit` (+-1/2), when the plan asks
            for it (adaptive clipping); None otherwise.
    """

    vector: npt.NDArray[np.float64]
    within_bound: bool
    bit: float | None = None


def privatize(
    delta: npt.NDArray[np.floating], *, plan: ClientPrivacyPlan, rng: CsprngStream
) -> PrivateVector:
    """Clip the client's flat update to the plan's C; add local noise if asked; under
    adaptive clipping, give the +-1/2 unclipped bit (sensitivity 1/2, as charged).

    Distributed noise is added later, to the encoded integers (see
    :func:`veilfl.secagg.client_shares.seal_update`).
    """
    clipped = clip_l2(delta, clip_norm=plan.clip_norm)
    vector = clipped.vector
    if plan.placement == "local":
        vector = vector + gaussian(rng, sigma=plan.update_stddev, count=vector.size)
    return PrivateVector(
        vector=vector,
        within_bound=clipped.within_bound,
        bit=unclipped_bit(clipped.within_bound) if plan.reports_bit else None,
    )
