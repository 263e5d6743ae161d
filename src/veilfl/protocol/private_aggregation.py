"""Client-level DP-FedAvg around an aggregation backend (McMahan et al. 2018).

Wraps the plaintext or the secure backend. Each round it tells clients how to clip
(and, for local or distributed noise, how much noise to add), adds central noise to
the aggregate when that is the placement, divides by the expected number of clients
(the fixed-denominator estimator), adapts the clipping norm (Andrew et al. 2021)
and charges the accountant. Once another round would exceed the target epsilon, it
says the run cannot continue.
"""

from __future__ import annotations

from dataclasses import replace

from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import ConfigurationError
from veilfl.privacy.accountant import ClientLevelAccountant
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan, DpConfig
from veilfl.privacy.noise import gaussian
from veilfl.protocol.aggregation import AggregationBackend, AggregationJob, PlaintextAggregation
from veilfl.protocol.cohort import ClosedCohort
from veilfl.protocol.effects import Effect, Event
from veilfl.protocol.messages import UpdateHeader
from veilfl.strategy.aggregate import Aggregate

__all__ = ["PrivateAggregation", "PrivateJob"]


class PrivateAggregation:
    """DP-FedAvg: clipping, noise, fixed denominator, accounting.

    Args:
        inner: The backend that sums the (clipped) updates.
        config: The DP settings.
        expected_clients: Clients expected per round (the fixed denominator).
        sample_rate: q, the chance a given client is sampled in a round.
        rng: Noise source (default: keyed from ``os.urandom``).
        rounds_released: Rounds already released in this run (a resumed coordinator).

    Raises:
        ConfigurationError: for distributed noise without secure aggregation, or a
            budget too small for even one round.
    """

    def __init__(
        self,
        inner: AggregationBackend,
        config: DpConfig,
        *,
        expected_clients: float,
        sample_rate: float,
        rng: CsprngStream | None = None,
        rounds_released: int = 0,
    ) -> None:
        self._plaintext = inner.plaintext() is not None
        if self._plaintext and config.placement == "distributed":
            raise ConfigurationError(
                "Distributed noise needs secure aggregation: without it the coordinator "
                "sees each client's update with only a fraction of the noise."
            )
        if expected_clients <= 0:
            raise ConfigurationError("The expected number of clients must be positive.")
        self._inner = inner
        self._config = config
        self._expected = expected_clients
        self._clip_norm = config.clip_norm
        self._rng = rng or CsprngStream()
        self._accountant = ClientLevelAccountant(
            noise_multiplier=config.noise_multiplier,
            sample_rate=sample_rate,
            delta=config.delta,
            target_epsilon=config.target_epsilon,
            rounds=rounds_released,
        )
        if rounds_released == 0 and not self._accountant.can_release():
            raise ConfigurationError(
                f"One round already spends more than the target epsilon "
                f"{config.target_epsilon}; raise the noise multiplier or the target."
            )

    @property
    def clip_norm(self) -> float:
        """This round's clipping norm."""
        return self._clip_norm

    @property
    def accountant(self) -> ClientLevelAccountant:
        """The privacy accountant."""
        return self._accountant

    @property
    def expected_clients(self) -> float:
        """The fixed denominator."""
        return self._expected

    def open_cohort(self, round_id: int) -> None:
        """Start the inner backend's round (clipping on arrival when plaintext central)."""
        self._inner.open_cohort(round_id)
        plaintext = self._inner.plaintext()
        if plaintext is not None:
            central = self._config.placement == "central"
            plaintext.clip_on_arrival(self._clip_norm if central else None)

    def begin(self, cohort: ClosedCohort) -> PrivateJob:
        """Aggregate with the inner backend, then noise, denominator and accounting."""
        return PrivateJob(self._inner.begin(cohort), self)

    def check_receipt(self, header: UpdateHeader) -> None:
        """As the inner backend."""
        self._inner.check_receipt(header)

    def client_privacy(self) -> ClientPrivacyPlan | None:
        """Clipping and noise for clients (none for central noise over plaintext, where
        the trusted coordinator clips)."""
        if self._plaintext and self._config.placement == "central":
            return None
        return ClientPrivacyPlan.for_round(
            self._config, clip_norm=self._clip_norm, expected_clients=self._expected
        )

    def can_continue(self) -> bool:
        """Whether one more round fits in the budget."""
        return self._accountant.can_release()

    def plaintext(self) -> PlaintextAggregation | None:
        """The inner backend's plaintext entry point, if any."""
        return self._inner.plaintext()

    def privatize(self, inner: Aggregate) -> Aggregate:
        """Noise (if central), fixed denominator, adaptive clipping and accounting, once
        per released aggregate."""
        total = inner.weighted_delta_sum.copy()
        within_bound = inner.within_bound_count
        if self._config.placement == "central":
            z_update = self._config.update_noise_multiplier(self._expected)
            total += gaussian(self._rng, sigma=z_update * self._clip_norm, count=total.size)
            if within_bound is not None and self._config.adaptive is not None:
                sigma_b = self._config.count_noise(self._expected)
                within_bound += float(gaussian(self._rng, sigma=sigma_b, count=1)[0])
        epsilon = self._accountant.record_round()
        if self._config.adaptive is not None and within_bound is not None:
            fraction = min(max(within_bound / self._expected, 0.0), 1.0)
            self._clip_norm = self._config.adaptive.next_clip_norm(
                self._clip_norm, unclipped_fraction=fraction
            )
        return replace(
            inner,
            weighted_delta_sum=total,
            total_weight=self._expected,
            mean_loss=inner.mean_loss if self._plaintext else None,
            within_bound_count=within_bound,
            epsilon=epsilon,
        )


class PrivateJob:
    """The inner backend's job, whose aggregate is privatized once it is ready."""

    def __init__(self, inner: AggregationJob, backend: PrivateAggregation) -> None:
        self._inner = inner
        self._backend = backend
        self._result: Aggregate | None = None

    @property
    def round_id(self) -> int:
        """The round."""
        return self._inner.round_id

    @property
    def result(self) -> Aggregate | None:
        """The privatized aggregate, once the inner job is done."""
        if self._result is None and self._inner.result is not None:
            self._result = self._backend.privatize(self._inner.result)
        return self._result

    def drain(self) -> list[Effect]:
        """The inner job's effects."""
        return self._inner.drain()

    def handle(self, event: Event) -> None:
        """As the inner job."""
        self._inner.handle(event)

    def tick(self, *, now: float) -> None:
        """As the inner job."""
        self._inner.tick(now=now)

    def status(self) -> str:
        """As the inner job."""
        return self._inner.status()
