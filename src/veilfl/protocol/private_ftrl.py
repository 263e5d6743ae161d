"""The private backend of every mechanism that limits participation instead of
sampling (``samples_clients`` False; :mod:`veilfl.privacy.mechanisms`), driven by the
mechanism's release schedule; DP-FTRL (Kairouz et al. 2021, "Practical and Private
(Deep) Learning without Sampling or Shuffling") is the one built in, and what follows
describes it.

The model follows FTRL on noised prefix sums, without momentum:

    theta_t = theta_0 + eta * (S_t + noise of cover(t)) / n,

with S_t the sum of the clipped round sums of steps 1..t (released rounds), n the
expected clients per round (the fixed denominator) and eta the server learning rate.
Each release hands the strategy (FedAvg) the *change* of the noised prefix sum,
a_t + noise(block entering the cover) - noise(blocks leaving it), so that FedAvg's
``theta += eta * change / n`` telescopes to the formula above (up to the float32
rounding of each stored model).

* Central placement: the coordinator adds the change of the tree noise itself
  (:class:`~veilfl.privacy.central_tree.CentralTreeNoise`, drawn from a CSPRNG keyed
  by a run secret kept in the privacy state).
* Distributed placement: the aggregators deal the tree noise
  (:class:`~veilfl.secagg.tree_noise.TreeNoiseAggregator`, ``"tree"`` schedule) and
  release the change at the step this backend names; the reconstructed aggregate
  already is the change.

Steps are consecutive released rounds. An abandoned (or withheld) round releases
nothing and does not consume its step: the next round is aggregated at the same step.
The aggregators deal a step's block once and release a step over one aggregate only,
so an aggregator that released its share of an abandoned round's step refuses that
step for another round (it is left out; the others release it; see docs/privacy.md).

Generally, release t is what the mechanism's schedule says
(:class:`~veilfl.privacy.mechanisms.schedule.ReleaseTerms`): under central noise this
backend combines the round sums of the schedule's window with its coefficients and
adds the noise of the blocks it names; under distributed noise the aggregators do
(:mod:`veilfl.secagg.tree_noise`: the tree's, or a Toeplitz strategy's through their
streaming encoders). The schedule's decoder turns the release into the
round's estimate (for the tree, the release itself). The decoder's state and the
window's recent sums are kept in
:attr:`~veilfl.privacy.run_state.DpRunState.mechanism_state`.

Clients are selected by a public rule that enforces the participation limits
(:class:`~veilfl.privacy.participation.ParticipationLimits`), so the guarantee needs no
secret sampling, and the epsilon against the coordinator and the public is one number
(with noise from the aggregators; under central noise the coordinator sees the
noiseless sums and nothing protects against it).
"""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from veilfl.crypto.csprng import KEY_LENGTH, CsprngStream
from veilfl.errors import ConfigurationError, PrivacyError, ProtocolError, StorageError
from veilfl.privacy.central_tree import CentralTreeNoise
from veilfl.privacy.dp_config import DpConfig
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan
from veilfl.privacy.ledger import PrivacyLedger
from veilfl.privacy.mechanisms import PrivacyFacts, ReleaseTerms
from veilfl.privacy.participation import ParticipationLimits
from veilfl.privacy.report import PrivacyReport
from veilfl.privacy.run_state import DpRunState
from veilfl.protocol.aggregation import AggregationBackend, AggregationJob, PlaintextAggregation
from veilfl.protocol.cohort import ClosedCohort
from veilfl.protocol.messages import UpdateHeader
from veilfl.protocol.private_aggregation import PrivateJob, require_one_round
from veilfl.protocol.secure_aggregation import SecureAggregation
from veilfl.strategy.aggregate import Aggregate

__all__ = ["FtrlAggregation"]


