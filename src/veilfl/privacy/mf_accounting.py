"""Epsilon of a matrix-factorisation mechanism, and the noise for a target epsilon.

A matrix mechanism releases C x + z with z ~ N(0, sigma^2 I) per round (Denisov,
McMahan, Rush, Smith and Thakurta 2022). Write sigma = z·clip, with z the *noise
multiplier* of each release. For a client whose contributions can move C x by at
most sens·clip in L2 (:mod:`veilfl.privacy.min_separation`), the whole release is
one Gaussian mechanism with noise multiplier z / sens. That holds even though each
round's updates depend on the models released before it: Denisov et al. 2022
show that a linear mechanism with Gaussian noise on adaptively chosen
inputs is as private as the non-adaptive one with the same sensitivity.

Epsilon comes from :func:`veilfl.privacy.accountant.epsilon_of` on a one-round
unsampled ledger (``"pld"``: the exact Gaussian curve, Balle and Wang 2018;
``"rdp"``: its Rényi bound), under zero-out adjacency, as for DP-FTRL
(:mod:`veilfl.privacy.dp_ftrl`). No amplification by sampling is claimed, so the
number holds against an observer who knows who took part.
"""

from __future__ import annotations

import math

from veilfl.errors import ConfigurationError
from veilfl.privacy.accountant import Accounting, epsilon_of
from veilfl.privacy.ledger import PrivacyLedger

__all__ = ["matrix_mechanism_epsilon", "matrix_mechanism_noise_multiplier_for"]


def _check_sensitivity(sensitivity: float) -> None:
    if not (sensitivity >= 0 and math.isfinite(sensitivity)):
        raise ConfigurationError(
            f"The strategy's sensitivity must be a finite number >= 0; got {sensitivity!r}."
        )


def matrix_mechanism_epsilon(
    *,
    noise_multiplier: float,
    sensitivity: float,
    delta: float,
    accounting: Accounting = "pld",
) -> float:
    """Epsilon at ``delta`` of the release C x + N(0, (z·clip)^2 I).

    Args:
        noise_multiplier: z, each release's noise standard deviation over the
            clipping norm.
        sensitivity: The strategy's sensitivity under the participation schema, in
            units of the clipping norm.
        delta: The delta epsilon is stated at.
        accounting: ``"pld"`` or ``"rdp"``.

    Raises:
        ConfigurationError: for a non-positive z, a negative sensitivity, delta
            outside (0, 1) or an unknown accounting.
    """
    _check_sensitivity(sensitivity)
    if not (noise_multiplier > 0 and math.isfinite(noise_multiplier)):
        raise ConfigurationError("The noise multiplier must be a positive number.")
    if sensitivity == 0:
        return 0.0
    one_gaussian = PrivacyLedger.from_released_rounds(
        1, noise_multiplier=noise_multiplier / sensitivity, sample_rate=1.0
    )
    return epsilon_of(one_gaussian, delta=delta, accounting=accounting, adjacency="zero-out")


def matrix_mechanism_noise_multiplier_for(
    *,
    target_epsilon: float,
    sensitivity: float,
    delta: float,
    accounting: Accounting = "pld",
) -> float:
    """The smallest noise multiplier z (to 0.1%) whose release spends at most
    ``target_epsilon``, found by bisection on :func:`matrix_mechanism_epsilon`.

    Raises:
        ConfigurationError: for a non-positive target, a non-positive sensitivity or
            invalid delta or accounting.
    """
    if not target_epsilon > 0:
        raise ConfigurationError("The target epsilon must be positive.")
    _check_sensitivity(sensitivity)
    if sensitivity == 0:
        raise ConfigurationError("A strategy with zero sensitivity needs no noise.")

    def spent(z: float) -> float:
        return matrix_mechanism_epsilon(
            noise_multiplier=z, sensitivity=sensitivity, delta=delta, accounting=accounting
        )

    low, high = 1e-3 * sensitivity, sensitivity
    while spent(high) > target_epsilon:
        low, high = high, high * 2
        if high > 1e6 * sensitivity:
            raise ConfigurationError(f"No noise multiplier reaches epsilon {target_epsilon}.")
    while high - low > 1e-3 * high:
        middle = (low + high) / 2
        low, high = (middle, high) if spent(middle) > target_epsilon else (low, middle)
    return high
