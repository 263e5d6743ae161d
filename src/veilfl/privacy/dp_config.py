"""The differential-privacy settings of a run, whatever the mechanism.

:class:`DpConfig` holds what every mechanism shares (where the noise goes, z, C, delta,
the target epsilon, the accounting, the minimum contributions of a release, adaptive
clipping) and the participation limits (K, b) of the mechanisms that select clients by
a public rule instead of sampling them. Which mechanism runs is a name in the registry
(:mod:`veilfl.privacy.mechanisms`): the config asks that mechanism to check the
settings it owns and to write its keys into the run's JSON. The DP-FedAvg steps
themselves (the client's plan, clipping, local noise) are in
:mod:`veilfl.privacy.dp_fedavg`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from veilfl.declared import check_declared, config_from_json, setting
from veilfl.errors import ConfigurationError
from veilfl.privacy.clipping import UNCLIPPED_BIT_SENSITIVITY, AdaptiveClipping

if TYPE_CHECKING:  # the accountant imports dp-accounting (scipy): clients need not
    from veilfl.privacy.accountant import Accounting
    from veilfl.privacy.mechanisms.base import PrivacyMechanism

__all__ = ["DEFAULT_MECHANISM", "PLACEMENTS", "DpConfig", "NoisePlacement"]

NoisePlacement = Literal["central", "distributed", "local"]

PLACEMENTS: tuple[NoisePlacement, ...] = ("central", "distributed", "local")

DEFAULT_MECHANISM = "fedavg"
"""The mechanism of a run that names none (DP-FedAvg, the run JSON's oldest layout)."""


def _mechanism_names() -> tuple[str, ...]:
    """``--dp-mechanism``'s choices: the registry's names when the parser is built."""
    from veilfl.privacy.mechanisms import mechanism_names

    return mechanism_names()


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
        mechanism: The registered name of the mechanism
            (:mod:`veilfl.privacy.mechanisms`; :attr:`privacy_mechanism` is the object).
            Under ``ftrl``, ``noise_multiplier`` is each tree block's noise over C.
        max_participations: K, the most released rounds one client may take part in,
            for mechanisms that limit participation instead of sampling (None under
            DP-FedAvg).
        min_separation: b, the fewest released rounds between two of a client's rounds
            (1 allows consecutive rounds), for the same mechanisms.
        options: The mechanism's own settings: an instance of its
            :attr:`~veilfl.privacy.mechanisms.base.PrivacyMechanism.options` class
            (declared there with ``setting(...)``; flags ``--dp-...``), filled with its
            defaults when not given; None for a mechanism without any.

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
    mechanism: str = setting(
        default=DEFAULT_MECHANISM,
        flag="--dp-mechanism",
        help="fedavg: DP-FedAvg, Poisson-sampled rounds; ftrl: DP-FTRL with tree "
        "aggregation (Kairouz et al. 2021), no sampling, the same epsilon against the "
        "coordinator and the public (with --dp distributed); see docs/privacy.md",
        choices=_mechanism_names,
    )
    max_participations: int | None = setting(
        default=None,
        flag="--dp-max-participations",
        help="DP-FTRL and other unsampled mechanisms: the most rounds one client takes "
        "part in (default: the fewest "
        "that fill every round, ceil(rounds x clients per round / population))",
        metavar="K",
    )
    min_separation: int = setting(
        default=1,
        flag="--dp-min-separation",
        help="DP-FTRL and other unsampled mechanisms: the fewest rounds between two of a "
        "client's rounds (default: "
        "population // clients per round)",
        metavar="B",
        cli_default=None,
    )
    options: Any = field(default=None, compare=True)

    def __post_init__(self) -> None:
        if self.accounting not in ("rdp", "pld"):
            raise ConfigurationError(
                f"Unknown accounting {self.accounting!r}; use --accounting rdp or pld."
            )
        if self.placement not in PLACEMENTS:
            raise ConfigurationError(
                f"Unknown noise placement {self.placement!r}; use central, distributed or local."
            )
        self._check_mechanism()
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
        mechanism = self.privacy_mechanism
        if mechanism.options is not None and self.options is None:
            object.__setattr__(self, "options", mechanism.options())
        if (mechanism.options is None) != (self.options is None) or (
            mechanism.options is not None and not isinstance(self.options, mechanism.options)
        ):
            raise ConfigurationError(
                f"--dp-mechanism {self.mechanism} takes "
                + (
                    "no options of its own."
                    if mechanism.options is None
                    else f"its own options ({mechanism.options.__name__})."
                )
            )
        if self.options is not None:
            check_declared(self.options)
        mechanism.check(self)

    @property
    def privacy_mechanism(self) -> PrivacyMechanism:
        """The registered mechanism named by :attr:`mechanism`.

        Raises:
            ConfigurationError: for an unknown name, listing the registered ones.
        """
        from veilfl.privacy.mechanisms import mechanism_named

        return mechanism_named(self.mechanism)

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
            **self.privacy_mechanism.settings_json(self),
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
            mechanism=data.get("mechanism", DEFAULT_MECHANISM),
            max_participations=(
                None if data.get("max_participations") is None else int(data["max_participations"])
            ),
            min_separation=int(data.get("min_separation", 1)),
            options=_options_from_json(
                data.get("mechanism", DEFAULT_MECHANISM), data.get("options")
            ),
        )


def _options_from_json(mechanism: str, data: Any) -> Any:
    """The mechanism's options from the run's JSON (None when absent)."""
    if data is None:
        return None
    from veilfl.privacy.mechanisms import mechanism_named

    options = mechanism_named(mechanism).options
    if options is None:
        raise ConfigurationError(f"--dp-mechanism {mechanism} takes no options of its own.")
    return config_from_json(options, data)
