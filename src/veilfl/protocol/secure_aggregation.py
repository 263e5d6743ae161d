"""The coordinator's side of secure aggregation, as a job that asks and listens.

For a closed cohort the job goes through four phases, each one command to the
aggregators and their answers as events:

1. **holdings**: every aggregator says which clients' shares it actually holds. The
   candidates are built from those holdings, never from what clients' receipts claim, so
   a false receipt costs nothing but its sender's exclusion. The job picks the
   aggregators first, as many as hold a common list of at least half the clients (t at
   least), then the clients they all hold
   (:func:`~veilfl.secagg.reconstruction.plan_aggregation`): a client that uploaded to
   fewer aggregators is left out, and cannot take the round's spare aggregator (its
   fault tolerance and consistency check) with it.
2. **verify**: those aggregators answer one query seed for each candidate's proof; from
   t or more answers the job decides, client by client, whose contribution is within its
   bounds (:func:`~veilfl.secagg.bounds.decide`). Invalid ones are excluded.
3. **commit**: every aggregator is asked to commit to the final list; the signatures
   of the run's quorum q (``ceil((m + t) / 2)`` by default, so that t - 1 colluding
   aggregators cannot help certify a second list) make the certificate without which
   no aggregator releases a sum (:mod:`veilfl.secagg.commitment`). So a round needs q
   live aggregators: at m = 3, t = 2 all three.
4. **deal** (distributed DP only): every one of the m aggregators deals its fresh
   noise for the round (:mod:`veilfl.secagg.dealt_noise`): one deal per other
   aggregator, sealed to it and signed by the dealer, which the job only relays. All m
   must deal: the noise of each dealer has variance sigma^2/h, h = m - t + 1, so that
   the dealers outside any coalition of t - 1 aggregators add sigma^2; with only k < m
   dealers, a coalition of t - 1 of them would leave k - t + 1 < h honest ones, less
   noise than charged. A missing dealer stalls the job like a missing aggregate share.
5. **sum**: the aggregators that verified the list send their aggregate shares against
   the certificate (with dealt noise: plus the noise, given the deals addressed to
   them and the step: the round id under DP-FedAvg, the released-round count under
   DP-FTRL, whose backend names it); the job reconstructs the sum from t of
   them, checking consistency whenever more answered.

Aggregators that fail are left out; when the job cannot go on it stalls, says so once
(per change of reason), and asks again after its retry interval. The coordinator
abandons the round if it is still stalled one round timeout after it closed. The
coordinator never sees an individual update.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.keys import verify_aggregator_signature
from veilfl.crypto.shamir import Share
from veilfl.errors import ProtocolError, ReconstructionError
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan
from veilfl.protocol.cohort import ClosedCohort
from veilfl.protocol.effects import (
    AggregateShareReported,
    AggregationStalled,
    AggregatorFailed,
    ClientsExcluded,
    CollectAggregateShares,
    CollectCommitments,
    CollectHoldings,
    CollectNoiseDeals,
    CollectVerifierShares,
    CommitmentReported,
    Effect,
    Event,
    HoldingsReported,
    NoiseDealsReported,
    VerifierSharesReported,
)
from veilfl.protocol.messages import UpdateHeader
from veilfl.secagg.bounds_messages import VerifierShare
from veilfl.secagg.bounds_verifier import decide
from veilfl.secagg.commitment import Commitment, CommitmentCertificate
from veilfl.secagg.contribution import ContributionLayout
from veilfl.secagg.reconstruction import plan_aggregation, reconstruct_aggregate
from veilfl.strategy.aggregate import Aggregate

__all__ = ["SecureAggregation", "SecureAggregationJob"]


class _Phase(StrEnum):
    HOLDINGS = "asking the aggregators what they hold"
    VERIFY = "verifying the contributions' bounds"
    COMMIT = "collecting the aggregators' commitments to the list"
    DEAL = "collecting the aggregators' noise deals"
    RELEASE = "collecting aggregate shares"
    STALLED = "waiting to ask the aggregators again"
    DONE = "aggregated"


class SecureAggregation:
    """An :class:`~veilfl.protocol.aggregation.AggregationBackend` over m aggregators.

    Args:
        layout: The contributions' encoding and proof parameters.
        run_id: The run (part of every commitment).
        signing_keys: Each aggregator's Ed25519 public key, by index (to check their
            commitments).
        min_participants: Smallest participant list worth reconstructing.
        rng: Draws each round's query seed (after the round's uploads are fixed).
        retry_interval_s: How long a stalled job waits before asking again.
        dealt_noise: Whether the aggregators deal DP noise into every release
            (distributed placement; see the module docstring).
    """

    def __init__(
        self,
        layout: ContributionLayout,
        *,
        run_id: str,
        signing_keys: Mapping[int, bytes],
        min_participants: int,
        rng: CsprngStream | None = None,
        retry_interval_s: float = 1.0,
        dealt_noise: bool = False,
    ) -> None:
        config = layout.config
        if sorted(signing_keys) != list(range(1, config.num_aggregators + 1)):
            raise ProtocolError(
                f"Secure aggregation needs the signing keys of aggregators "
                f"1..{config.num_aggregators}; got {sorted(signing_keys)}."
            )
        self._layout = layout
        self._run_id = run_id
        self._signing_keys = dict(signing_keys)
        self._min_participants = min_participants
        self._rng = rng or CsprngStream()
        self._retry_interval_s = retry_interval_s
        self._dealt_noise = dealt_noise

    @property
    def dealt_noise(self) -> bool:
        """Whether the aggregators add dealt noise to every release."""
        return self._dealt_noise

    @property
    def layout(self) -> ContributionLayout:
        """The contributions' encoding and proof parameters."""
        return self._layout

    def open_cohort(self, round_id: int) -> None:
        """Nothing to reset: aggregators key their state by round."""

    def begin(self, cohort: ClosedCohort, *, noise_step: int | None = None) -> SecureAggregationJob:
        """Start aggregating ``cohort`` (first, by asking for the holdings).

        Args:
            cohort: The closed cohort.
            noise_step: With dealt noise, the step the aggregators release at (default:
                the round id, DP-FedAvg's fresh schedule; DP-FTRL's tree schedule
                names its consecutive step).
        """
        return SecureAggregationJob(
            cohort,
            layout=self._layout,
            run_id=self._run_id,
            signing_keys=self._signing_keys,
            min_participants=self._min_participants,
            query_seed=self._rng.random_bytes(32),
            retry_interval_s=self._retry_interval_s,
            dealt_noise=self._dealt_noise,
            noise_step=noise_step,
        )

    def check_receipt(self, header: UpdateHeader) -> None:
        """A receipt names at least t distinct aggregators of this run.

        Raises:
            ProtocolError: for an index outside 1..m, or fewer than t aggregators.
        """
        config = self._layout.config
        m, t = config.num_aggregators, config.threshold
        outside = sorted(j for j in header.aggregators if not 1 <= j <= m)
        if outside:
            raise ProtocolError(
                f"The receipt names aggregators {outside}, but this run has aggregators 1..{m}."
            )
        if len(header.aggregators) < t:
            raise ProtocolError(
                f"The receipt lists {len(header.aggregators)} aggregators; at least {t} must "
                "hold the shares."
            )

    def client_privacy(self) -> ClientPrivacyPlan | None:
        """Secure aggregation alone asks nothing more of clients."""
        return None

    def can_continue(self) -> bool:
        """No budget here."""
        return True

    def plaintext(self) -> None:
        """Updates never travel in the clear here."""
        return None


