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

The settings (:class:`~veilfl.privacy.dp_config.DpConfig`) are shared by every
mechanism; DP-FedAvg's place among them is
:class:`~veilfl.privacy.mechanisms.fedavg.DpFedAvg`. Under the others (DP-FTRL with
tree aggregation, :mod:`veilfl.privacy.dp_ftrl`) clients do exactly what they do under
central or distributed DP-FedAvg (clip, add nothing); only the coordinator's
selection, the noise schedule and the accounting differ.

``min_clients`` is the number of contributions a release needs
(:attr:`DpConfig.min_contributions`): a release over fewer is withheld (see
:func:`veilfl.privacy.validation.check_dp_settings`). The noise itself does not depend
on it under any placement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from veilfl.crypto.csprng import CsprngStream
from veilfl.privacy.clipping import clip_l2, unclipped_bit
from veilfl.privacy.dp_config import DpConfig, NoisePlacement
from veilfl.privacy.noise import gaussian

__all__ = [
    "ClientPrivacyPlan",
    "PrivateVector",
    "privatize",
]


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
