"""What a run's epsilon means: one number per observer, with its assumptions.

Two observers see different things, so they get different epsilons:

* **The public**: anyone who sees the released models (clients, whoever downloads
  the model, the aggregators' eventual output). If clients are sampled by Poisson
  sampling with coins from a CSPRNG that this observer never sees
  (:func:`~veilfl.privacy.sampling.poisson_sample`), amplification by sampling
  applies and epsilon is the sampled Gaussian composition of the ledger. Otherwise
  (a fixed-size sample, a sample drawn from a public seed) this observer may know
  the sample and gets the coordinator's number.
* **The coordinator**, which chooses the sample and so knows who took part: no
  amplification. Epsilon is the composition of unsampled Gaussian mechanisms over
  the rounds the protected client took part in, for the client that took part
  most. Under central noise the coordinator sums the updates before adding noise,
  so no finite epsilon holds against it.

Adjacency. Local noise is added by each client, so the total noise grows with the
number of contributions and reveals how many clients took part. Distributed noise is
dealt by the aggregators, whatever the number of contributions, but the aggregators
and the coordinator see who took part. Both modes therefore state epsilon for
*zero-out* adjacency (the protected client's update replaced by zero, Kairouz et al.
2021, Definition 1.1): what a client contributed is protected, whether it took part
is not hidden beyond what sampling hides. Against the coordinator, which knows who
took part, zero-out is the only meaningful adjacency in every mode. Central noise is
independent of the number of contributions and is stated for add/remove adjacency,
with the chance that a withheld round depends on the protected client added to delta
(:func:`~veilfl.privacy.sampling.withheld_release_probability`).

Everything here is a pure function of the ledger and the run's settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from veilfl.errors import ConfigurationError
from veilfl.privacy.accountant import Accounting, Adjacency, epsilon_of
from veilfl.privacy.dp_config import NoisePlacement
from veilfl.privacy.ledger import PrivacyLedger

__all__ = ["PrivacyReport", "coordinator_ledger", "dp_fedavg_report"]


@dataclass(frozen=True)
class PrivacyReport:
    """Epsilon against each observer, and what it rests on.

    Attributes:
        mechanism: What was run, in words (``"DP-FedAvg, distributed noise"``).
        accounting: ``"rdp"`` or ``"pld"``.
        delta: The delta both epsilons hold at (the run's delta plus any term for
            withheld rounds, see :mod:`veilfl.privacy.sampling`).
        epsilon_public: Against anyone who sees the released models.
        epsilon_coordinator: Against the coordinator; None when no finite epsilon
            holds against it (it sees a noiseless sum).
        adjacency: The neighbouring relation the public epsilon is stated for.
        assumptions: Short sentences a user must accept for the numbers to hold.
    """

    mechanism: str
    accounting: Accounting
    delta: float
    epsilon_public: float
    epsilon_coordinator: float | None
    adjacency: Adjacency
    assumptions: tuple[str, ...]

    def summary(self) -> str:
        """One line for a log or the round table's footer."""
        against_coordinator = (
            "none against the coordinator (it sees the noiseless sum)"
            if self.epsilon_coordinator is None
            else f"{self.epsilon_coordinator:.3f} against the coordinator"
        )
        return (
            f"epsilon {self.epsilon_public:.3f} against the public, {against_coordinator} "
            f"(delta {self.delta:.3g}, {self.accounting.upper()}, {self.adjacency}; "
            f"{self.mechanism})"
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``epsilon_coordinator`` null when there is none)."""
        return {
            "mechanism": self.mechanism,
            "accounting": self.accounting,
            "delta": self.delta,
            "epsilon_public": self.epsilon_public,
            "epsilon_coordinator": self.epsilon_coordinator,
            "adjacency": self.adjacency,
            "assumptions": list(self.assumptions),
        }


def coordinator_ledger(ledger: PrivacyLedger, *, max_participations: int) -> PrivacyLedger:
    """The ledger the coordinator's epsilon is computed from: ``max_participations``
    unsampled rounds at the smallest noise multiplier released.

    Whoever knows the sample gets no amplification: a client is protected only by
    the noise of the rounds it took part in. With one z for the whole run this is
    exact; with several it charges the smallest, an upper bound.

    Raises:
        ConfigurationError: if ``max_participations`` is negative or exceeds the
            released rounds.
    """
    if not 0 <= max_participations <= ledger.rounds:
        raise ConfigurationError(
            f"A client cannot have taken part in {max_participations} of {ledger.rounds} "
            "released rounds."
        )
    if max_participations == 0:
        return PrivacyLedger()
    smallest = min(entry.noise_multiplier for entry in ledger.entries)
    return PrivacyLedger.from_released_rounds(
        max_participations, noise_multiplier=smallest, sample_rate=1.0
    )


def dp_fedavg_report(
    *,
    placement: NoisePlacement,
    ledger: PrivacyLedger,
    delta: float,
    accounting: Accounting,
    max_participations: int,
    secret_poisson_sampling: bool,
    secure_aggregation: bool,
    withheld_probability: float = 0.0,
) -> PrivacyReport:
    """The privacy report of a DP-FedAvg run.

    Args:
        placement: Where the noise is added.
        ledger: The released rounds (z and the sampling rate q of each).
        delta: The run's delta.
        accounting: ``"rdp"`` or ``"pld"``.
        max_participations: Released rounds that the most frequent participant took
            part in (the coordinator counts them).
        secret_poisson_sampling: Whether clients were sampled by
            :func:`~veilfl.privacy.sampling.poisson_sample` with a CSPRNG the public
            never sees. If not, the public may know the sample and gets the
            coordinator's epsilon (unsampled, over ``max_participations`` rounds).
        secure_aggregation: Whether updates were summed under secure aggregation.
        withheld_probability: From
            :func:`~veilfl.privacy.sampling.withheld_release_probability`; used for
            add/remove adjacency (central noise), where it is added to delta times
            e^epsilon.

    Raises:
        ConfigurationError: for distributed noise without secure aggregation, or
            inconsistent counts.
    """
    if placement == "distributed" and not secure_aggregation:
        raise ConfigurationError(
            "Distributed noise needs secure aggregation: without it the coordinator sees "
            "each update without noise (the aggregators deal distributed noise)."
        )
    if not 0 <= withheld_probability <= 1:
        raise ConfigurationError("withheld_probability must be a probability.")
    known_sample = coordinator_ledger(ledger, max_participations=max_participations)
    adjacency: Adjacency = "add-remove" if placement == "central" else "zero-out"
    public_ledger = ledger if secret_poisson_sampling else known_sample
    epsilon_public = epsilon_of(
        public_ledger, delta=delta, accounting=accounting, adjacency=adjacency
    )
    reported_delta = delta
    if adjacency == "add-remove" and withheld_probability > 0:
        # e^eps * p, in logs: a large epsilon must not overflow (the sum is capped at 1).
        log_term = epsilon_public + math.log(withheld_probability)
        reported_delta = 1.0 if log_term >= 0 else min(delta + math.exp(log_term), 1.0)
    epsilon_coordinator = (
        None
        if placement == "central"
        else epsilon_of(known_sample, delta=delta, accounting=accounting, adjacency="zero-out")
    )
    return PrivacyReport(
        mechanism=f"DP-FedAvg, {placement} noise"
        + (", secure aggregation" if secure_aggregation else ""),
        accounting=accounting,
        delta=reported_delta,
        epsilon_public=epsilon_public,
        epsilon_coordinator=epsilon_coordinator,
        adjacency=adjacency,
        assumptions=_assumptions(
            placement,
            secret_poisson_sampling=secret_poisson_sampling,
            secure_aggregation=secure_aggregation,
            withheld_probability=withheld_probability,
        ),
    )


def _assumptions(
    placement: NoisePlacement,
    *,
    secret_poisson_sampling: bool,
    secure_aggregation: bool,
    withheld_probability: float,
) -> tuple[str, ...]:
    said = ["Each client's update is clipped to L2 norm C and weighs the same."]
    if secret_poisson_sampling and placement == "central":
        said.append(
            "Public epsilon: clients are Poisson-sampled with CSPRNG coins the public never "
            "sees, and the number of participants per round is not published (the "
            "coordinator's /v1/metrics and /v1/status show it: keep them from the public)."
        )
    elif secret_poisson_sampling:
        said.append(
            "Public epsilon: clients are Poisson-sampled with CSPRNG coins the public never "
            "sees (under zero-out adjacency the number of participants reveals nothing of "
            "what the protected client sent)."
        )
    else:
        said.append(
            "Public epsilon: the sample may be known to the public (fixed-size or seeded), "
            "so it gets no amplification by sampling."
        )
    if placement == "central":
        said.append(
            "The coordinator sees the noiseless sum"
            + ("" if secure_aggregation else " and every update")
            + ": there is no guarantee against it; trust it."
        )
        if withheld_probability > 0:
            said.append(
                "Rounds withheld for a sample too small to release: their chance of "
                "depending on one client is added to delta; sampled clients are assumed to "
                "report (dropouts that leave a round short are not in that term)."
            )
    elif placement == "distributed":
        said.append(
            "Coordinator epsilon: fewer than t aggregators collude with it, and clients "
            "other than the protected one keep their noise secret; a release over fewer "
            "than --dp-min-clients contributions is withheld."
        )
        said.append("Zero-out adjacency: the noise protects what a client sent, not that it sent.")
    else:
        said.append(
            "Each client adds the full noise to its own update, which protects it against "
            "everyone, the coordinator included."
        )
        said.append("Zero-out adjacency: the noise protects what a client sent, not that it sent.")
    said.append(
        "Noise comes from AES-256-CTR keyed by os.urandom, with floating-point samplers "
        "(not constant-time)."
    )
    return tuple(said)
