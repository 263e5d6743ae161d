"""Client-level DP-FedAvg around an aggregation backend (McMahan et al. 2018).

Wraps the plaintext or the secure backend. Each round it tells clients how to clip
(and, for local noise, how much noise to add), adds central noise to the aggregate
when that is the placement (under distributed placement the aggregators have already
dealt the noise into the released sum, :mod:`veilfl.secagg.dealt_noise`, and clients
add none), divides by the expected number of clients
(the fixed-denominator estimator), adapts the clipping norm from the noised sum of
the clients' +-1/2 unclipped bits (Andrew et al. 2021), records the release in the
privacy ledger and reports epsilon against the public and against the coordinator
(:mod:`veilfl.privacy.report`). Once another release would exceed the target epsilon
(against the public), it says the run cannot continue.

Its state after each release (:class:`~veilfl.privacy.run_state.DpRunState`: the
ledger, the clipping norm, the sampling attempts) is what a restarted coordinator
passes back; how often each client took part is passed back as counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace

from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import ConfigurationError, PrivacyError
from veilfl.privacy.clipping import unclipped_fraction
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan, DpConfig
from veilfl.privacy.ledger import PrivacyLedger
from veilfl.privacy.noise import gaussian
from veilfl.privacy.report import PrivacyReport, dp_fedavg_report
from veilfl.privacy.run_state import DpRunState
from veilfl.privacy.sampling import PoissonSampler
from veilfl.protocol.aggregation import AggregationBackend, AggregationJob, PlaintextAggregation
from veilfl.protocol.cohort import ClosedCohort
from veilfl.protocol.effects import Effect, Event
from veilfl.protocol.messages import UpdateHeader
from veilfl.protocol.secure_aggregation import SecureAggregation
from veilfl.strategy.aggregate import Aggregate

__all__ = ["PrivateAggregation", "PrivateJob", "require_one_round"]


def require_one_round(config: DpConfig, *, fits: bool) -> None:
    """Refuse a fresh DP run whose first round would already overspend its target.

    Raises:
        ConfigurationError: unless ``fits`` (one round stays within the target).
    """
    if not fits:
        raise ConfigurationError(
            f"One round already spends more than the target epsilon "
            f"{config.target_epsilon}; raise the noise multiplier or the target."
        )


class PrivateAggregation:
    """DP-FedAvg: clipping, noise, fixed denominator, accounting and the report.

    Args:
        inner: The backend that sums the (clipped) updates.
        config: The DP settings.
        expected_clients: Clients expected per round (the fixed denominator).
        sample_rate: q, the chance a given client is sampled in a round.
        sampler: The rounds' secret Poisson sampler, when clients are sampled that way
            (synchronous rounds). Without one the sample may be known (a buffer fills
            with whoever comes), so the public gets no amplification: the ledger
            records each release at q = 1 and the public gets the coordinator's epsilon.
        rng: Noise source (default: keyed from ``os.urandom``).
        state: The privacy state after the last release (a resumed coordinator).
        participations: How many released rounds each client took part in (a resumed
            coordinator; the run store's participant lists).
        rounds_released: For a resumed run whose store kept no privacy state: rounds
            released so far (never the last round id). Ignored when ``state`` is given.

    Raises:
        ConfigurationError: for distributed noise without secure aggregation whose
            aggregators deal the noise, or a budget too small for even one round.
    """

    def __init__(
        self,
        inner: AggregationBackend,
        config: DpConfig,
        *,
        expected_clients: float,
        sample_rate: float,
        sampler: PoissonSampler | None = None,
        rng: CsprngStream | None = None,
        state: DpRunState | None = None,
        participations: Mapping[str, int] | None = None,
        rounds_released: int = 0,
    ) -> None:
        self._plaintext = inner.plaintext() is not None
        if self._plaintext and config.placement == "distributed":
            raise ConfigurationError(
                "Distributed noise needs secure aggregation: the aggregators deal it into "
                "every secure sum, and without them nothing would add it."
            )
        if config.placement == "distributed" and not (
            isinstance(inner, SecureAggregation) and inner.dealt_noise
        ):
            raise ConfigurationError(
                "Distributed noise is dealt by the aggregators: build the secure backend "
                "with dealt_noise=True, or the released sums would carry no noise."
            )
        if expected_clients <= 0:
            raise ConfigurationError("The expected number of clients must be positive.")
        self._inner = inner
        self._config = config
        self._expected = expected_clients
        self._sampler = sampler
        self._rate = sample_rate if sampler is not None else 1.0
        self._rng = rng or CsprngStream()
        if state is None:
            state = DpRunState(
                ledger=PrivacyLedger.from_released_rounds(
                    rounds_released,
                    noise_multiplier=config.noise_multiplier,
                    sample_rate=self._rate,
                ),
                clip_norm=config.clip_norm,
            )
        self._ledger = state.ledger
        self._clip_norm = state.clip_norm
        self._participations: Counter[str] = Counter(participations or {})
        self._report = self._report_for(self._ledger, self._max_participations())
        if self._ledger.rounds == 0:
            require_one_round(config, fits=self.can_continue())

    @property
    def config(self) -> DpConfig:
        """The DP settings."""
        return self._config

    @property
    def clip_norm(self) -> float:
        """This round's clipping norm."""
        return self._clip_norm

    @property
    def ledger(self) -> PrivacyLedger:
        """The released rounds (q = 1 where the sample may be known)."""
        return self._ledger

    @property
    def expected_clients(self) -> float:
        """The fixed denominator."""
        return self._expected

    @property
    def secret_sampling(self) -> bool:
        """Whether clients are Poisson-sampled with coins the public never sees."""
        return self._sampler is not None

    def report(self) -> PrivacyReport:
        """Epsilon against each observer after the releases so far."""
        return self._report

    def state(self) -> DpRunState:
        """What a restarted coordinator needs to continue exactly (see the module
        docstring)."""
        sampler = self._sampler
        return DpRunState(
            ledger=self._ledger,
            clip_norm=self._clip_norm,
            sampling_attempts=0 if sampler is None else sampler.attempts,
            withheld_probability=0.0 if sampler is None else sampler.withheld_probability,
        )

    def open_cohort(self, round_id: int) -> None:
        """Start the inner backend's round (clipping on arrival when plaintext central)."""
        self._inner.open_cohort(round_id)
        plaintext = self._inner.plaintext()
        if plaintext is not None:
            central = self._config.placement == "central"
            plaintext.clip_on_arrival(self._clip_norm if central else None)

    def begin(self, cohort: ClosedCohort) -> PrivateJob:
        """Aggregate with the inner backend, then noise, denominator and accounting."""
        return PrivateJob(self._inner.begin(cohort), self.privatize)

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
        """Whether one more release keeps the public epsilon within the budget (for a
        known sample: if the most frequent participant takes part again)."""
        target = self._config.target_epsilon
        if target is None:
            return True
        ledger = self._ledger.record(
            noise_multiplier=self._config.noise_multiplier, sample_rate=self._rate
        )
        projected = self._report_for(ledger, self._max_participations() + 1)
        return projected.epsilon_public <= target * (1 + 1e-9)

    def plaintext(self) -> PlaintextAggregation | None:
        """The inner backend's plaintext entry point, if any."""
        return self._inner.plaintext()

    def privatize(self, inner: Aggregate) -> Aggregate:
        """Noise (if central), fixed denominator, adaptive clipping and accounting, once
        per released aggregate.

        Raises:
            PrivacyError: if the release would exceed the budget (the coordinator
                asks :meth:`can_continue` before every round, so only a bug gets here).
        """
        if not self.can_continue():
            raise PrivacyError(
                f"Releasing round {self._ledger.rounds + 1} would spend more than epsilon "
                f"{self._config.target_epsilon}; training stops here."
            )
        total = inner.weighted_delta_sum.copy()
        bit_sum = inner.within_bound_count
        if self._config.placement == "central":
            z_update = self._config.update_noise_multiplier(self._expected)
            total += gaussian(self._rng, sigma=z_update * self._clip_norm, count=total.size)
            if bit_sum is not None and self._config.adaptive is not None:
                sigma_b = self._config.count_noise(self._expected)
                bit_sum += float(gaussian(self._rng, sigma=sigma_b, count=1)[0])
        self._ledger = self._ledger.record(
            noise_multiplier=self._config.noise_multiplier, sample_rate=self._rate
        )
        self._participations.update(set(inner.participants))
        self._report = self._report_for(self._ledger, self._max_participations())
        if self._config.adaptive is not None and bit_sum is not None:
            fraction = unclipped_fraction(bit_sum, expected_clients=self._expected)
            self._clip_norm = self._config.adaptive.next_clip_norm(
                self._clip_norm, unclipped_fraction=fraction
            )
        return replace(
            inner,
            weighted_delta_sum=total,
            total_weight=self._expected,
            mean_loss=inner.mean_loss if self._plaintext else None,
            evaluation=inner.evaluation if self._plaintext else None,
            within_bound_count=bit_sum,
            epsilon=self._report.epsilon_public,
        )

    def _max_participations(self) -> int:
        return max(self._participations.values(), default=0)

    def _report_for(self, ledger: PrivacyLedger, participations: int) -> PrivacyReport:
        sampler = self._sampler
        return dp_fedavg_report(
            placement=self._config.placement,
            ledger=ledger,
            delta=self._config.delta,
            accounting=self._config.accounting,
            max_participations=min(participations, ledger.rounds),
            secret_poisson_sampling=sampler is not None,
            secure_aggregation=not self._plaintext,
            withheld_probability=0.0 if sampler is None else sampler.withheld_probability,
        )


class PrivateJob:
    """The inner backend's job, whose aggregate goes through ``release`` (the private
    backend's noise and accounting) once it is ready, exactly once."""

    def __init__(self, inner: AggregationJob, release: Callable[[Aggregate], Aggregate]) -> None:
        self._inner = inner
        self._release = release
        self._result: Aggregate | None = None

    @property
    def round_id(self) -> int:
        """The round."""
        return self._inner.round_id

    @property
    def result(self) -> Aggregate | None:
        """The privatized aggregate, once the inner job is done."""
        if self._result is None and self._inner.result is not None:
            self._result = self._release(self._inner.result)
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
