"""Say, before training, when the DP noise will drown what the clients can send.

A round releases the sum of n clipped updates, each of L2 norm at most C, plus
Gaussian noise N(0, (z C)^2 I) in d dimensions. The signal's norm is at most n C
(all updates aligned); the noise's norm is about z C sqrt(d). Their ratio

    r = z sqrt(d) / n

does not depend on C. Above :data:`DROWNING_RATIO` the noise dominates so much that
training stalls near chance. The limit is set from veilfl's own MNIST measurements
(``docs/results/privacy_utility.json``, simple CNN, d = 21,840, 30 rounds): at 100
clients per round, r = 0.74, 1.48 and 2.96 (z = 0.5, 1, 2) all train to 91-93%,
within 3.5 points of the same run without DP; at 10 clients per round, r = 7.4
(z = 0.5) falls to 50% and r = 14.8 (z = 1) to 13%, near chance. 4 sits between the
last setting that works and the first that does not, with a margin on the side of
warning.
"""

from __future__ import annotations

import math

from veilfl.errors import ConfigurationError

__all__ = ["DROWNING_RATIO", "noise_to_signal", "noise_warning"]

DROWNING_RATIO = 4.0
"""The noise-to-signal ratio z sqrt(d) / n above which :func:`noise_warning` warns."""


def noise_to_signal(*, model_size: int, clients_per_round: float, noise_multiplier: float) -> float:
    """The ratio z sqrt(d) / n of the noise's norm to the most n clipped updates carry.

    Raises:
        ConfigurationError: for a non-positive size or cohort, or a negative z.
    """
    if model_size < 1 or not clients_per_round > 0 or noise_multiplier < 0:
        raise ConfigurationError(
            "The model size and clients per round must be positive and the noise "
            "multiplier non-negative."
        )
    return noise_multiplier * math.sqrt(model_size) / clients_per_round


def noise_warning(
    *,
    model_size: int,
    clients_per_round: float,
    noise_multiplier: float,
    clip_norm: float,
    limit: float = DROWNING_RATIO,
) -> str | None:
    """A one-line warning when the per-round noise swamps the signal, else None.

    Args:
        model_size: d, the number of trained parameters.
        clients_per_round: n, the expected clients per round (the fixed denominator).
        noise_multiplier: z actually added per round (z_delta under adaptive clipping).
        clip_norm: C (only for the numbers in the message: the ratio does not depend
            on it).
        limit: The ratio above which to warn.

    Returns:
        A sentence with the noise norm, the signal bound, their ratio and what to
        change, or None when the ratio is at most ``limit``.

    Raises:
        ConfigurationError: for non-positive sizes, cohort or clipping norm.
    """
    if not clip_norm > 0:
        raise ConfigurationError("The clipping norm must be positive.")
    ratio = noise_to_signal(
        model_size=model_size,
        clients_per_round=clients_per_round,
        noise_multiplier=noise_multiplier,
    )
    if ratio <= limit:
        return None
    noise_norm = noise_multiplier * clip_norm * math.sqrt(model_size)
    needed = math.ceil(noise_multiplier * math.sqrt(model_size) / limit)
    return (
        f"DP noise will likely drown the signal: each round adds noise of norm about "
        f"{noise_norm:.4g} (z {noise_multiplier:.3g} x C {clip_norm:.3g} x sqrt(d) with d = "
        f"{model_size:,}), while {clients_per_round:g} clipped updates carry at most "
        f"{clients_per_round * clip_norm:.4g} (ratio {ratio:.1f}, above {limit:g}); sample at "
        f"least {needed:,} clients per round (from a larger population, so that q and epsilon "
        f"stay put), lower the noise multiplier (a larger epsilon), or train a smaller model."
    )
