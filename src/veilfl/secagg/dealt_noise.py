"""How much noise the aggregators deal per release under distributed DP-FedAvg.

With verified bounds every client proves that its encoded contribution has L2 norm at
most the proof's integer bound B (:class:`~veilfl.secagg.contribution.ContributionLayout`),
so client-side noise cannot live inside the contribution. Instead the aggregators deal
fresh noise for every release (:class:`~veilfl.secagg.tree_noise.TreeNoiseAggregator`
with the ``"fresh"`` schedule), after verification and outside any client's control.

Per coordinate of the d + 3 measurement (Gaussian mechanism, McMahan et al. 2018;
discrete Gaussians, Canonne, Kamath and Steinke 2020):

* the d update coordinates: sigma = z_Δ·B integer units, z_Δ the update's noise
  multiplier (:meth:`~veilfl.privacy.dp_config.DpConfig.update_noise_multiplier`). B is
  the *verified* bound, so the guarantee holds whatever a client (or a coordinator
  telling clients how to clip) does; it is about 5% above ``norm_bound·scale``, and
  above z_Δ·C·scale whenever an adaptive C stays within ``norm_bound``;
* the unclipped-bit coordinate (each client's 2b - 1, twice the +-1/2 bit the
  accountant charges, proven to be -1 or +1): sigma = 2·sigma_b under adaptive
  clipping, else 0 (every client then sends the constant +1, and the sum is not read);
* the weight and loss coordinates: none (under DP every weight is 1, so their sum is
  the participant count the coordinator knows, and the loss is sent as 0).

Each of the m dealers draws variance sigma^2/h, h = m - t + 1, so the dealers outside
any coalition of t - 1 aggregators add at least sigma^2.

Under DP-FTRL (``mechanism="ftrl"``; Kairouz et al. 2021) the same noise is dealt
once per tree block rather than once per release (the ``"tree"`` schedule): sigma =
z·B on the update coordinates, z being the block noise multiplier, and none on the
three others (no adaptive clipping, so the bit is the constant +1).

Under a Toeplitz strategy (banded matrix factorisation, ``mechanism="banded"``) a fresh
block is dealt per release, and each aggregator releases its share of
``sum_j c_j a_(t-j) + z_t`` on the d update coordinates with the strategy's integer
coefficients (the ``"toeplitz"`` schedule; the extra coordinates are released as plain
sums): sigma = z·B·2^bits on the update coordinates
(:meth:`~veilfl.privacy.integer_strategy.IntegerToeplitzStrategy.noise_stddev`). The
release must stay inside the field to be read as a signed integer:
:func:`dealt_noise_config` refuses settings where
:meth:`~veilfl.privacy.integer_strategy.IntegerToeplitzStrategy.release_bound` (the
coefficients' weight on n clients' updates of at most B each, plus
:data:`NOISE_TAIL_STDDEVS` standard deviations of the release's noise) reaches
(p - 1) / 2.
"""

from __future__ import annotations

import math

from veilfl.errors import ConfigurationError
from veilfl.privacy.dp_config import DpConfig
from veilfl.privacy.integer_strategy import IntegerToeplitzStrategy
from veilfl.secagg.contribution import EXTRA_COORDINATES, ContributionLayout
from veilfl.secagg.tree_noise import TreeNoiseConfig

__all__ = ["NOISE_TAIL_STDDEVS", "dealt_noise_config"]

NOISE_TAIL_STDDEVS = 10
"""How many standard deviations of a release's noise the field must hold beyond the
signal (a Gaussian coordinate exceeds 10 sigma with probability about 1.5e-23)."""


def dealt_noise_config(
    dp: DpConfig, *, layout: ContributionLayout, expected_clients: float
) -> TreeNoiseConfig:
    """The noise settings every aggregator of a distributed DP run shares, as the run's
    mechanism plans them (:meth:`~veilfl.privacy.mechanisms.base.PrivacyMechanism.dealt_noise`):
    fresh noise per release under DP-FedAvg, tree noise under DP-FTRL.

    Args:
        dp: The run's DP settings (placement ``distributed``).
        layout: The contributions' encoding.
        expected_clients: Clients expected per release (sets sigma_b's default).

    Raises:
        ConfigurationError: if the settings leave no budget for the update noise, or a
            Toeplitz strategy's release could wrap around the field.
    """
    config = layout.config
    plan = dp.privacy_mechanism.dealt_noise(
        dp, per_update_bound=layout.bounds.norm_bound, expected_clients=expected_clients
    )
    noise = TreeNoiseConfig(
        num_aggregators=config.num_aggregators,
        threshold=config.threshold,
        length=layout.measurement_length,
        block_stddev=plan.update_stddev,
        schedule=plan.schedule,
        profile=plan.profile(dimension=layout.dimension, extra=EXTRA_COORDINATES),
        coefficients=plan.coefficients,
        encoded_length=layout.dimension if plan.coefficients else None,
    )
    if plan.coefficients:
        _check_release_fits(dp, noise, layout=layout, expected_clients=expected_clients)
    return noise


def _check_release_fits(
    dp: DpConfig, noise: TreeNoiseConfig, *, layout: ContributionLayout, expected_clients: float
) -> None:
    """Refuse a Toeplitz strategy whose release could wrap around the field."""
    # The strategy combines the d update coordinates only (each client's at most B);
    # the extra ones are released as plain sums, which the encoding keeps unwrapped.
    aggregate_bound = max(1, math.ceil(expected_clients)) * layout.bounds.norm_bound
    noise_bound = math.ceil(NOISE_TAIL_STDDEVS * noise.release_stddev(1))
    strategy = IntegerToeplitzStrategy(noise.coefficients, bits=0)
    reach = strategy.release_bound(aggregate_bound=aggregate_bound, noise_bound=noise_bound)
    if reach >= (noise.field.modulus - 1) // 2:
        raise ConfigurationError(
            f"--dp-mechanism {dp.mechanism}'s releases could reach {reach:.3g}, beyond the "
            f"field's {(noise.field.modulus - 1) // 2:.3g}; lower its scale bits, the noise "
            "multiplier (raise --target-epsilon) or the clients per round."
        )
