"""The run as every party sees it: the declared :class:`RunSpec` and the aggregators'
signed consents to it (``GET /v1/run``).

Nothing in the description is taken on the coordinator's word: the run id is
recomputed from the spec (a stated id that differs is refused), everything a client or
an aggregator reads about the run (:class:`~veilfl.protocol.messages.RunInfo`) is
derived from that same spec by :func:`describe_run`, and each consent is checked
against the key the checking party pinned itself
(:meth:`RunDescription.consenting_aggregators`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from veilfl.errors import ConfigurationError, WireFormatError
from veilfl.protocol.assembly import cohort_plan
from veilfl.protocol.messages import DpRunInfo, RunInfo, SecureRunInfo
from veilfl.protocol.run_spec import RunSpec
from veilfl.secagg.run_consent import RunConsent

__all__ = ["RunDescription", "dealt_noise_profile", "describe_run"]


def describe_run(spec: RunSpec) -> RunInfo:
    """What a party reads about the run ``spec`` declares (its id is the spec's hash).

    Raises:
        ConfigurationError: if the spec was not sealed with its model size.
    """
    if spec.model_size is None:
        raise ConfigurationError(
            "The run description names no model size; it is fixed when the run is created "
            "(RunSpec.sealed)."
        )
    secure = spec.secure
    plan = cohort_plan(spec)
    return RunInfo(
        run_id=spec.run_id,
        model_name=spec.model_name,
        num_rounds=spec.num_releases,
        plan=spec.plan,
        mode=spec.mode,
        coordinator_key=spec.coordinator_key,
        secure=(
            None
            if secure is None
            else SecureRunInfo(
                config=secure.config, aggregators=secure.aggregators, model_size=spec.model_size
            )
        ),
        dp=(
            None
            if spec.dp is None
            else DpRunInfo(
                config=spec.dp, sample_rate=plan.sample_rate, expected_clients=plan.expected
            )
        ),
        min_cohort=plan.minimum,
        weight_floor=(
            0.0 if spec.buffer is None else spec.buffer.weight(spec.buffer.max_staleness)
        ),
    )


def dealt_noise_profile(run: RunInfo) -> dict[str, Any] | None:
    """The noise the aggregators of ``run`` deal (what each signs in its consent): the
    run's DP settings under distributed noise, else None (they deal none)."""
    if run.dp is None or run.dp.config.placement != "distributed":
        return None
    return run.dp.to_json()


@dataclass(frozen=True)
class RunDescription:
    """A run's declared spec and the consents its aggregators signed.

    Attributes:
        spec: The run, as declared (its hash is the run id).
        consents: The aggregators' signed consents to this run id (empty for a
            plaintext run, or until the aggregators have consented).
    """

    spec: RunSpec
    consents: tuple[RunConsent, ...] = ()

    @property
    def run_id(self) -> str:
        """The run id: the spec's hash."""
        return self.info.run_id

    @cached_property
    def info(self) -> RunInfo:
        """What the run's parties read, derived from the spec alone."""
        return describe_run(self.spec)

    def with_consents(self, consents: Mapping[int, RunConsent]) -> RunDescription:
        """This description with ``consents`` (by aggregator index), in index order."""
        return RunDescription(self.spec, tuple(consents[j] for j in sorted(consents)))

    def consenting_aggregators(self, signing_keys: Mapping[int, bytes]) -> frozenset[int]:
        """The aggregators whose consent to *this* run id and its noise verifies under
        ``signing_keys`` (index to Ed25519 public key, as the checking party pinned
        them; an index missing there counts for nothing)."""
        run_id, noise = self.run_id, dealt_noise_profile(self.info)
        return frozenset(
            consent.index
            for consent in self.consents
            if consent.index in signing_keys
            and consent.run_id == run_id
            and (None if consent.noise is None else dict(consent.noise)) == noise
            and consent.verified_by(signing_keys[consent.index])
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what ``GET /v1/run`` answers); the id is for people, and
        is recomputed by every reader."""
        return {
            "run_id": self.run_id,
            "spec": self.spec.to_json(),
            "consents": [c.to_json() for c in self.consents],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunDescription:
        """Parse :meth:`to_json` output, recomputing the run id from the spec.

        Raises:
            WireFormatError: if it is malformed, or states a run id that is not its
                spec's hash.
        """
        try:
            description = cls(
                spec=RunSpec.from_json(data["spec"]),
                consents=tuple(RunConsent.from_json(c) for c in data.get("consents", ())),
            )
            description.info  # noqa: B018 - derives (and so checks) what parties read
        except (KeyError, TypeError, ValueError, OverflowError, ConfigurationError) as exc:
            raise WireFormatError(f"The run description does not parse: {exc}.") from exc
        stated = data.get("run_id")
        if stated is not None and stated != description.run_id:
            raise WireFormatError(
                f"The run description states run id {stated}, but its contents hash to "
                f"{description.run_id}; refusing it."
            )
        return description
