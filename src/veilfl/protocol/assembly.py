"""One assembly of a run: settings in, coordinator core out, for every path.

``veilfl server``, ``veilfl simulate`` and the asynchronous simulator all call
:func:`build_coordinator`, so the same settings give the same sampling rate, the same
minimum cohort, the same aggregation rules, the same privacy report and the same
epsilon wherever they run. :func:`check_run_settings`, :func:`privacy_warning` and
:func:`privacy_advice` are the start-up checks every path runs before training.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import ConfigurationError, StorageError
from veilfl.privacy.noise_advisor import NoiseAdvice, advise_cohort
from veilfl.privacy.participation import ParticipationLimits
from veilfl.privacy.run_state import DpRunState
from veilfl.privacy.sampling import PoissonSampler
from veilfl.privacy.utility import noise_warning
from veilfl.privacy.validation import check_dp_settings
from veilfl.protocol.aggregation import AggregationBackend, PlaintextAggregation
from veilfl.protocol.buffered import BufferedMachine, BufferMode
from veilfl.protocol.coordinator import Coordinator, Schedule
from veilfl.protocol.private_aggregation import PrivateAggregation
from veilfl.protocol.private_backend import PrivacyBackend
from veilfl.protocol.private_ftrl import FtrlAggregation
from veilfl.protocol.run_spec import RunSpec
from veilfl.protocol.secure_aggregation import SecureAggregation
from veilfl.protocol.sync_round import SyncRoundMachine
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout
from veilfl.secagg.dealt_noise import dealt_noise_config
from veilfl.strategy.base import ServerStrategy, StatefulStrategy
from veilfl.strategy.buffered import FedAsync, FedBuff
from veilfl.strategy.fedavg import FedAvg
from veilfl.strategy.momentum import ServerSgd
from veilfl.tensors import Weights, spec_of

__all__ = [
    "AssembledRun",
    "CohortPlan",
    "PrivacyBackend",
    "ResumePoint",
    "build_coordinator",
    "check_run_settings",
    "cohort_plan",
    "precision_warning",
    "privacy_advice",
    "privacy_warning",
]


@dataclass(frozen=True)
class ResumePoint:
    """Where a resumed run picks up.

    Attributes:
        next_round: The next round (or buffer) id: one more than the last released one.
        model_version: The last released model version.
        releases: How many rounds or buffers were released (what the accountant charges
            when no privacy state was kept).
        privacy: Under DP, the privacy state recorded with the last released round.
        participations: Under DP, how many released rounds each client took part in.
        last_steps: Under DP-FTRL, the last released round (counted from 1) each
            client took part in.
        strategy_state: The server strategy's state saved with the last released round
            (adaptive server optimisers), or None.
    """

    next_round: int
    model_version: int
    releases: int
    strategy_state: bytes | None = None
    privacy: DpRunState | None = None
    participations: Mapping[str, int] = field(default_factory=dict)
    last_steps: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class CohortPlan:
    """How large a released cohort is, as privacy accounting and aggregation see it.

    Attributes:
        population: Clients the run draws from.
        expected: Clients expected per release (the DP fixed denominator).
        minimum: The fewest clients a release may sum over (under DP, also at least
            the noise contributions a release needs).
        sample_rate: q = expected / population.
        secret_sampling: Whether clients are Poisson-sampled with secret coins (DP in
            synchronous rounds), so that amplification by sampling holds against the
            public.
    """

    population: int
    expected: int
    minimum: int
    sample_rate: float
    secret_sampling: bool = False

    @property
    def charged_sample_rate(self) -> float:
        """The q the ledger charges: the sampling rate under secret Poisson sampling,
        else 1 (the sample may be known)."""
        return self.sample_rate if self.secret_sampling else 1.0


def cohort_plan(settings: RunSpec) -> CohortPlan:
    """The cohort sizes that ``settings`` imply (the same on every path)."""
    population = settings.expected_population
    if settings.buffer is None:
        expected = settings.rounds.sample_size(population)
        minimum = settings.rounds.min_clients
    else:
        expected = min(settings.buffer.buffer_size, population)
        minimum = settings.buffer.buffer_size
    if settings.dp is not None:
        minimum = max(minimum, settings.dp.min_contributions)
    return CohortPlan(
        population=population,
        expected=expected,
        minimum=minimum,
        sample_rate=min(1.0, expected / population),
        secret_sampling=(
            settings.dp is not None
            and settings.dp.privacy_mechanism.samples_clients
            and settings.buffer is None
        ),
    )


def check_run_settings(settings: RunSpec, *, secure: bool | None = None) -> None:
    """Refuse settings under which a release could carry less noise than is charged
    (:func:`~veilfl.privacy.validation.check_dp_settings`), in one line naming the
    flags. Nothing to check without DP.

    Args:
        settings: The run's settings.
        secure: Whether updates are summed under secure aggregation (default: whether
            ``settings`` name aggregators; a simulator that starts its own says so).

    Raises:
        ConfigurationError: naming the contradicting flags and their values.
    """
    if settings.dp is None:
        return
    rounds = settings.rounds
    buffered = settings.buffer is not None
    check_dp_settings(
        dp=settings.dp,
        min_clients=rounds.min_clients,
        clients_per_round=None if buffered else rounds.clients_per_round,
        fraction=None if buffered else rounds.fraction,
        population=settings.expected_population,
        buffer_size=None if settings.buffer is None else settings.buffer.buffer_size,
        secure_aggregation=settings.secure is not None if secure is None else secure,
    )
    cohort = cohort_plan(settings)
    settings.dp.privacy_mechanism.check_run(
        settings.dp,
        rounds=settings.num_releases,
        expected_clients=cohort.expected,
        population=cohort.population,
        buffered=buffered,
        server_optimizer=(
            None if settings.server_optimizer is None else settings.server_optimizer.name
        ),
    )


def privacy_warning(settings: RunSpec, *, model_size: int) -> str | None:
    """The warning to print before training when the DP noise will drown the signal
    (:func:`~veilfl.privacy.utility.noise_warning`), or None.

    The noise is what a release actually carries at the expected cohort: the update
    noise multiplier left after adaptive clipping's count (under distributed placement
    the aggregators deal it, whatever the cohort: :mod:`veilfl.secagg.dealt_noise`).
    """
    dp = settings.dp
    if dp is None:
        return None
    expected = cohort_plan(settings).expected
    z = dp.update_noise_multiplier(expected)
    clip_norm = dp.clip_norm
    if dp.placement == "distributed" and settings.secure is not None:
        # The aggregators calibrate to the verified bound, at least C in model units.
        layout = ContributionLayout(model_size, settings.secure.config)
        clip_norm = max(clip_norm, layout.bounds.norm_bound / layout.scale)
    return noise_warning(
        model_size=model_size,
        clients_per_round=expected,
        noise_multiplier=z,
        clip_norm=clip_norm,
    )


def privacy_advice(settings: RunSpec, *, model_size: int) -> NoiseAdvice | None:
    """The noise advisor's verdict to print before training
    (:func:`~veilfl.privacy.noise_advisor.advise_cohort`): the noise-to-signal ratio of
    the run's mechanism at its expected cohort, with its noise's equivalent per-round
    multiplier, and the smallest cohort from the same population under the threshold.
    None without DP and for buffered runs (whose cohort is the buffer, not a sample).
    """
    dp = settings.dp
    if dp is None or settings.buffer is not None:
        return None
    cohort = cohort_plan(settings)
    return advise_cohort(
        dp.privacy_mechanism,
        dp,
        model_size=model_size,
        population=cohort.population,
        clients_per_round=max(1, min(round(cohort.expected), cohort.population)),
        rounds=settings.num_releases,
        # As :func:`veilfl.cli.run_options.run_spec_from_args` derives z: q = n / N.
        secret_sampling=True,
    )


def precision_warning(secure: SecureAggregationConfig | None, *, model_size: int) -> str | None:
    """The warning to print before training when secure aggregation's fixed-point
    rounding adds noise of more than half the norm bound to each contribution
    (:meth:`~veilfl.secagg.contribution.ContributionLayout.precision_warning`), or None
    (also without secure aggregation)."""
    if secure is None:
        return None
    return ContributionLayout(model_size, secure).precision_warning()


@dataclass(frozen=True)
class AssembledRun:
    """A coordinator core with the figures it was built from.

    Attributes:
        coordinator: The core.
        cohort: Cohort sizes and the sampling rate.
        privacy: Under DP, the private backend (its report and state).
    """

    coordinator: Coordinator
    cohort: CohortPlan
    privacy: PrivacyBackend | None = None


def _strategy(settings: RunSpec) -> ServerStrategy:
    schedule = settings.server_lr_schedule.build(total_steps=settings.num_releases)
    if settings.server_optimizer is not None:
        return settings.server_optimizer.build(
            server_learning_rate=settings.server_learning_rate, schedule=schedule
        )
    if settings.buffer is not None and settings.buffer.mode is BufferMode.FEDASYNC:
        return FedAsync(mixing=settings.fedasync_mixing)
    inner = (
        FedAvg(server_learning_rate=settings.server_learning_rate)
        if settings.buffer is None
        else FedBuff(server_learning_rate=settings.server_learning_rate)
    )
    if settings.server_momentum == 0 and schedule.is_constant:
        return inner  # stateless: nothing to persist
    return ServerSgd(
        inner,
        momentum=settings.server_momentum,
        nesterov=settings.server_nesterov,
        schedule=schedule,
    )


def build_coordinator(
    settings: RunSpec,
    *,
    initial_weights: Weights,
    run_id: str,
    resume: ResumePoint | None = None,
    noise_rng: CsprngStream | None = None,
    retry_interval_s: float = 1.0,
    sampling_rng: CsprngStream | None = None,
) -> AssembledRun:
    """The coordinator core for ``settings``, new or resumed.

    Args:
        settings: The run's settings.
        initial_weights: The global model to start from (the last released one, when
            resuming).
        run_id: The run's id (bound into the aggregators' commitments).
        resume: Where a resumed run picks up; None for a new run.
        noise_rng: The DP noise source (default: keyed from the OS).
        retry_interval_s: How long stalled secure aggregation waits before asking again.
        sampling_rng: Under DP, the coins of the rounds' Poisson sampling (default:
            keyed from the OS; tests pass a keyed stream).

    Raises:
        ConfigurationError: for settings that contradict each other
            (:func:`check_run_settings`).
        StorageError: if a resumed run's saved strategy state does not fit its settings,
            or a run with an adaptive server optimiser resumes without one.
    """
    check_run_settings(settings)
    spec = spec_of(initial_weights)
    cohort = cohort_plan(settings)
    next_round = 1 if resume is None else resume.next_round
    version = 0 if resume is None else resume.model_version
    aggregation: AggregationBackend
    if settings.secure is not None:
        layout = ContributionLayout(spec.total_size, settings.secure.config)
        if settings.dp is not None and settings.dp.placement == "distributed":
            # The aggregators' noise plan, refused here as they would refuse it later.
            dealt_noise_config(settings.dp, layout=layout, expected_clients=cohort.expected)
        aggregation = SecureAggregation(
            layout,
            run_id=run_id,
            signing_keys={a.index: a.signing_bytes() for a in settings.secure.aggregators},
            min_participants=cohort.minimum,
            retry_interval_s=retry_interval_s,
            dealt_noise=settings.dp is not None and settings.dp.placement == "distributed",
        )
    else:
        aggregation = PlaintextAggregation(spec, uniform_weights=settings.dp is not None)
    privacy: PrivacyBackend | None = None
    sampler: PoissonSampler | None = None
    limits: ParticipationLimits | None = None
    if settings.dp is not None and not settings.dp.privacy_mechanism.samples_clients:
        # A public selection within K participations b apart (DP-FTRL and its kin).
        state = None if resume is None else resume.privacy
        assert settings.dp.max_participations is not None
        limits = ParticipationLimits(
            max_participations=settings.dp.max_participations,
            min_separation=settings.dp.min_separation,
            steps=(
                0 if resume is None else resume.releases if state is None else state.ledger.rounds
            ),
            counts=None if resume is None else resume.participations,
            last_steps=None if resume is None else resume.last_steps,
        )
        privacy = FtrlAggregation(
            aggregation,
            settings.dp,
            rounds=settings.num_releases,
            expected_clients=cohort.expected,
            limits=limits,
            rng=noise_rng,
            state=state,
        )
        aggregation = privacy
    elif settings.dp is not None:
        # Secret Poisson sampling (DP-FedAvg).
        state = None if resume is None else resume.privacy
        if cohort.secret_sampling:
            sampler = PoissonSampler(
                rate=cohort.sample_rate,
                minimum=cohort.minimum,
                rng=sampling_rng,
                attempts=0 if state is None else state.sampling_attempts,
                withheld_probability=0.0 if state is None else state.withheld_probability,
            )
        privacy = PrivateAggregation(
            aggregation,
            settings.dp,
            expected_clients=cohort.expected,
            sample_rate=cohort.sample_rate,
            sampler=sampler,
            rng=noise_rng,
            state=state,
            participations=None if resume is None else resume.participations,
            rounds_released=0 if resume is None else resume.releases,
        )
        aggregation = privacy
    schedule: Schedule
    keep_versions = 1
    if settings.buffer is None:
        schedule = SyncRoundMachine(
            settings.rounds,
            rng=random.Random(f"{settings.seed}:{next_round}"),
            next_round=next_round,
            model_version=version,
            sampler=sampler,
            limits=limits,
        )
    else:
        schedule = BufferedMachine(settings.buffer, version=version, next_buffer=next_round)
        keep_versions = settings.buffer.max_staleness + 1
    if settings.rounds.round_timeout_s <= 0:
        raise ConfigurationError("--round-timeout must be positive.")
    strategy = _strategy(settings)
    _restore_strategy(strategy, resume)
    coordinator = Coordinator(
        schedule=schedule,
        spec=spec,
        initial_weights=initial_weights,
        aggregation=aggregation,
        strategy=strategy,
        round_timeout_s=settings.rounds.round_timeout_s,
        keep_versions=keep_versions,
        privacy=privacy,
    )
    return AssembledRun(coordinator=coordinator, cohort=cohort, privacy=privacy)


def _restore_strategy(strategy: ServerStrategy, resume: ResumePoint | None) -> None:
    """Give a stateful strategy the state saved with the last released round."""
    if resume is None or not isinstance(strategy, StatefulStrategy):
        return
    if resume.strategy_state is None:
        if resume.releases == 0:
            return
        raise StorageError(
            f"The run resumes after {resume.releases} released rounds with the server "
            f"strategy {strategy.name}, but no saved state of it was found; the run store "
            "lost it, so the run cannot continue exactly. Start a new run folder."
        )
    strategy.restore(resume.strategy_state)