class SecureAggregationJob:
    """Aggregating one closed cohort across the aggregators (see the module docstring)."""

    def __init__(
        self,
        cohort: ClosedCohort,
        *,
        layout: ContributionLayout,
        run_id: str,
        signing_keys: Mapping[int, bytes],
        min_participants: int,
        query_seed: bytes,
        retry_interval_s: float,
        dealt_noise: bool = False,
        noise_step: int | None = None,
    ) -> None:
        self._cohort = cohort
        self._dealt_noise = dealt_noise
        self._noise_step = cohort.round_id if noise_step is None else noise_step
        self._deals: dict[int, Mapping[int, bytes]] = {}
        self._layout = layout
        self._config = layout.config
        self._run_id = run_id
        self._signing_keys = signing_keys
        self._min_participants = min_participants
        self._query_seed = query_seed
        self._retry_interval_s = retry_interval_s
        self._outbox: list[Effect] = []
        self._result: Aggregate | None = None
        self._candidates: tuple[str, ...] = ()
        self._participants: tuple[str, ...] | None = None  # fixed once verified
        self._holders: tuple[int, ...] = ()
        self._waiting: set[int] = set()
        self._holdings: dict[int, frozenset[str]] = {}
        self._answers: dict[int, Mapping[str, VerifierShare]] = {}
        self._signatures: dict[int, bytes] = {}
        self._certificate: CommitmentCertificate | None = None
        self._shares: dict[int, Share] = {}
        self._failures: dict[int, str] = {}
        self._excluded: dict[str, str] = {}
        self._resume: _Phase = _Phase.HOLDINGS
        self._stall_reason = ""
        self._stalled_since: float | None = None
        self._phase = _Phase.HOLDINGS
        self._ask_holdings()

    # ----------------------------------------------------------------- queries
    @property
    def round_id(self) -> int:
        """The round being aggregated."""
        return self._cohort.round_id

    @property
    def result(self) -> Aggregate | None:
        """The reconstructed aggregate, once done."""
        return self._result

    @property
    def excluded(self) -> Mapping[str, str]:
        """Reporting clients left out of the sum, and why."""
        return dict(self._excluded)

    def status(self) -> str:
        """What the job is doing now."""
        if self._phase is _Phase.STALLED:
            return f"{self._phase.value} ({self._stall_reason})"
        return self._phase.value

    # ---------------------------------------------------------------- commands
    def drain(self) -> list[Effect]:
        """Commands and notices queued since the last call."""
        out, self._outbox = self._outbox, []
        return out

    def handle(self, event: Event) -> None:
        """Take an aggregator's answer (or failure) to this job's current request."""
        if getattr(event, "round_id", None) != self.round_id:
            return
        aggregator = getattr(event, "aggregator", None)
        if aggregator not in self._waiting:
            return  # an answer to an earlier request, or from no one we asked
        self._waiting.discard(aggregator)
        if isinstance(event, AggregatorFailed):
            # Left out of this attempt; a stalled job asks it again after the interval.
            self._failures[aggregator] = event.reason
        elif self._phase is _Phase.HOLDINGS and isinstance(event, HoldingsReported):
            self._holdings[aggregator] = event.clients
        elif self._phase is _Phase.VERIFY and isinstance(event, VerifierSharesReported):
            self._answers[aggregator] = event.shares
        elif self._phase is _Phase.COMMIT and isinstance(event, CommitmentReported):
            self._signatures[aggregator] = event.signature
        elif self._phase is _Phase.DEAL and isinstance(event, NoiseDealsReported):
            others = {j for j in self._everyone() if j != aggregator}
            if set(event.deals) == others:
                self._deals[aggregator] = dict(event.deals)
            else:
                self._failures[aggregator] = (
                    f"its deals are addressed to {sorted(event.deals)}, not to every other "
                    "aggregator"
                )
        elif (
            self._phase is _Phase.RELEASE
            and isinstance(event, AggregateShareReported)
            and event.share.index == aggregator
        ):
            self._shares[aggregator] = event.share
        if not self._waiting:
            self._advance()

    def tick(self, *, now: float) -> None:
        """Ask again once a stall has lasted the retry interval."""
        if self._phase is not _Phase.STALLED:
            return
        if self._stalled_since is None:
            self._stalled_since = now
            return
        if now - self._stalled_since < self._retry_interval_s:
            return
        self._stalled_since = None
        {
            _Phase.HOLDINGS: self._ask_holdings,
            _Phase.VERIFY: self._ask_verification,
            _Phase.COMMIT: self._ask_commitments,
            _Phase.DEAL: self._ask_deals,
            _Phase.RELEASE: self._ask_for_shares,
        }[self._resume]()

    # ----------------------------------------------------------------- private
    def _ask(self, phase: _Phase, aggregators: tuple[int, ...], command: Effect) -> None:
        self._phase = phase
        self._resume = phase
        self._waiting = set(aggregators)
        if aggregators:
            self._outbox.append(command)
        else:
            self._advance()

    def _everyone(self) -> tuple[int, ...]:
        return tuple(range(1, self._config.num_aggregators + 1))

    def _ask_holdings(self) -> None:
        self._holdings = {}
        self._ask(
            _Phase.HOLDINGS, self._everyone(), CollectHoldings(self.round_id, self._everyone())
        )

    def _ask_verification(self) -> None:
        missing = tuple(j for j in self._holders if j not in self._answers)
        self._ask(
            _Phase.VERIFY,
            missing,
            CollectVerifierShares(self.round_id, self._candidates, missing, self._query_seed),
        )

    def _ask_commitments(self) -> None:
        assert self._participants is not None
        missing = tuple(j for j in self._everyone() if j not in self._signatures)
        self._ask(
            _Phase.COMMIT, missing, CollectCommitments(self.round_id, self._participants, missing)
        )

    def _ask_deals(self) -> None:
        missing = tuple(j for j in self._everyone() if j not in self._deals)
        self._ask(_Phase.DEAL, missing, CollectNoiseDeals(self.round_id, self._noise_step, missing))

    def _ask_for_shares(self) -> None:
        assert self._participants is not None and self._certificate is not None
        missing = tuple(j for j in self._holders if j not in self._shares)
        if not self._dealt_noise:
            command = CollectAggregateShares(
                self.round_id, self._participants, missing, self._certificate
            )
        else:
            command = CollectAggregateShares(
                self.round_id,
                self._participants,
                missing,
                self._certificate,
                noise_step=self._noise_step,
                deals={
                    j: tuple(deals[j] for _, deals in sorted(self._deals.items()) if j in deals)
                    for j in missing
                },
            )
        self._ask(_Phase.RELEASE, missing, command)

    def _stall(self, reason: str) -> None:
        if self._failures:
            failed = "; ".join(
                f"aggregator {j}: {why}" for j, why in sorted(self._failures.items())
            )
            reason = f"{reason} ({failed})"
        self._failures = {}
        self._phase = _Phase.STALLED
        self._stalled_since = None
        if reason != self._stall_reason:
            self._outbox.append(AggregationStalled(self.round_id, reason))
        self._stall_reason = reason

    def _exclude(self, clients: dict[str, str]) -> None:
        by_reason: dict[str, list[str]] = {}
        for client, reason in clients.items():
            if client not in self._excluded:
                self._excluded[client] = reason
                by_reason.setdefault(reason, []).append(client)
        for reason, group in by_reason.items():
            self._outbox.append(ClientsExcluded(self.round_id, tuple(group), reason))

    def _advance(self) -> None:
        {
            _Phase.HOLDINGS: self._plan,
            _Phase.VERIFY: self._decide,
            _Phase.COMMIT: self._certify,
            _Phase.DEAL: self._collect_deals,
            _Phase.RELEASE: self._reconstruct,
        }[self._phase]()

    def _plan(self) -> None:
        reporters = self._cohort.participant_ids
        held_by = {
            client: {j for j, clients in self._holdings.items() if client in clients}
            for client in reporters
        }
        try:
            plan = plan_aggregation(
                held_by,
                alive=self._holdings.keys(),
                threshold=self._config.threshold,
                min_participants=self._min_participants,
            )
        except ProtocolError as exc:
            self._stall(
                f"{len(self._holdings)} of {self._config.num_aggregators} aggregators "
                f"answered, and {str(exc).rstrip('.')}"
            )
            return
        holders = ", ".join(str(j) for j in plan.aggregators)
        self._exclude(
            {
                c: f"their shares are not held by every aggregator the round verifies with "
                f"({holders}): a receipt that named aggregators it never reached, or an "
                "upload that failed"
                for c in reporters
                if c not in set(plan.participants)
            }
        )
        self._candidates = plan.participants
        self._holders = plan.aggregators
        self._ask_verification()

    def _decide(self) -> None:
        t = self._config.threshold
        if len(self._answers) < t:
            self._stall(
                f"{len(self._answers)} of the {t} aggregators needed answered the verification"
            )
            return
        params = self._layout.bounds
        responders = tuple(sorted(self._answers))
        valid, invalid = [], {}
        for client in self._candidates:
            verdict = decide(
                [self._answers[j][client] for j in responders], params=params, threshold=t
            )
            if verdict.valid:
                valid.append(client)
            else:
                assert verdict.reason is not None
                invalid[client] = f"its contribution failed verification: {verdict.reason.value}"
        self._exclude(invalid)
        if len(valid) < self._min_participants:
            self._stall(
                f"only {len(valid)} contributions verified; a release needs "
                f"{self._min_participants}"
            )
            return
        self._participants = tuple(valid)
        self._holders = responders
        self._ask_commitments()

    def _certify(self) -> None:
        assert self._participants is not None
        commitment = Commitment.of(self._run_id, self.round_id, self._participants)
        certificate = CommitmentCertificate(commitment, dict(self._signatures))
        try:
            certificate.verify(
                signing_keys=self._signing_keys,
                num_aggregators=self._config.num_aggregators,
                quorum=self._config.quorum,
            )
        except ProtocolError as exc:
            # Keep only valid signatures; ask the others again after the interval.
            self._signatures = {
                j: signature
                for j, signature in self._signatures.items()
                if j in self._signing_keys
                and verify_aggregator_signature(
                    self._signing_keys[j], commitment.message(), signature
                )
            }
            needed = self._config.quorum
            self._stall(f"{len(self._signatures)} of the {needed} commitments needed: {exc}")
            return
        self._certificate = certificate
        if self._dealt_noise:
            self._ask_deals()
        else:
            self._ask_for_shares()

    def _collect_deals(self) -> None:
        m = self._config.num_aggregators
        if len(self._deals) < m:
            missing = [j for j in self._everyone() if j not in self._deals]
            self._stall(
                f"{len(self._deals)} of the {m} aggregators dealt their noise; every one must "
                f"deal before a sum is released (missing {missing})"
            )
            return
        self._ask_for_shares()

    def _reconstruct(self) -> None:
        assert self._participants is not None
        t = self._config.threshold
        if len(self._shares) < t:
            self._stall(
                f"{len(self._shares)} of the {t} aggregate shares needed arrived "
                f"(asked aggregators {list(self._holders)})"
            )
            return
        kept = self._cohort.restricted_to(self._participants)
        try:
            self._result = reconstruct_aggregate(
                [self._shares[j] for j in sorted(self._shares)],
                layout=self._layout,
                participants=kept.participant_ids,
                trained_versions=tuple(p.trained_version for p in kept.participants),
            )
        except (ReconstructionError, ProtocolError) as exc:
            self._shares = {}  # ask every holder again after the retry interval
            self._stall(f"the aggregate shares do not reconstruct: {str(exc).rstrip('.')}")
            return
        self._phase = _Phase.DONE
