"""The client's security policy: what a client accepts from a coordinator, decided by
the client alone.

The coordinator describes the run (secure aggregation, the aggregators, the DP plan)
and each task (the round's privacy plan, a buffered update's staleness weight). An
*active* coordinator can describe less than the client wants: leave secure aggregation
out so that updates arrive in plaintext, publish ``t = m = 1`` with one aggregator it
runs, swap an aggregator's key for its own, name aggregators that sum a single client,
announce less noise, or hand out a weight that scales the client's contribution. A
:class:`ClientPolicy` states, from the client's own configuration, what it will accept;
the client checks it

* on the public run description, before it enrolls (no one-time token is spent);
* on the run it is given at enrollment (which must be the one described);
* inside :func:`veilfl.protocol.hand_in.hand_in`, on the run, the privacy plan and the
  weight of that very hand-in, before its first request, so that no code path sends
  data against it.

A refusal is a :class:`~veilfl.errors.PolicyRefusal` naming the setting (by its
``veilfl client`` flag) and both values, and ending with "nothing was sent".

Noise a client can count on. Under distributed DP the aggregators deal the noise after
verifying the contributions, fresh for every release and at the run's multiplier
whatever the cohort (:mod:`veilfl.secagg.dealt_noise`), so a client adds none and checks
the run's announced multiplier; an aggregator's operator can pin a floor of its own
(``veilfl aggregator --min-noise-multiplier``). Local noise protects each update on its
own and is checked on the task's plan; central noise is added by the coordinator, so
only the run's announced multiplier can be checked. Distributed noise without secure
aggregation is noise nobody adds, and is refused under any noise floor.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from veilfl.errors import ConfigurationError, PolicyRefusal
from veilfl.privacy.clipping import UNCLIPPED_BIT_SENSITIVITY
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan
from veilfl.protocol.aggregator_minimums import verified_minimums
from veilfl.protocol.messages import RunInfo
from veilfl.protocol.run_description import RunDescription
from veilfl.secagg.aggregator_policy import AggregatorPolicy
from veilfl.secagg.commitment import default_quorum
from veilfl.secagg.config import SecureAggregationConfig

__all__ = [
    "PLACEMENTS",
    "POLICY_FLAGS",
    "ClientPolicy",
    "check_participations",
    "consent_quorum",
    "run_epsilon",
]

PLACEMENTS = ("central", "distributed", "local")
"""The DP noise placements a client may accept."""

POLICY_FLAGS: dict[str, str] = {
    "allow_plaintext": "--allow-plaintext",
    "aggregator_fingerprints": "--aggregator-fingerprint",
    "trust_coordinator_keys": "--trust-coordinator-keys",
    "max_epsilon": "--max-epsilon",
    "min_threshold": "--min-threshold",
    "min_cohort": "--min-cohort",
    "dp_placements": "--require-dp",
    "min_noise_multiplier": "--min-noise-multiplier",
    "max_clip_norm": "--max-clip-norm",
    "staleness_weights": "--fedbuff-weights",
}
"""Each policy setting's ``veilfl client`` flag (and policy-file key, without dashes)."""

_TOLERANCE = 1e-9  # an honest plan's noise, recomputed in floating point, may differ by ulps


def _refuse(flag: str, wanted: str, source: str, announced: str) -> PolicyRefusal:
    return PolicyRefusal(
        f"Refused by {flag}: this client requires {wanted}, and {source} announces "
        f"{announced}; nothing was sent."
    )


def _number(value: float) -> str:
    return f"{value:.6g}"


