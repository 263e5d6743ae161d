"""m aggregators living in the simulator's process, reached by function calls.

Under distributed DP they deal the noise, as HTTP aggregators do, once they are told
the run (:meth:`InProcessAggregators.attach`); their noise states live in memory.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Collection, Sequence

from veilfl.auth.identity import encode_public_key
from veilfl.crypto.csprng import CsprngStream
from veilfl.crypto.envelope import PublicKey
from veilfl.crypto.keys import AggregatorKeyPair, generate_keypair
from veilfl.errors import ConfigurationError, ProtocolError, VeilflError
from veilfl.protocol.aggregator_minimums import DEFAULT_MIN_PARTICIPANTS, fit_cohort
from veilfl.protocol.effects import (
    AggregateShareReported,
    AggregatorFailed,
    CollectAggregateShares,
    CollectCommitments,
    CollectHoldings,
    CollectNoiseDeals,
    CollectVerifierShares,
    CommitmentReported,
    Event,
    HoldingsReported,
    NoiseDealsReported,
    VerifierSharesReported,
)
from veilfl.protocol.messages import PublishedAggregator, RunInfo
from veilfl.protocol.run_description import dealt_noise_profile
from veilfl.protocol.run_spec import RunSpec
from veilfl.secagg.aggregator_node import AggregatorNode
from veilfl.secagg.aggregator_policy import AggregatorPolicy
from veilfl.secagg.aggregator_state import InMemoryShareArchive, ShareArchive
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.secagg.contribution import ContributionLayout, SealedShare
from veilfl.secagg.dealt_noise import dealt_noise_config
from veilfl.secagg.run_consent import RunConsent, sign_consent
from veilfl.secagg.tree_noise import TreeNoiseAggregator

__all__ = ["InProcessAggregators"]

logger = logging.getLogger(__name__)


def _memory_archive(round_id: int) -> ShareArchive:
    return InMemoryShareArchive()


def _signed_policy(index: int, keypair: AggregatorKeyPair, minimum: int) -> AggregatorPolicy:
    unsigned = AggregatorPolicy(
        index=index, fingerprint=keypair.fingerprint, min_participants=minimum
    )
    return AggregatorPolicy(
        index=index,
        fingerprint=keypair.fingerprint,
        min_participants=minimum,
        signature=keypair.sign(unsigned.statement()),
    )


class InProcessAggregators:
    """The simulator's aggregators; they answer the coordinator's commands in process.

    Args:
        config: Secure-aggregation parameters (m aggregators are made).
        run_id: The simulated run until :meth:`attach` names one (tests that drive the
            aggregators by hand).
        model_size: Parameters in the model.
        down: Aggregators that are unreachable for the whole simulation.
        min_participants: The fewest clients each aggregator sums over (its operator's
            setting, as on a real aggregator; by default an aggregator's default, 2).
        noise_seed: Keys the aggregators' noise draws (reproducible tests; default:
            ``os.urandom``).
    """

    def __init__(
        self,
        config: SecureAggregationConfig,
        *,
        run_id: str = "",
        model_size: int,
        down: Collection[int] = (),
        min_participants: int = DEFAULT_MIN_PARTICIPANTS,
        noise_seed: bytes | None = None,
    ) -> None:
        self.down: set[int] = set(down)
        """Aggregators unreachable now (a test may change it)."""
        self._noise_seed = noise_seed
        keypairs = [generate_keypair(config.kem) for _ in range(config.num_aggregators)]
        self._public_keys: list[PublicKey] = [k.public_key for k in keypairs]
        self._published = tuple(
            PublishedAggregator(
                index=index,
                url=f"inprocess://aggregator-{index}",
                kem=pair.kem,
                public_key=base64.b64encode(pair.public_bytes).decode(),
                signing_key=encode_public_key(pair.signing_public_bytes),
            )
            for index, pair in enumerate(keypairs, start=1)
        )
        self._policies = tuple(
            _signed_policy(index, pair, min_participants)
            for index, pair in enumerate(keypairs, start=1)
        )
        self._keypairs = keypairs
        self._run_id = run_id
        self._min_participants = min_participants
        self._layout = ContributionLayout(model_size, config)
        self.saved_noise: dict[int, bytes] = {}
        """Each aggregator's last saved noise state (what a spool would hold)."""
        self._nodes = self._make_nodes(None)

    def restart(self, run: RunInfo) -> None:
        """Every aggregator's process restarts and serves ``run`` again, its noise state
        read back from what it last saved (:attr:`saved_noise`, as a spool would hold
        it); shares received before are dropped.

        Raises:
            StorageError: if a saved noise state does not fit the run.
        """
        self._run_id = run.run_id
        self._nodes = self._make_nodes(run, restore=True)

    def _make_nodes(self, run: RunInfo | None, *, restore: bool = False) -> list[AggregatorNode]:
        keypairs, layout = self._keypairs, self._layout
        peers = {j: pair.signing_public_bytes for j, pair in enumerate(keypairs, start=1)}
        public_keys = {j: pair.public_key for j, pair in enumerate(keypairs, start=1)}
        dp = None if run is None else run.dp
        noise_config = None
        if dp is not None and dp.config.placement == "distributed":
            if dp.expected_clients is None:
                raise ConfigurationError(
                    "The run's DP description does not say how many clients it expects; "
                    "the aggregators cannot size the noise they deal."
                )
            noise_config = dealt_noise_config(
                dp.config, layout=layout, expected_clients=dp.expected_clients
            )
        nodes = []
        for index in range(1, layout.config.num_aggregators + 1):

            def save(data: bytes, index: int = index) -> None:
                self.saved_noise[index] = data

            nodes.append(
                AggregatorNode(
                    index=index,
                    keypair=keypairs[index - 1],
                    run_id=self._run_id,
                    layout=layout,
                    peers=peers,
                    archive_for_round=_memory_archive,
                    min_participants=self._min_participants,
                    noise=(
                        None
                        if noise_config is None
                        else TreeNoiseAggregator.from_bytes(
                            self.saved_noise[index],
                            config=noise_config,
                            index=index,
                            rng=self._noise_rng(index),
                        )
                        if restore and index in self.saved_noise
                        else TreeNoiseAggregator(
                            noise_config, index=index, rng=self._noise_rng(index)
                        )
                    ),
                    save_noise=save,
                    peer_public_keys=public_keys,
                    # One operator runs them all: the run's own setting is its consent.
                    allow_split_certificates=layout.config.allow_split_certificates,
                )
            )
        return nodes

    def _noise_rng(self, index: int) -> CsprngStream | None:
        if self._noise_seed is None:
            return None
        return CsprngStream(key=hashlib.sha256(self._noise_seed + bytes([index])).digest())

    def attach(self, run: RunInfo) -> tuple[RunConsent, ...]:
        """Serve ``run`` as its coordinator describes it (an HTTP aggregator learns the
        run the same way): under distributed DP each aggregator starts the run's noise
        state and deals noise into every sum. Shares already received are dropped.

        Returns:
            Each aggregator's signed consent to the run (what clients check).

        Raises:
            ConfigurationError: for a run whose aggregators are not these.
        """
        secure = run.secure
        if secure is None or secure.aggregators != self._published:
            raise ConfigurationError("The run does not name these aggregators.")
        self._run_id = run.run_id
        self._nodes = self._make_nodes(run)
        noise = dealt_noise_profile(run)
        return tuple(
            sign_consent(pair, index=index, run_id=run.run_id, noise=noise)
            for index, pair in enumerate(self._keypairs, start=1)
        )

    def node(self, index: int) -> AggregatorNode:
        """Aggregator ``index`` itself (tests)."""
        return self._nodes[index - 1]

    @property
    def public_keys(self) -> list[PublicKey]:
        """Aggregator j's public key at position j - 1."""
        return list(self._public_keys)

    @property
    def published(self) -> tuple[PublishedAggregator, ...]:
        """What a coordinator would publish about these aggregators."""
        return self._published

    @property
    def policies(self) -> tuple[AggregatorPolicy, ...]:
        """Each aggregator's signed policy (what ``GET /v1/policy`` serves)."""
        return self._policies

    @property
    def minimums(self) -> dict[int, int]:
        """Each aggregator's minimum cohort, by index."""
        return {policy.index: policy.min_participants for policy in self._policies}

    def fit(self, settings: RunSpec) -> RunSpec:
        """The simulated run's settings checked against these aggregators' minimums, as
        ``veilfl server`` checks its aggregators' at start-up: a smaller round, sample
        or buffer is refused; a smaller ``min_clients`` is raised to the largest minimum
        (logged once).

        Raises:
            ConfigurationError: naming the setting and the aggregators' minimum.
        """
        minimums = self.minimums
        fitted = fit_cohort(
            settings,
            minimums,
            min_clients_given=settings.rounds.min_clients >= max(minimums.values()),
        )
        if fitted.note is not None:
            logger.info("%s", fitted.note)
        return fitted.settings

    def upload(
        self, round_id: int, client_id: str, sealed: Sequence[SealedShare]
    ) -> tuple[int, ...]:
        """Deliver a client's sealed shares; return the indices that acknowledged."""
        acknowledged = []
        for share in sealed:
            if share.aggregator_index in self.down:
                continue
            try:
                self._nodes[share.aggregator_index - 1].receive(round_id, client_id, share.envelope)
            except VeilflError:
                continue  # refused, as an HTTP aggregator would answer 4xx
            acknowledged.append(share.aggregator_index)
        return tuple(acknowledged)

    def perform(
        self,
        command: CollectHoldings
        | CollectVerifierShares
        | CollectCommitments
        | CollectNoiseDeals
        | CollectAggregateShares,
    ) -> list[Event]:
        """Answer one of the coordinator's commands, one event per aggregator asked."""
        events: list[Event] = []
        round_id = command.round_id
        for index in command.aggregators:
            if index in self.down:
                events.append(AggregatorFailed(round_id, index, "it is down"))
                continue
            node = self._nodes[index - 1]
            try:
                if isinstance(command, CollectHoldings):
                    events.append(HoldingsReported(round_id, index, node.holdings(round_id)))
                elif isinstance(command, CollectVerifierShares):
                    answers = node.verify(round_id, command.clients, command.query_seed)
                    events.append(VerifierSharesReported(round_id, index, answers))
                elif isinstance(command, CollectCommitments):
                    signature = node.commit(round_id, command.participants)
                    events.append(CommitmentReported(round_id, index, signature))
                elif isinstance(command, CollectNoiseDeals):
                    deals = node.deal_noise(round_id, command.step)
                    events.append(NoiseDealsReported(round_id, index, deals))
                else:
                    share = node.aggregate(
                        round_id,
                        command.participants,
                        command.certificate,
                        noise_step=command.noise_step,
                        deals=command.deals.get(index, ()),
                    )
                    events.append(AggregateShareReported(round_id, index, share))
            except VeilflError as exc:
                events.append(
                    AggregatorFailed(round_id, index, str(exc), isinstance(exc, ProtocolError))
                )
        return events