class FtrlAggregation:
    """A mechanism within K participations b apart (DP-FTRL's tree, or any other whose
    ``samples_clients`` is False): clipping, the schedule's noise and decoding, fixed
    denominator, accounting and the report.

    Args:
        inner: The backend that sums the clipped updates.
        config: The DP settings (a mechanism that limits participation).
        rounds: The releases the run plans (the tree's length T).
        expected_clients: Clients expected per round (the fixed denominator).
        limits: The participation limits the rounds' selection enforces (shared with
            the round machine; positioned at the released steps).
        rng: Draws the central noise secret of a new run (default: keyed from
            ``os.urandom``; tests pass a keyed stream).
        state: The privacy state after the last release (a resumed coordinator).

    Raises:
        ConfigurationError: for settings that are not DP-FTRL's, distributed noise
            without aggregators that deal it, a state that does not match the limits,
            or a budget too small for even one round.
    """

    def __init__(
        self,
        inner: AggregationBackend,
        config: DpConfig,
        *,
        rounds: int,
        expected_clients: float,
        limits: ParticipationLimits,
        rng: CsprngStream | None = None,
        state: DpRunState | None = None,
    ) -> None:
        self._mechanism = config.privacy_mechanism
        self._schedule = self._mechanism.release_schedule(config, rounds=rounds)
        self._plaintext = inner.plaintext() is not None
        self._distributed = config.placement == "distributed"
        if self._distributed and not (isinstance(inner, SecureAggregation) and inner.dealt_noise):
            raise ConfigurationError(
                f"{self._mechanism.title} with distributed noise needs secure aggregation "
                "whose aggregators deal the noise; use --dp central or add aggregators."
            )
        if expected_clients <= 0:
            raise ConfigurationError("The expected number of clients must be positive.")
        self._inner = inner
        self._config = config
        self._expected = expected_clients
        self._limits = limits
        if state is None:
            key = None if self._distributed else (rng or CsprngStream()).random_bytes(KEY_LENGTH)
            state = DpRunState(
                ledger=PrivacyLedger.from_released_rounds(
                    limits.steps, noise_multiplier=config.noise_multiplier, sample_rate=1.0
                ),
                clip_norm=config.clip_norm,
                tree_noise_key=key,
            )
        if state.ledger.rounds != limits.steps:
            raise ConfigurationError(
                f"The privacy state records {state.ledger.rounds} released rounds but the "
                f"participation counts {limits.steps}; the run store is inconsistent."
            )
        if not self._distributed and state.tree_noise_key is None:
            raise ConfigurationError(
                "The stored privacy state of this central DP-FTRL run lost its tree-noise "
                "secret, so the noise already in the model cannot be continued; start a new run."
            )
        self._state = state
        self._decoder = self._schedule.decoder()
        self._decoder.restore(dict(state.mechanism_state.get("decoder", {})))
        self._recent_sums = _vectors_from_json(state.mechanism_state.get("recent_sums"))
        self._encoder = self._schedule.encoder()
        if self._encoder is not None:
            self._encoder.restore(dict(state.mechanism_state.get("encoder", {})))
        self._noise: CentralTreeNoise | None = None
        self._report = self._report_for(limits.steps)
        if limits.steps == 0:
            require_one_round(config, fits=self.can_continue())

    # ----------------------------------------------------------------- queries
    @property
    def config(self) -> DpConfig:
        """The DP settings."""
        return self._config

    @property
    def limits(self) -> ParticipationLimits:
        """The participation limits (and counts) the selection enforces."""
        return self._limits

    @property
    def clip_norm(self) -> float:
        """C (fixed under DP-FTRL)."""
        return self._config.clip_norm

    @property
    def ledger(self) -> PrivacyLedger:
        """The released steps (each at q = 1: nothing is sampled)."""
        return self._state.ledger

    @property
    def expected_clients(self) -> float:
        """The fixed denominator."""
        return self._expected

    @property
    def secret_sampling(self) -> bool:
        """Always False: DP-FTRL selects clients by a public rule."""
        return False

    def report(self) -> PrivacyReport:
        """Epsilon after the steps so far (one number for both observers under
        distributed noise)."""
        return self._report

    def state(self) -> DpRunState:
        """What a restarted coordinator needs to continue exactly."""
        return self._state

    def can_continue(self) -> bool:
        """Whether one more step keeps epsilon within the target."""
        target = self._config.target_epsilon
        if target is None:
            return True
        epsilon = self._mechanism.planned_epsilon(
            self._config, rounds=self._limits.steps + 1, sample_rate=1.0
        )
        return epsilon <= target * (1 + 1e-9)

    # ---------------------------------------------------------------- backend
    def open_cohort(self, round_id: int) -> None:
        """Start the inner backend's round (clipping on arrival when plaintext)."""
        self._inner.open_cohort(round_id)
        plaintext = self._inner.plaintext()
        if plaintext is not None:
            plaintext.clip_on_arrival(self._config.clip_norm)

    def begin(self, cohort: ClosedCohort) -> PrivateJob:
        """Aggregate at the next step (the aggregators' noise step under distributed
        noise), then the tree noise, the denominator and the accounting."""
        step = self._limits.next_step
        inner = self._inner
        job: AggregationJob
        if self._distributed:
            assert isinstance(inner, SecureAggregation)
            job = inner.begin(cohort, noise_step=step)
        else:
            job = inner.begin(cohort)
        return PrivateJob(job, functools.partial(self.privatize, step=step))

    def check_receipt(self, header: UpdateHeader) -> None:
        """As the inner backend."""
        self._inner.check_receipt(header)

    def client_privacy(self) -> ClientPrivacyPlan | None:
        """Clip to C, add nothing (none over plaintext, where the coordinator clips)."""
        if self._plaintext:
            return None
        return ClientPrivacyPlan.for_round(
            self._config, clip_norm=self._config.clip_norm, expected_clients=self._expected
        )

    def plaintext(self) -> PlaintextAggregation | None:
        """The inner backend's plaintext entry point, if any."""
        return self._inner.plaintext()

    def privatize(self, inner: Aggregate, *, step: int) -> Aggregate:
        """Release ``inner`` (the round's clipped sum, or under distributed noise the
        aggregators' noised change) at ``step``.

        Raises:
            PrivacyError: if the release would exceed the budget or break the
                participation limits (only a bug gets here).
            ProtocolError: if ``step`` is not the next step.
        """
        if step != self._limits.next_step:
            raise ProtocolError(
                f"Step {step} was aggregated, but the next step is {self._limits.next_step}."
            )
        if not self.can_continue():
            raise PrivacyError(
                f"Releasing step {step} would spend more than epsilon "
                f"{self._config.target_epsilon}; training stops here."
            )
        terms = self._schedule.terms(step)
        release = inner.weighted_delta_sum.copy()
        self._limits.record(inner.participants)
        if not self._distributed:
            release = self._combine(terms, release)
            release += self._central_noise(release.size).change(step)
        total = self._decoder.decode(terms, release)
        self._state = replace(
            self._state,
            ledger=self._state.ledger.record(
                noise_multiplier=self._config.noise_multiplier, sample_rate=1.0
            ),
            mechanism_state=self._mechanism_state(),
        )
        self._report = self._report_for(step)
        return replace(
            inner,
            weighted_delta_sum=total,
            total_weight=self._expected,
            mean_loss=inner.mean_loss if self._plaintext else None,
            evaluation=inner.evaluation if self._plaintext else None,
            within_bound_count=None,
            epsilon=self._report.epsilon_public,
        )

    # ----------------------------------------------------------------- private
    def _combine(
        self, terms: ReleaseTerms, round_sum: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Central noise: ``sum_j c_j x_{t-j} / s`` over this round's sum and the last
        ones the schedule's window holds (the round sum itself for window 1)."""
        if self._encoder is not None:
            return self._encoder.encode(round_sum)
        window = self._schedule.window
        if window == 1:
            return round_sum
        self._recent_sums = [round_sum, *self._recent_sums][:window]
        combined = np.zeros_like(round_sum)
        for coefficient, earlier in zip(terms.coefficients, self._recent_sums, strict=False):
            combined += coefficient * earlier
        return combined / terms.scale

    def _mechanism_state(self) -> dict[str, Any]:
        """The decoder's state and the central window's recent sums (empty for the tree)."""
        state: dict[str, Any] = {}
        decoder = self._decoder.to_json()
        if decoder:
            state["decoder"] = decoder
        if self._encoder is not None:
            encoder = self._encoder.to_json()
            if encoder:
                state["encoder"] = encoder
        if self._schedule.window > 1 and self._recent_sums:
            kept = self._recent_sums[: self._schedule.window - 1]
            state["recent_sums"] = _vectors_to_json(kept)
        return state

    def _central_noise(self, length: int) -> CentralTreeNoise:
        if self._noise is None:
            key = self._state.tree_noise_key
            assert key is not None
            self._noise = CentralTreeNoise(
                key=key,
                stddev=self._config.noise_multiplier * self._config.clip_norm,
                length=length,
                schedule=self._schedule,
            )
        return self._noise

    def _report_for(self, steps: int) -> PrivacyReport:
        return self._mechanism.report(
            self._config,
            PrivacyFacts(
                ledger=self._state.ledger,
                rounds_released=steps,
                max_participations=min(self._limits.max_participations, steps),
                secret_sampling=False,
                secure_aggregation=not self._plaintext,
            ),
        )


def _vectors_to_json(vectors: list[npt.NDArray[np.float64]]) -> dict[str, Any]:
    """Vectors of one length as JSON: their shape and base64 of little-endian float64."""
    stacked = np.ascontiguousarray(np.stack(vectors), dtype="<f8")
    return {"shape": list(stacked.shape), "float64": base64.b64encode(stacked.tobytes()).decode()}


def _vectors_from_json(data: Any) -> list[npt.NDArray[np.float64]]:
    """Inverse of :func:`_vectors_to_json` (no vectors for None).

    Raises:
        StorageError: for a malformed value.
    """
    if data is None:
        return []
    try:
        rows, length = (int(n) for n in data["shape"])
        raw = np.frombuffer(base64.b64decode(data["float64"], validate=True), dtype="<f8")
        stacked = raw.reshape(rows, length).astype(np.float64)
    except (KeyError, TypeError, ValueError, binascii.Error) as error:
        raise StorageError(f"The stored recent round sums are malformed ({error}).") from None
    return list(stacked)