@dataclass(frozen=True)
class ClientPolicy:
    """What a client accepts (see the module docstring).

    Attributes:
        allow_plaintext: Accept a run without secure aggregation (the coordinator then
            sees each update). Off by default; contradicts pinned fingerprints.
        aggregator_fingerprints: Aggregator index (1..m) to the fingerprint the client
            pinned (given out of band). With them, the run must have exactly these
            aggregators: the same indices, the same keys, none added or left out. A
            secure run is refused without them, unless ``trust_coordinator_keys``.
        trust_coordinator_keys: Take the aggregators' keys the coordinator publishes
            without pins: the coordinator could then publish keys it holds and open
            every share. For experiments only.
        max_epsilon: Refuse a run whose epsilon against the coordinator, computed by
            this client from the signed description (plus the runs of the same
            coordinator it already took part in), exceeds this.
        min_threshold: The smallest threshold t accepted (default 2: no single
            aggregator can reconstruct an update).
        min_cohort: The fewest clients every aggregator must promise, in its signed
            policy, to sum this client with (default 2; 1 skips the check).
        dp_placements: Noise placements accepted; empty accepts any, or none.
        min_noise_multiplier: The smallest noise multiplier accepted (DP required).
        max_clip_norm: The largest clipping norm accepted (DP required).
        staleness_weights: The range ``(low, high)`` of a buffered update's weight
            accepted (default ``(0, 1)``: the coordinator cannot scale an update up).

    Raises:
        ConfigurationError: for settings that contradict each other or make no sense.
    """

    allow_plaintext: bool = False
    aggregator_fingerprints: Mapping[int, str] = field(default_factory=dict)
    trust_coordinator_keys: bool = False
    max_epsilon: float | None = None
    min_threshold: int = 2
    min_cohort: int = 2
    dp_placements: frozenset[str] = frozenset()
    min_noise_multiplier: float | None = None
    max_clip_norm: float | None = None
    staleness_weights: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        pins = dict(self.aggregator_fingerprints)
        object.__setattr__(self, "aggregator_fingerprints", MappingProxyType(pins))
        object.__setattr__(self, "dp_placements", frozenset(self.dp_placements))
        object.__setattr__(
            self, "staleness_weights", tuple(float(w) for w in self.staleness_weights)
        )
        if sorted(pins) != list(range(1, len(pins) + 1)):
            raise ConfigurationError(
                f"Pinned aggregator fingerprints must be for aggregators 1..{len(pins)} "
                f"in order; got indices {sorted(pins)}."
            )
        if any(not isinstance(fp, str) or not fp for fp in pins.values()):
            raise ConfigurationError("--aggregator-fingerprint takes non-empty fingerprints.")
        if self.allow_plaintext and pins:
            raise ConfigurationError(
                "--allow-plaintext contradicts --aggregator-fingerprint: pinned aggregators "
                "mean secure aggregation with exactly them; drop one of the two."
            )
        if self.trust_coordinator_keys and pins:
            raise ConfigurationError(
                "--trust-coordinator-keys contradicts --aggregator-fingerprint: the pinned "
                "keys are checked, not trusted; drop one of the two."
            )
        if self.max_epsilon is not None and not self.max_epsilon > 0:
            raise ConfigurationError(
                f"--max-epsilon must be a positive number; got {self.max_epsilon}."
            )
        if self.min_threshold < 1:
            raise ConfigurationError(
                f"--min-threshold must be at least 1; got {self.min_threshold}."
            )
        if pins and self.min_threshold > len(pins):
            raise ConfigurationError(
                f"--min-threshold {self.min_threshold} exceeds the {len(pins)} pinned "
                "aggregators; no run could satisfy both."
            )
        if self.min_cohort < 1:
            raise ConfigurationError(f"--min-cohort must be at least 1; got {self.min_cohort}.")
        unknown = sorted(self.dp_placements - set(PLACEMENTS))
        if unknown:
            raise ConfigurationError(
                f"--require-dp takes {', '.join(PLACEMENTS)}; got {', '.join(unknown)}."
            )
        for flag, value in (
            ("--min-noise-multiplier", self.min_noise_multiplier),
            ("--max-clip-norm", self.max_clip_norm),
        ):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ConfigurationError(f"{flag} must be a positive number; got {value}.")
        if len(self.staleness_weights) != 2:
            raise ConfigurationError("--fedbuff-weights takes two numbers, LOW,HIGH.")
        low, high = self.staleness_weights
        if not (0 <= low <= high and math.isfinite(high)):
            raise ConfigurationError(
                f"--fedbuff-weights must be 0 <= LOW <= HIGH; got {_number(low)},{_number(high)}."
            )

    # ------------------------------------------------------------------ reading
    @property
    def requires_dp(self) -> bool:
        """Whether the policy sets a DP floor (then a run without DP is refused)."""
        return bool(self.dp_placements) or (
            self.min_noise_multiplier is not None
            or self.max_clip_norm is not None
            or self.max_epsilon is not None
        )

    @property
    def pinned(self) -> bool:
        """Whether the aggregators' fingerprints are pinned."""
        return bool(self.aggregator_fingerprints)

    def needs_aggregator_policies(self, run: RunInfo) -> bool:
        """Whether checking ``run`` takes the aggregators' signed policies."""
        if run.secure is None:
            return False
        return self.min_cohort > 1

    # ------------------------------------------------------------------- checks
    def check_run(self, run: RunInfo, *, source: str = "the coordinator's run") -> None:
        """Check a run description (secure aggregation, aggregators, threshold, DP).

        Raises:
            PolicyRefusal: naming the first setting the run falls short of.
        """
        secure = run.secure
        if secure is None:
            if self.pinned:
                raise _refuse(
                    "--aggregator-fingerprint",
                    f"secure aggregation with the {len(self.aggregator_fingerprints)} pinned "
                    "aggregators",
                    source,
                    "no secure aggregation (plaintext updates)",
                )
            if not self.allow_plaintext:
                raise _refuse(
                    "--allow-plaintext",
                    "secure aggregation (--allow-plaintext is not given)",
                    source,
                    "no secure aggregation (plaintext updates)",
                )
        else:
            published = {a.index: a.fingerprint for a in secure.aggregators}
            if not self.pinned and not self.trust_coordinator_keys:
                raise PolicyRefusal(
                    f"Refused: {source} uses secure aggregation, but this client pinned no "
                    "aggregator keys, so the coordinator could publish keys it holds; pin "
                    "each aggregator with --aggregator-fingerprint (from `veilfl keys` on "
                    "its key file, given out of band), or pass --trust-coordinator-keys to "
                    "take the coordinator's word; nothing was sent."
                )
            if self.pinned:
                pins = self.aggregator_fingerprints
                if len(published) != len(pins):
                    raise _refuse(
                        "--aggregator-fingerprint",
                        f"exactly the {len(pins)} pinned aggregators",
                        source,
                        f"{len(published)} aggregator(s)",
                    )
                for index, wanted in pins.items():
                    if published.get(index) != wanted:
                        raise _refuse(
                            "--aggregator-fingerprint",
                            f"aggregator {index} with fingerprint {wanted}",
                            source,
                            f"fingerprint {published.get(index)}",
                        )
            threshold = secure.config.threshold
            if threshold < self.min_threshold:
                raise _refuse(
                    "--min-threshold",
                    f"a threshold of at least {self.min_threshold}",
                    source,
                    f"t = {threshold} of m = {secure.config.num_aggregators}",
                )
        self._check_run_dp(run, source)

    def _check_run_dp(self, run: RunInfo, source: str) -> None:
        if not self.requires_dp:
            return
        if run.dp is None:
            flag, wanted = self._first_dp_floor()
            raise _refuse(flag, wanted, source, "no differential privacy")
        config = run.dp.config
        if self.dp_placements and config.placement not in self.dp_placements:
            raise _refuse(
                "--require-dp", self._placements_text(), source, f"{config.placement} noise"
            )
        floor = self.min_noise_multiplier
        if floor is not None and config.noise_multiplier < floor * (1 - _TOLERANCE):
            raise _refuse(
                "--min-noise-multiplier",
                f"a noise multiplier of at least {_number(floor)}",
                source,
                _number(config.noise_multiplier),
            )
        ceiling = self.max_clip_norm
        if ceiling is not None and config.clip_norm > ceiling * (1 + _TOLERANCE):
            raise _refuse(
                "--max-clip-norm",
                f"a clipping norm of at most {_number(ceiling)}",
                source,
                _number(config.clip_norm),
            )
        if floor is not None and config.placement == "distributed" and run.secure is None:
            raise _refuse(
                "--min-noise-multiplier",
                f"a noise multiplier of at least {_number(floor)} on what the coordinator sees",
                source,
                "distributed noise without secure aggregation (no aggregator deals it)",
            )

    def check_aggregators(
        self,
        run: RunInfo,
        policies: Iterable[AggregatorPolicy],
        *,
        source: str = "the coordinator's run",
    ) -> int:
        """Check the aggregators' signed policies against the minimum cohort.

        Args:
            run: The run (its published aggregators verify the signatures).
            policies: The policies the aggregators served.
            source: What announced the run (for messages).

        Returns:
            The cohort the client can count on: the smallest signed minimum (1 for a
            plaintext run, or when the policy needs no promise).

        Raises:
            PolicyRefusal: if a policy is missing, forged, or promises less.
        """
        secure = run.secure
        given = list(policies)
        if secure is None or (not given and not self.needs_aggregator_policies(run)):
            return 1
        try:
            minimums = verified_minimums(secure.aggregators, given)
        except ConfigurationError as exc:
            raise PolicyRefusal(
                f"Refused by --min-cohort: {exc} This client cannot trust the aggregators' "
                "promises; nothing was sent."
            ) from None
        for index, promised in sorted(minimums.items()):
            if promised < self.min_cohort:
                raise _refuse(
                    "--min-cohort",
                    f"aggregators that never sum fewer than {self.min_cohort} clients",
                    f"aggregator {index}'s signed policy",
                    f"a minimum of {promised}",
                )
        cohort = min(minimums.values())
        return cohort

    def check_task(
        self,
        run: RunInfo,
        privacy: ClientPrivacyPlan | None,
        *,
        cohort: int,
        round_id: int,
    ) -> None:
        """Check one task's privacy plan against the DP floor.

        Args:
            run: The run the task is for.
            privacy: The task's privacy plan (None: no DP, or central noise over
                plaintext updates, where the coordinator clips).
            cohort: The clients the aggregators promise to sum (see
                :meth:`check_aggregators`; 1 without secure aggregation).
            round_id: The round or buffer (for messages).

        Raises:
            PolicyRefusal: if the plan falls short of the floor.
        """
        if not self.requires_dp:
            return
        source = f"round {round_id}'s task"
        central_plaintext = (
            run.secure is None and run.dp is not None and run.dp.config.placement == "central"
        )
        if privacy is None and central_plaintext:
            self.check_run(run)  # the coordinator clips and noises what it sees: trusted
            return
        if privacy is None:
            flag, wanted = self._first_dp_floor()
            raise _refuse(flag, wanted, source, "no privacy plan (no clipping, no noise)")
        if self.dp_placements and privacy.placement not in self.dp_placements:
            raise _refuse(
                "--require-dp", self._placements_text(), source, f"{privacy.placement} noise"
            )
        ceiling = self.max_clip_norm
        if ceiling is not None and privacy.clip_norm > ceiling * (1 + _TOLERANCE):
            raise _refuse(
                "--max-clip-norm",
                f"a clipping norm of at most {_number(ceiling)}",
                source,
                _number(privacy.clip_norm),
            )
        floor = self.min_noise_multiplier
        guaranteed = _task_multiplier(privacy, cohort=1 if run.secure is None else cohort)
        if floor is not None and guaranteed is not None and guaranteed < floor * (1 - _TOLERANCE):
            raise _refuse(
                "--min-noise-multiplier",
                f"a noise multiplier of at least {_number(floor)}",
                source,
                f"{privacy.placement} noise of multiplier {_number(guaranteed)}"
                + ("" if privacy.placement == "local" else f" over {cohort} client(s)"),
            )

    def check_weight(self, weight: float | None, *, round_id: int, floor: float = 0.0) -> None:
        """Check a buffered update's staleness weight (None: rounds, nothing to check):
        within the policy's range and not below the run's ``floor``, the weight of an
        update ``max_staleness`` versions old (a ticket weighing a client below it
        could turn a buffer's sum into another client's update).

        Raises:
            PolicyRefusal: if the weight is outside the accepted range.
        """
        if weight is None:
            return
        if not (math.isfinite(weight) and weight >= floor * (1 - _TOLERANCE)):
            raise PolicyRefusal(
                f"Refused: buffer {round_id}'s ticket weighs this update {_number(weight)}, "
                f"below {_number(floor)}, the weight of the stalest update the run declares; "
                "nothing was sent."
            )
        low, high = self.staleness_weights
        if not (math.isfinite(weight) and low <= weight <= high):
            raise _refuse(
                "--fedbuff-weights",
                f"a weight in [{_number(low)}, {_number(high)}]",
                f"buffer {round_id}'s ticket",
                f"weight {_number(weight)}",
            )

    def check_hand_in(
        self,
        run: RunInfo,
        *,
        privacy: ClientPrivacyPlan | None,
        weight: float | None,
        aggregator_policies: Sequence[AggregatorPolicy],
        round_id: int,
        earlier_rounds: int = 0,
    ) -> None:
        """Every check, for one hand-in (what :func:`~veilfl.protocol.hand_in.hand_in`
        runs before its first request).

        Raises:
            PolicyRefusal: naming the first setting the hand-in falls short of.
        """
        self.check_run(run)
        cohort = self.check_aggregators(run, aggregator_policies)
        self.check_task(run, privacy, cohort=cohort, round_id=round_id)
        self.check_weight(weight, round_id=round_id, floor=run.weight_floor)
        check_participations(run, earlier_rounds=earlier_rounds, round_id=round_id)

    # ---------------------------------------------------------------- building
    @classmethod
    def accepting(cls, run: RunInfo, *, min_cohort: int) -> ClientPolicy:
        """The policy that accepts ``run`` exactly as described: its aggregators pinned,
        its threshold, its noise placement, and aggregators promising ``min_cohort``.
        For clients that know the run from their own configuration (the simulators'
        clients, whose aggregators live in the same process)."""
        secure = run.secure
        return cls(
            allow_plaintext=secure is None,
            aggregator_fingerprints=(
                {} if secure is None else {a.index: a.fingerprint for a in secure.aggregators}
            ),
            min_threshold=1 if secure is None else secure.config.threshold,
            min_cohort=min_cohort,
            dp_placements=frozenset() if run.dp is None else frozenset({run.dp.config.placement}),
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str) -> ClientPolicy:
        """A policy from a policy file's keys (the flags without dashes: ``min-cohort``
        or ``min_cohort``, ``aggregator-fingerprint = ["FP1", "FP2"]``,
        ``require-dp = ["distributed"]``, ``fedbuff-weights = [0.5, 1.0]``).

        Raises:
            ConfigurationError: naming ``source`` and the key that is unknown or wrong.
        """
        by_key = {flag.removeprefix("--"): name for name, flag in POLICY_FLAGS.items()}
        options: dict[str, Any] = {}
        for key, value in data.items():
            name = by_key.get(key.replace("_", "-"))
            if name is None:
                raise ConfigurationError(
                    f"{source}: unknown key {key!r}; policy keys are {', '.join(sorted(by_key))}."
                )
            try:
                options[name] = _parse(name, value)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"{source}: {key}: {exc}") from None
        return cls(**options)

    def check_description(
        self,
        description: RunDescription,
        *,
        earlier_epsilon: float = 0.0,
        source: str = "the coordinator's run",
    ) -> None:
        """Check a served run description: :meth:`check_run` on what it declares, that
        a quorum of the pinned aggregators signed their consent to its very run id (and
        to the noise it declares), and that its epsilon against the coordinator, as this
        client computes it, stays within ``max_epsilon``.

        Args:
            description: The description as served (its id recomputed from its spec).
            earlier_epsilon: The epsilon already spent in this coordinator's earlier
                runs (what the client's record holds).
            source: What served it (for messages).

        Raises:
            PolicyRefusal: naming what falls short; nothing was sent.
        """
        run = description.info
        self.check_run(run, source=source)
        secure = run.secure
        if secure is not None:
            # check_run verified the published keys against the pins (or trusts them).
            keys = {a.index: a.signing_bytes() for a in secure.aggregators}
            signers = description.consenting_aggregators(keys)
            needed = consent_quorum(secure.config)
            if len(signers) < needed:
                raise PolicyRefusal(
                    f"Refused: {len(signers)} of the {secure.config.num_aggregators} "
                    f"aggregators ({sorted(signers) or 'none'}) signed their consent to run "
                    f"{run.run_id} as {source} describes it, and {needed} must; the "
                    "aggregators may have been shown another run; nothing was sent."
                )
        if self.max_epsilon is not None:
            spent = earlier_epsilon + run_epsilon(run)
            if not spent <= self.max_epsilon * (1 + _TOLERANCE):
                earlier = (
                    ""
                    if earlier_epsilon == 0
                    else f" (with {_number(earlier_epsilon)} spent "
                    "in this coordinator's earlier runs)"
                )
                raise _refuse(
                    "--max-epsilon",
                    f"an epsilon against the coordinator of at most {_number(self.max_epsilon)}",
                    source,
                    f"a run whose epsilon this client computes as {_number(spent)}{earlier}",
                )

    def _first_dp_floor(self) -> tuple[str, str]:
        if self.dp_placements:
            return "--require-dp", self._placements_text()
        if self.max_epsilon is not None:
            return (
                "--max-epsilon",
                f"an epsilon against the coordinator of at most {_number(self.max_epsilon)}",
            )
        if self.min_noise_multiplier is not None:
            return (
                "--min-noise-multiplier",
                f"a noise multiplier of at least {_number(self.min_noise_multiplier)}",
            )
        assert self.max_clip_norm is not None
        return "--max-clip-norm", f"a clipping norm of at most {_number(self.max_clip_norm)}"

    def _placements_text(self) -> str:
        return " or ".join(sorted(self.dp_placements)) + " noise"


