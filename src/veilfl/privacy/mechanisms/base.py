"""The interface every differential-privacy mechanism of a run implements.

A mechanism owns what distinguishes it from the others, so that the coordinator, the
aggregators, the clients' policy check, the simulators and the command line ask it
and never branch on its name:

* its **settings** beyond the general ones of :class:`~veilfl.privacy.dp_config.DpConfig`
  (which it checks, and which it writes into the run's JSON, hence the run id);
* its **participation rule**: secret Poisson sampling (amplification against the
  public) or at most K participations at least b released rounds apart, which the
  coordinator's selection enforces (:class:`~veilfl.privacy.participation.ParticipationLimits`)
  and each client checks for itself;
* its **release schedule** (:mod:`veilfl.privacy.mechanisms.schedule`): which round
  sums and which noise blocks each release combines, and how the coordinator decodes
  it;
* the **noise the aggregators deal** under distributed placement
  (:class:`DealtNoisePlan`, turned into the aggregators' config by
  :func:`veilfl.secagg.dealt_noise.dealt_noise_config`);
* its **sensitivity** under its participation rule, its **accounting** (epsilon via
  dp-accounting, :mod:`veilfl.privacy.accountant`), the noise multiplier that reaches a
  target epsilon, and its **privacy report** (:mod:`veilfl.privacy.report`).

Mechanisms are stateless objects; the run's state lives in the private backend and in
:class:`~veilfl.privacy.run_state.DpRunState`. They import dp-accounting (scipy) only
inside the methods that need it, so a client that only clips imports none of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from veilfl.privacy.mechanisms.schedule import ReleaseSchedule

if TYPE_CHECKING:
    from veilfl.privacy.dp_config import DpConfig, NoisePlacement
    from veilfl.privacy.ledger import PrivacyLedger
    from veilfl.privacy.report import PrivacyReport

__all__ = ["DealtNoisePlan", "PrivacyFacts", "PrivacyMechanism"]


@dataclass(frozen=True)
class DealtNoisePlan:
    """The noise the aggregators deal into every release (distributed placement).

    Attributes:
        schedule: The release schedule's name (the aggregators' noise state keeps it).
        update_stddev: sigma of each block on the d update coordinates, in the
            contributions' integer units.
        bit_stddev: sigma on the unclipped-bit coordinate (2·sigma_b under adaptive
            clipping, 0 without), or None for a mechanism that never reads the bit.
        coefficients: The integer strategy coefficients of a ``"toeplitz"`` schedule
            (empty for the window-1 schedules).
    """

    schedule: str
    update_stddev: float
    bit_stddev: float | None = None
    coefficients: tuple[int, ...] = ()

    def profile(self, *, dimension: int, extra: int) -> tuple[tuple[int, float], ...]:
        """The (count, sigma) segments over the d update coordinates and the ``extra``
        ones that follow them (the bit last)."""
        if self.bit_stddev is None:
            return ((dimension, self.update_stddev), (extra, 0.0))
        return ((dimension, self.update_stddev), (extra - 1, 0.0), (1, self.bit_stddev))


@dataclass(frozen=True)
class PrivacyFacts:
    """What the private backend knows after its releases, for the report.

    Attributes:
        ledger: The released rounds (z and the q charged of each).
        rounds_released: Releases so far.
        max_participations: Releases the most frequent participant took part in.
        secret_sampling: Whether clients were Poisson-sampled with coins the public
            never sees.
        secure_aggregation: Whether updates were summed under secure aggregation.
        withheld_probability: The sampler's bound on a withheld round's leak.
    """

    ledger: PrivacyLedger
    rounds_released: int
    max_participations: int
    secret_sampling: bool
    secure_aggregation: bool
    withheld_probability: float = 0.0


class PrivacyMechanism(ABC):
    """One differential-privacy mechanism (see the module docstring).

    Class attributes:
        name: The registry key (``--dp-mechanism NAME``, the run's JSON).
        title: How messages name it (``DP-FTRL``).
        summary: One line for ``--help``.
        samples_clients: True: rounds are Poisson-sampled in secret (amplification
            against the public; the ledger charges q). False: clients are selected by
            a public rule within ``max_participations`` (K) and ``min_separation`` (b).
        placements: Where its noise may be added.
        adaptive_clipping: Whether it accepts ``--adaptive-clipping``.
        options: A frozen dataclass of the mechanism's own settings, each declared
            with :func:`veilfl.declared.setting` (its flag, help, range, default), or
            None. Its settings become options of every command that builds a run and
            keys of ``--config`` files, and the instance is ``DpConfig.options``, in the
            run's JSON and so its run id.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    summary: ClassVar[str]
    samples_clients: ClassVar[bool]
    placements: ClassVar[frozenset[str]] = frozenset({"central", "distributed", "local"})
    adaptive_clipping: ClassVar[bool] = False
    options: ClassVar[type[Any] | None] = None

    # ------------------------------------------------------------ settings
    def check(self, config: DpConfig) -> None:
        """Refuse settings this mechanism cannot honour (one line naming the flags).

        The default checks the placement, adaptive clipping and the participation
        limits against the class attributes.

        Raises:
            ConfigurationError: naming the flag and what to do.
        """
        from veilfl.errors import ConfigurationError

        if config.placement not in self.placements:
            raise ConfigurationError(
                f"--dp-mechanism {self.name} takes --dp "
                f"{' or '.join(sorted(self.placements))}; got --dp {config.placement}."
            )
        if config.adaptive is not None and not self.adaptive_clipping:
            raise ConfigurationError(
                f"--dp-mechanism {self.name} uses a fixed clipping norm; drop --adaptive-clipping."
            )
        if self.samples_clients:
            if config.max_participations is not None or config.min_separation != 1:
                from veilfl.privacy.mechanisms.registry import mechanism_named, mechanism_names

                limited = [
                    mechanism_named(name)
                    for name in mechanism_names()
                    if not mechanism_named(name).samples_clients
                ]
                raise ConfigurationError(
                    "--dp-max-participations and --dp-min-separation are "
                    f"{' and '.join(m.title for m in limited)}'s participation limits; add "
                    f"--dp-mechanism {' or '.join(m.name for m in limited)} or drop them."
                )
            return
        if config.max_participations is None or config.max_participations < 1:
            raise ConfigurationError(
                f"--dp-mechanism {self.name} needs --dp-max-participations K >= 1: its "
                "epsilon holds for clients that take part in at most K rounds."
            )
        if config.min_separation < 1:
            raise ConfigurationError(
                f"--dp-min-separation must be at least 1; got {config.min_separation}."
            )

    def settings_json(self, config: DpConfig) -> dict[str, Any]:
        """The mechanism's keys in the run's JSON (and so in its run id)."""
        from veilfl.declared import to_json_value

        return {
            "mechanism": self.name,
            "max_participations": config.max_participations,
            "min_separation": config.min_separation,
            **({} if config.options is None else {"options": to_json_value(config.options)}),
        }

    def participation_defaults(
        self,
        *,
        max_participations: int | None,
        min_separation: int | None,
        rounds: int,
        sample_rate: float,
    ) -> tuple[int | None, int]:
        """(K, b) from the flags as given (None: not given), defaulting to what
        round-robin selection of ``sample_rate`` of the population over ``rounds``
        needs; a sampling mechanism passes the flags through (its check refuses them)."""
        import math

        if self.samples_clients:
            return max_participations, 1 if min_separation is None else int(min_separation)
        k = (
            max_participations
            if max_participations is not None
            else max(1, math.ceil(rounds * sample_rate - 1e-9))
        )
        b = (
            min_separation
            if min_separation is not None
            else max(1, math.floor(1 / sample_rate + 1e-9))
        )
        return int(k), int(b)

    def check_run(
        self,
        config: DpConfig,
        *,
        rounds: int,
        expected_clients: int,
        population: int,
        buffered: bool,
        server_optimizer: str | None,
    ) -> None:
        """Refuse run settings under which the mechanism's guarantee or its model
        update cannot hold. By default nothing for a sampling mechanism; for one that
        limits participation, :func:`~veilfl.privacy.validation.check_ftrl_settings`
        (synchronous rounds, FedAvg's server step, rounds that can fill within K and b).

        Raises:
            ConfigurationError: in one line naming the flags and values.
        """
        if self.samples_clients:
            return
        from veilfl.privacy.validation import check_ftrl_settings

        check_ftrl_settings(
            dp=config,
            rounds=rounds,
            expected_clients=expected_clients,
            population=population,
            buffered=buffered,
            server_optimizer=server_optimizer,
        )

    # ------------------------------------------------------------ noise
    @abstractmethod
    def release_schedule(self, config: DpConfig, *, rounds: int) -> ReleaseSchedule:
        """Which round sums and noise blocks each of ``rounds`` releases combines."""

    @abstractmethod
    def dealt_noise(
        self, config: DpConfig, *, per_update_bound: float, expected_clients: float
    ) -> DealtNoisePlan:
        """The noise the aggregators deal, in units where one client's update is
        bounded by ``per_update_bound`` (the verified integer bound)."""

    # ------------------------------------------------------------ accounting
    @abstractmethod
    def sensitivity(self, config: DpConfig, *, rounds: int) -> float:
        """The L2 sensitivity of ``rounds`` releases to one client, in units of C,
        under the participation rule (1 for one fresh-noise release)."""

    def epsilon_against_coordinator(
        self, config: DpConfig, *, rounds: int, expected_clients: float
    ) -> float:
        """Epsilon, against a coordinator that chooses who takes part, of a client that
        takes part as often as the settings allow, over ``rounds`` releases (``inf``
        where nothing holds against it, as under central noise). What a client's policy
        check computes from the run's description alone.

        The default fits a mechanism that limits participation: its
        :meth:`planned_epsilon` (no sampling to amplify it), ``inf`` under central
        noise. A sampling mechanism overrides it.
        """
        import math

        if config.placement == "central":
            return math.inf
        return self.planned_epsilon(config, rounds=rounds, sample_rate=1.0)

    @abstractmethod
    def planned_epsilon(self, config: DpConfig, *, rounds: int, sample_rate: float) -> float:
        """Epsilon against the public after ``rounds`` releases, as planned (q the
        sampling rate the ledger charges, 1 where the sample may be known)."""

    def noise_multiplier_for(
        self, config: DpConfig, *, target_epsilon: float, rounds: int, sample_rate: float
    ) -> float:
        """The smallest noise multiplier z (to 0.1%) whose :meth:`planned_epsilon` is
        at most ``target_epsilon`` (``config.noise_multiplier`` is ignored).

        Raises:
            ConfigurationError: for a non-positive target, or none within reach.
        """
        from dataclasses import replace

        from veilfl.errors import ConfigurationError

        if not target_epsilon > 0:
            raise ConfigurationError("The target epsilon must be positive.")

        def spent(z: float) -> float:
            return self.planned_epsilon(
                replace(config, noise_multiplier=z), rounds=rounds, sample_rate=sample_rate
            )

        low, high = 1e-3, 1.0
        while spent(high) > target_epsilon:
            low, high = high, high * 2
            if high > 1e6:
                raise ConfigurationError(f"No noise multiplier reaches epsilon {target_epsilon}.")
        while high - low > 1e-3 * high:
            middle = (low + high) / 2
            low, high = (middle, high) if spent(middle) > target_epsilon else (low, middle)
        return high

    def derivation_note(
        self, config: DpConfig, *, target_epsilon: float, rounds: int, sample_rate: float
    ) -> str:
        """The log line saying what :meth:`noise_multiplier_for` derived."""
        return (
            f"noise multiplier {config.noise_multiplier:.4f} spends epsilon "
            f"{target_epsilon:.3f} over {rounds} rounds ({self.name}, "
            f"{config.accounting.upper()})"
        )

    def report(self, config: DpConfig, facts: PrivacyFacts) -> PrivacyReport:
        """Epsilon against each observer, with the assumptions they rest on.

        The default fits a mechanism that limits participation: :meth:`planned_epsilon`
        after the releases so far against the public, and the same against the
        coordinator under distributed noise (none under central noise), for zero-out
        adjacency. A sampling mechanism overrides it.
        """
        from veilfl.privacy.report import PrivacyReport

        distributed = config.placement == "distributed"
        epsilon = self.planned_epsilon(config, rounds=facts.rounds_released, sample_rate=1.0)
        assumptions = [
            f"Each client takes part in at most {config.max_participations} rounds, at "
            f"least {config.min_separation} rounds apart; its updates are clipped to C.",
            "Zero-out adjacency: the noise protects what a client sent, not that it sent.",
            "No sampling assumption: the same epsilon holds against an observer who knows "
            "who took part.",
            "Fewer than t aggregators collude with the coordinator; the honest ones add all "
            "of every release's noise."
            if distributed
            else "The coordinator adds the noise and sees noiseless sums: trust it.",
        ]
        return PrivacyReport(
            mechanism=f"{self.title}, "
            + ("noise from the aggregators" if distributed else "central noise"),
            accounting=config.accounting,
            delta=config.delta,
            epsilon_public=epsilon,
            epsilon_coordinator=epsilon if distributed else None,
            adjacency="zero-out",
            assumptions=tuple(assumptions),
        )

    def describes(self, placement: NoisePlacement) -> str:
        """How messages name this mechanism under ``placement``."""
        return f"{self.name} ({placement} noise)"

    def equivalent_noise_multiplier(
        self, config: DpConfig, *, rounds: int, expected_clients: float
    ) -> float:
        """The per-round multiplier of independent Gaussian noise whose prefix sums
        (what the model accumulates) have the same mean squared error, over ``rounds``
        releases, as this mechanism's noise: what the noise advisor's threshold reads
        (:mod:`veilfl.privacy.noise_advisor`).

        The default decodes :meth:`release_schedule` (one block of standard deviation
        :meth:`dealt_noise`'s ``update_stddev`` for a unit bound), so it holds for any
        linear mechanism whose two agree: z for fresh noise (z_Δ under adaptive
        clipping), z·sqrt(mean |cover(t)| / mean t) for the tree, and a matrix
        mechanism's prefix-sum error for its Toeplitz schedule. A mechanism whose
        aggregators cannot deal its noise (:meth:`dealt_noise` refuses) is taken to draw
        blocks of z·C centrally, as :mod:`veilfl.protocol.private_ftrl` does. Override
        it where a closed form is cheaper.
        """
        from veilfl.errors import ConfigurationError
        from veilfl.privacy.noise_advisor import equivalent_multiplier

        try:
            plan = self.dealt_noise(config, per_update_bound=1.0, expected_clients=expected_clients)
            block = plan.update_stddev
        except ConfigurationError:
            block = config.noise_multiplier
        return equivalent_multiplier(
            block, self.release_schedule(config, rounds=rounds), rounds=rounds
        )