def _task_multiplier(plan: ClientPrivacyPlan, *, cohort: int) -> float | None:
    """The noise multiplier a plan guarantees over ``cohort`` clients (None: central or
    distributed noise, which the coordinator or the aggregators add after the client's
    hand-in; a client checks the run's announced multiplier instead)."""
    if plan.placement in ("central", "distributed"):
        return None
    if plan.update_stddev <= 0 or plan.clip_norm <= 0:
        return 0.0
    clients = 1 if plan.placement == "local" else cohort
    update = plan.update_stddev * math.sqrt(clients) / plan.clip_norm
    if plan.count_stddev <= 0:
        return update
    count = plan.count_stddev * math.sqrt(clients) / UNCLIPPED_BIT_SENSITIVITY
    return float((update**-2 + count**-2) ** -0.5)


def _parse(name: str, value: Any) -> Any:
    """One policy-file value, as the :class:`ClientPolicy` field ``name`` takes it."""
    if name in ("allow_plaintext", "trust_coordinator_keys"):
        if not isinstance(value, bool):
            raise ValueError("write true or false")
        return value
    if name == "aggregator_fingerprints":
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, str) for item in items):
            raise ValueError("a list of fingerprints, in index order")
        return dict(enumerate(items, start=1))
    if name in ("min_threshold", "min_cohort"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("a whole number")
        return value
    if name == "dp_placements":
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, str) for item in items):
            raise ValueError(f"a list of placements ({', '.join(PLACEMENTS)})")
        return frozenset(items)
    if name in ("min_noise_multiplier", "max_clip_norm", "max_epsilon"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("a number")
        return float(value)
    assert name == "staleness_weights"
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or len(items) != 2:
        raise ValueError('two numbers, [LOW, HIGH] or "LOW,HIGH"')
    return (float(items[0]), float(items[1]))


def check_participations(run: RunInfo, *, earlier_rounds: int, round_id: int) -> None:
    """Under a mechanism that limits participation instead of sampling (DP-FTRL),
    refuse a hand-in beyond the run's K participations: the epsilon,
    against the coordinator too, holds only for clients in at most K released rounds,
    and only the coordinator's selection keeps to K. Every client checks this; an honest
    coordinator never asks for more.

    Args:
        run: The run's description.
        earlier_rounds: Rounds this client has already handed in to the run's
            coordinator (its key), in any of its runs and modes: a new run id or
            another mode resets nothing.
        round_id: The round asked for (for the message).

    Raises:
        PolicyRefusal: if the client has already taken part K times.
    """
    dp = run.dp
    if (
        dp is None
        or dp.config.privacy_mechanism.samples_clients
        or dp.config.max_participations is None
    ):
        return
    limit = dp.config.max_participations
    if earlier_rounds >= limit:
        raise PolicyRefusal(
            f"Refused round {round_id}: this client already took part in {earlier_rounds} "
            f"rounds of this coordinator's runs, and {dp.config.privacy_mechanism.title} "
            f"run {run.run_id} allows {limit} "
            "(--dp-max-participations); another would void its epsilon; nothing was sent."
        )


def consent_quorum(config: SecureAggregationConfig) -> int:
    """The consents a client needs: the run's certificate quorum, and never fewer than
    ceil((m + t) / 2), so that every two such sets share t aggregators (a run that
    announces a smaller, splittable quorum still needs that many consents)."""
    m, t = config.num_aggregators, config.threshold
    return max(config.quorum, default_quorum(num_aggregators=m, threshold=t))


def run_epsilon(run: RunInfo) -> float:
    """The epsilon against the coordinator of a client that takes part as often as the
    run allows, from the run's declared settings alone (``inf`` when none holds).

    The coordinator chooses who takes part, so no amplification by sampling is
    assumed. The run's mechanism computes it
    (:meth:`~veilfl.privacy.mechanisms.base.PrivacyMechanism.epsilon_against_coordinator`):
    central noise is added by the coordinator after it saw the sum, so no epsilon holds
    against it; DP-FTRL bounds a client's rounds by K with separation b (which the
    client also counts, :func:`check_participations`); DP-FedAvg bounds nothing, so a
    client may be in every release.
    """
    dp = run.dp
    if dp is None:
        return math.inf
    return dp.config.privacy_mechanism.epsilon_against_coordinator(
        dp.config, rounds=run.num_rounds, expected_clients=dp.expected_clients or 1.0
    )
