"""DP-FTRL's tree noise, generated and held by the aggregators (pure state machine).

Under DP-FTRL (:mod:`veilfl.privacy.dp_ftrl`) every dyadic block of rounds gets
Gaussian noise once, and the prefix sum after t rounds carries the noise of the
blocks that cover [1, t] (:mod:`veilfl.privacy.tree`). Here nobody ever sees a
noiseless sum, the coordinator included:

* **Who draws the noise.** For the block that enters the cover at step t, each of
  the m aggregators draws a discrete Gaussian vector (Canonne, Kamath and Steinke
  2020) of variance sigma^2 / h, h = m - t + 1 (with t the Shamir threshold). Fewer
  than t colluding aggregators know at most t - 1 of these vectors; the h or more
  others add variance at least sigma^2. (As for the clients' distributed noise, a
  sum of discrete Gaussians is not exactly one; Kairouz, Liu and Steinke 2021 bound
  the difference, negligible at these scales.)
* **How it is shared.** The dealer Shamir-shares its vector t-of-m over the
  aggregators' field. The shares of t - 1 recipients (the next t - 1 indices after
  the dealer's, cyclically) are *seed-expanded*: the dealer fixes the sharing
  polynomial by the secret at x = 0 and by pseudorandom values at those t - 1
  points, expanded from 32-byte seeds, and sends those recipients only the seeds;
  it interpolates everyone else's share. A degree t - 1 polynomial is a bijective
  function of its values at t points, so fixing t - 1 of them to uniform values
  gives exactly the distribution of uniform coefficients: any t - 1 shares are
  still independent of the secret. The edge seals each :class:`NoiseDeal` to its
  recipient and relays it through the coordinator.
* **What an aggregator releases.** At step t it receives its share a_t of the
  round's aggregate (the sum of the clients' shares it holds) and releases its
  share of ``a_t + noise(added block) - sum noise(removed blocks)``, the change of
  the noised prefix sum (:func:`~veilfl.privacy.tree.cover_change`). The
  coordinator reconstructs that change from any t aggregators and adds it to the
  previous noised prefix sum. Summed over steps 1..t the changes telescope to
  ``S_t + sum of the noise of cover(t)``: exactly the tree mechanism, with every
  block's noise reused, never redrawn.

Why release changes rather than prefix sums (a simpler design than keeping a running
sum share): the two are the same information (each is a sum or a difference of the
other), but a change is a one-round quantity, so the field only has to hold one
round's sum plus a few blocks' noise, however many rounds the run has; a prefix sum
grows with every round until it wraps modulo p. An aggregator also forgets a block
as soon as it leaves the cover, so it holds at most floor(log2 T) + 2 noise shares.

Safety rules the state machine enforces:

* A step is released with **one** aggregate only. Releasing step t twice with two
  different aggregates under the same block noise would hand out the difference of
  two aggregates without noise. A repeated request with the same aggregate gets the
  same share back (restart-safe); a different one is refused.
* Steps are released in order, and only once every dealer's share of the entering
  block has arrived (a block with a missing dealer could carry less noise than
  charged).

Two schedules share this machinery (:attr:`TreeNoiseConfig.schedule`):

* ``"tree"`` (DP-FTRL): step t adds the block entering the cover and removes the
  blocks leaving it, as above.
* ``"fresh"`` (DP-FedAvg under distributed placement): step s adds block (0, s) and
  removes nothing, so every release carries its own, freshly dealt noise. Steps need
  not be consecutive (a DP-FedAvg round released at step = its round id, and an
  abandoned round's id is never reused), only increasing; a block is forgotten once a
  later step is released.

* ``"toeplitz"`` (a banded matrix factorisation, or any lower-triangular Toeplitz
  strategy with integer coefficients c_0 .. c_(b-1), :attr:`TreeNoiseConfig.coefficients`):
  step t adds block (0, t) like ``fresh``, but releases the share of
  ``sum_j c_j a_(t-j) + noise(0, t)`` (:class:`~veilfl.privacy.mf_stream.StreamingEncoder`:
  each aggregator keeps its shares of the last b - 1 aggregates) on the leading
  :attr:`TreeNoiseConfig.encoded_length` coordinates (the update), and of the plain
  ``a_t + noise(0, t)`` on the others (weight, loss, evaluation). Steps are
  consecutive, as under ``tree``, since the strategy combines consecutive rounds
  (:mod:`veilfl.privacy.integer_strategy` gives the design and its privacy).

A per-coordinate noise profile (:attr:`TreeNoiseConfig.profile`) lets the update
coordinates, the count of unclipped updates and the weight and loss coordinates get
different standard deviations (none for the last two).

Each release is also bound to the round it carries: a round is released at exactly
one step and a step for exactly one round, so a coordinator cannot collect two noisy
views of one sum (whose average would carry less noise than charged).

Restart safety: :meth:`TreeNoiseAggregator.to_bytes` holds the whole state,
including the seeds this aggregator dealt from (so that a redealt block is
bit-for-bit the same and recipients accept it again) and its noise shares. It is
secret: store it like the share spool (owner-only, written durably) before sending
any deal or release it produced.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from veilfl.crypto.csprng import KEY_LENGTH, CsprngStream
from veilfl.crypto.field import MERSENNE_31, FieldArray, PrimeField
from veilfl.crypto.shamir import MAX_SHARES, Share
from veilfl.errors import ConfigurationError, ProtocolError, StorageError, WireFormatError
from veilfl.privacy.mechanisms.schedule import ReleaseTerms, dealt_schedule_named
from veilfl.privacy.mf_stream import StreamingEncoder, StreamState
from veilfl.privacy.noise import discrete_gaussian
from veilfl.privacy.tree import TreeNode, cover

__all__ = ["NoiseDeal", "NoiseSchedule", "TreeNoiseAggregator", "TreeNoiseConfig"]

NoiseSchedule = str
"""A dealt schedule's name: ``"tree"``, ``"fresh"`` or ``"toeplitz"``
(:func:`~veilfl.privacy.mechanisms.schedule.dealt_schedule_named`)."""

_DEAL_MAGIC = b"VFND"
_STATE_MAGIC = b"VFTN"
_FORMAT_VERSION = 2
"""The noise deals' wire format."""
_STATE_VERSION = 3
"""The stored state's format: 3 adds the Toeplitz coefficients and encoder."""
_READABLE_STATE_VERSIONS = (2, 3)
_DEAL_HEADER = struct.Struct(
    "<4sBBIBBBI"
)  # magic, version, level, index, dealer, recipient, kind, length


@dataclass(frozen=True)
class TreeNoiseConfig:
    """What every aggregator must agree on.

    Attributes:
        num_aggregators: m.
        threshold: t, the Shamir threshold (fewer than t aggregators learn nothing).
            With t = 1 every aggregator holds every dealer's whole noise vector, so
            each one alone could remove the noise: use t >= 2.
        length: Field elements per vector (the shared update's length).
        block_stddev: sigma, each block's noise standard deviation in the field's
            integer units (:meth:`veilfl.privacy.dp_ftrl.TreeDpConfig.block_stddev`
            of the per-update bound C·scale + sqrt(d)/2).
        noised_length: How many leading coordinates get noise (default: all).
        field: The field shares live in.
        schedule: ``"tree"`` (DP-FTRL's cover changes) or ``"fresh"`` (one new block
            per release; see the module docstring).
        profile: Optional per-coordinate standard deviations as (count, sigma)
            segments in order, covering all ``length`` coordinates; overrides
            ``block_stddev``/``noised_length`` for what is drawn (``block_stddev``
            then names the largest sigma, for reporting).
        coefficients: The integer coefficients c_0 .. c_(b-1) of the ``"toeplitz"``
            schedule (none for the others).
        encoded_length: How many leading coordinates the ``"toeplitz"`` strategy
            combines (default: all); the others are released as the round's plain sum
            plus its block, as under ``fresh`` (a contribution's weight, loss and
            evaluation coordinates, which the decoder does not read).

    Raises:
        ConfigurationError: for invalid values.
    """

    num_aggregators: int
    threshold: int
    length: int
    block_stddev: float
    noised_length: int | None = None
    field: PrimeField = MERSENNE_31
    schedule: NoiseSchedule = "tree"
    profile: tuple[tuple[int, float], ...] = ()
    coefficients: tuple[int, ...] = ()
    encoded_length: int | None = None

    def __post_init__(self) -> None:
        # refuses an unknown name, and coefficients that do not fit the schedule
        dealt_schedule_named(self.schedule, coefficients=self.coefficients)
        if self.profile and (
            sum(count for count, _ in self.profile) != self.length
            or any(
                count < 0 or not (sigma >= 0 and math.isfinite(sigma))
                for count, sigma in self.profile
            )
        ):
            raise ConfigurationError(
                "A noise profile's segments must cover the vector's length with "
                "finite, non-negative standard deviations."
            )
        if not 1 <= self.threshold <= self.num_aggregators <= MAX_SHARES:
            raise ConfigurationError(
                f"Tree noise needs 1 <= threshold <= aggregators <= {MAX_SHARES}; got "
                f"threshold {self.threshold} of {self.num_aggregators}."
            )
        if self.length < 1:
            raise ConfigurationError("The shared vectors need at least one coordinate.")
        if self.encoded_length is not None and not 1 <= self.encoded_length <= self.length:
            raise ConfigurationError("encoded_length must be between 1 and the vector length.")
        if self.noised_length is not None and not 0 <= self.noised_length <= self.length:
            raise ConfigurationError("noised_length must be between 0 and the vector length.")
        if not (self.block_stddev > 0 and math.isfinite(self.block_stddev)):
            raise ConfigurationError("The tree noise needs a positive standard deviation.")

    @property
    def honest_minimum(self) -> int:
        """h = m - t + 1: aggregators outside any coalition of t - 1."""
        return self.num_aggregators - self.threshold + 1

    @property
    def dealer_stddev(self) -> float:
        """Each aggregator's noise standard deviation per block: sigma / sqrt(h)."""
        return self.block_stddev / math.sqrt(self.honest_minimum)

    @property
    def noised(self) -> int:
        """Leading coordinates that get noise."""
        return self.length if self.noised_length is None else self.noised_length

    @property
    def encoded(self) -> int:
        """Leading coordinates the ``"toeplitz"`` strategy combines."""
        return self.length if self.encoded_length is None else self.encoded_length

    @property
    def segments(self) -> tuple[tuple[int, float], ...]:
        """The (count, sigma) segments of the noise, in order: the profile, or the
        first ``noised`` coordinates at ``block_stddev`` and the rest at 0."""
        if self.profile:
            return self.profile
        return ((self.noised, self.block_stddev), (self.length - self.noised, 0.0))

    def terms(self, step: int) -> ReleaseTerms:
        """What release ``step`` combines, as the schedule says
        (:mod:`veilfl.privacy.mechanisms.schedule`)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ConfigurationError(f"Noise steps count from 1; got {step!r}.")
        return dealt_schedule_named(self.schedule, coefficients=self.coefficients).terms(step)

    @property
    def fresh_blocks(self) -> bool:
        """Whether every step adds its own block (0, step) and removes none
        (``"fresh"`` and ``"toeplitz"``)."""
        return self.schedule != "tree"

    def added(self, step: int) -> TreeNode:
        """The block whose noise enters at ``step``."""
        (added,) = self.terms(step).added
        return added

    def removed(self, step: int) -> tuple[TreeNode, ...]:
        """The blocks whose noise leaves at ``step`` (none under ``fresh`` or ``toeplitz``)."""
        return self.terms(step).removed

    def release_stddev(self, step: int) -> float:
        """The noise standard deviation per coordinate in step ``step``'s release: one
        block enters and ``len(removed)`` leave, each with m sigma^2 / h in total (the
        field must hold the round's sum plus several times this)."""
        blocks = 1 + len(self.removed(step))
        return self.dealer_stddev * math.sqrt(self.num_aggregators * blocks)

    def seeded_recipients(self, dealer: int) -> tuple[int, ...]:
        """The t - 1 aggregators whose share of ``dealer``'s noise is a seed."""
        m = self.num_aggregators
        return tuple((dealer + offset - 1) % m + 1 for offset in range(1, self.threshold))


@dataclass(frozen=True, eq=False)
class NoiseDeal:
    """One aggregator's share of one dealer's noise for one block.

    Exactly one of ``seed`` (a seed-expanded share) and ``values`` is set.

    Attributes:
        node: The block.
        dealer: The aggregator that drew the noise.
        recipient: The aggregator this share is for.
        seed: 32 bytes expanding to the share, or None.
        values: The share, or None.
    """

    node: TreeNode
    dealer: int
    recipient: int
    seed: bytes | None = None
    values: FieldArray | None = field(default=None)

    def __repr__(self) -> str:  # never print a seed or a share
        kind = "seed" if self.seed is not None else "values"
        return (
            f"NoiseDeal(node=({self.node.level}, {self.node.index}), dealer={self.dealer}, "
            f"recipient={self.recipient}, {kind})"
        )

    def to_bytes(self) -> bytes:
        """The deal's binary form (to seal to the recipient)."""
        if self.seed is not None:
            header = _DEAL_HEADER.pack(
                _DEAL_MAGIC,
                _FORMAT_VERSION,
                self.node.level,
                self.node.index,
                self.dealer,
                self.recipient,
                0,
                KEY_LENGTH,
            )
            return header + self.seed
        assert self.values is not None
        header = _DEAL_HEADER.pack(
            _DEAL_MAGIC,
            _FORMAT_VERSION,
            self.node.level,
            self.node.index,
            self.dealer,
            self.recipient,
            1,
            self.values.size,
        )
        return header + np.asarray(self.values).astype("<u4").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, *, config: TreeNoiseConfig) -> NoiseDeal:
        """Parse and check :meth:`to_bytes` output.

        Raises:
            WireFormatError: naming what is malformed.
        """
        if len(data) < _DEAL_HEADER.size:
            raise WireFormatError("The noise deal is too short to hold its header.")
        magic, version, level, index, dealer, recipient, kind, length = _DEAL_HEADER.unpack_from(
            data
        )
        if magic != _DEAL_MAGIC or version != _FORMAT_VERSION:
            raise WireFormatError(
                "The data is not a noise deal in this veilfl's format; use the same veilfl "
                "version on every aggregator."
            )
        body = data[_DEAL_HEADER.size :]
        try:
            node = TreeNode(level, index)
        except ConfigurationError as error:
            raise WireFormatError(f"The noise deal names no tree block ({error}).") from None
        if kind == 0 and length == KEY_LENGTH and len(body) == KEY_LENGTH:
            return cls(node, dealer, recipient, seed=bytes(body))
        if kind == 1 and length == config.length and len(body) == 4 * length:
            values = np.frombuffer(body, dtype="<u4").astype(np.uint64)
            if int(values.max()) >= config.field.modulus:
                raise WireFormatError("The noise deal has values outside the field.")
            return cls(node, dealer, recipient, values=values)
        raise WireFormatError(
            f"The noise deal's body ({len(body)} bytes) does not match its kind and length; "
            f"this run's vectors have {config.length} values."
        )


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _lagrange_at(points: Sequence[int], target: int, field: PrimeField) -> list[int]:
    """``l_b(target)`` for each b in ``points``: f(target) = sum l_b f(b) for deg < len."""
    p = field.modulus
    weights = []
    for b in points:
        numerator, denominator = 1, 1
        for c in points:
            if c != b:
                numerator = numerator * (target - c) % p
                denominator = denominator * (b - c) % p
        weights.append(numerator * pow(denominator, -1, p) % p)
    return weights


def _combine(
    vectors: Sequence[FieldArray], weights: Sequence[int], field: PrimeField
) -> FieldArray:
    """``sum w_i v_i`` mod p, reducing after every product (each below 2**62)."""
    total = np.zeros(vectors[0].size, dtype=np.uint64)
    for vector, weight in zip(vectors, weights, strict=True):
        total += vector * np.uint64(weight) % field.p
        np.remainder(total, field.p, out=total)
    return total


class TreeNoiseAggregator:
    """Aggregator ``index``'s part of the tree noise (see the module docstring).

    Args:
        config: The settings every aggregator shares.
        index: This aggregator's Shamir index, 1..m.
        rng: Where the per-block dealing seeds come from (default: a stream keyed
            from ``os.urandom``).

    Raises:
        ConfigurationError: for an index outside 1..m.
    """

    def __init__(
        self, config: TreeNoiseConfig, *, index: int, rng: CsprngStream | None = None
    ) -> None:
        if not 1 <= index <= config.num_aggregators:
            raise ConfigurationError(
                f"Aggregator index {index} is outside 1..{config.num_aggregators}."
            )
        self._config = config
        self._index = index
        self._rng = rng or CsprngStream()
        self._released = 0
        self._last_round: int | None = None
        self._last_digest: str | None = None
        self._last_values: FieldArray | None = None
        self._shares: dict[TreeNode, FieldArray] = {}
        self._dealers: dict[TreeNode, dict[int, str]] = {}
        self._seeds: dict[TreeNode, bytes] = {}
        self._encoder: StreamingEncoder | None = (
            StreamingEncoder(
                coefficients=config.coefficients, field=config.field, length=config.encoded
            )
            if config.schedule == "toeplitz"
            else None
        )

    @property
    def config(self) -> TreeNoiseConfig:
        """The settings every aggregator shares."""
        return self._config

    @property
    def index(self) -> int:
        """This aggregator's Shamir index."""
        return self._index

    @property
    def released_steps(self) -> int:
        """Tree steps released so far."""
        return self._released

    @property
    def last_round(self) -> int | None:
        """The round of the last release (None before the first, or when releases
        are not bound to rounds)."""
        return self._last_round

    def _check_live(self, node: TreeNode) -> None:
        if self._config.fresh_blocks:
            if node.level != 0 or node.index < self._released:
                raise ProtocolError(
                    f"Block ({node.level}, {node.index}) is not a fresh block after step "
                    f"{self._released}; its noise is no longer needed."
                )
            return
        if node.index % 2 == 0:
            raise ProtocolError(
                f"Block ({node.level}, {node.index}) is never in a cover and gets no noise."
            )
        if node.last <= self._released and node not in cover(self._released):
            raise ProtocolError(
                f"Block ({node.level}, {node.index}) already left the cover at step "
                f"{self._released}; its noise is no longer needed."
            )

    # -- dealing -------------------------------------------------------------------

    def deal(self, step: int) -> list[NoiseDeal]:
        """This aggregator's noise for the block entering the cover at ``step``, as
        one deal per other aggregator. Calling it again (after a restart too)
        returns the same deals.

        Raises:
            ProtocolError: if that block already left the cover.
        """
        node = self._config.added(step)
        self._check_live(node)
        seed = self._seeds.get(node)
        if seed is None:
            seed = self._rng.random_bytes(KEY_LENGTH)
            self._seeds[node] = seed
        config = self._config
        node_rng = CsprngStream(key=seed)  # a secret, uniformly random key: a PRG
        scale = 1.0 / math.sqrt(config.honest_minimum)
        noise = np.concatenate(
            [
                discrete_gaussian(node_rng, sigma=sigma * scale, count=count)
                for count, sigma in config.segments
            ]
        )
        secret = np.mod(noise, config.field.modulus).astype(np.uint64)
        seeded = config.seeded_recipients(self._index)
        seeds = [node_rng.random_bytes(KEY_LENGTH) for _ in seeded]
        basis_points = [0, *seeded]
        basis_values = [secret] + [
            CsprngStream(key=s).uniform_field(config.field, config.length) for s in seeds
        ]
        deals = []
        for recipient in range(1, config.num_aggregators + 1):
            if recipient in seeded:
                deals.append(
                    NoiseDeal(node, self._index, recipient, seed=seeds[seeded.index(recipient)])
                )
                continue
            values = _combine(
                basis_values, _lagrange_at(basis_points, recipient, config.field), config.field
            )
            if recipient == self._index:
                self._add(node, self._index, _digest(b"own:" + seed), values)
            else:
                deals.append(NoiseDeal(node, self._index, recipient, values=values))
        return deals

    def receive(self, deal: NoiseDeal) -> None:
        """Add another aggregator's share of its noise for a block. The same deal
        twice is accepted once; a different one from the same dealer is refused.

        Raises:
            ProtocolError: for a deal meant for another aggregator, from an unknown
                dealer or this one, for a block that gets no noise or left the
                cover, of the wrong kind for this recipient, or conflicting with
                an earlier one.
        """
        config = self._config
        if deal.recipient != self._index:
            raise ProtocolError(
                f"This noise deal is for aggregator {deal.recipient}, not {self._index}."
            )
        if not 1 <= deal.dealer <= config.num_aggregators or deal.dealer == self._index:
            raise ProtocolError(f"Aggregator {deal.dealer} cannot deal noise to {self._index}.")
        self._check_live(deal.node)
        seeded = self._index in config.seeded_recipients(deal.dealer)
        if seeded != (deal.seed is not None) or (deal.seed is None) == (deal.values is None):
            raise ProtocolError(
                f"Aggregator {deal.dealer}'s share for {self._index} must be a "
                + ("seed." if seeded else "vector of values.")
            )
        if deal.seed is not None:
            if len(deal.seed) != KEY_LENGTH:
                raise ProtocolError("A seed-expanded noise share needs a 32-byte seed.")
            digest = _digest(deal.seed)
            values = CsprngStream(key=deal.seed).uniform_field(config.field, config.length)
        else:
            assert deal.values is not None
            values = np.asarray(deal.values, dtype=np.uint64)
            if values.shape != (config.length,) or (
                values.size and int(values.max()) >= config.field.modulus
            ):
                raise ProtocolError(f"A noise share must hold {config.length} field elements.")
            digest = _digest(values.astype("<u4").tobytes())
        self._add(deal.node, deal.dealer, digest, values)

    def _add(self, node: TreeNode, dealer: int, digest: str, values: FieldArray) -> None:
        known = self._dealers.setdefault(node, {})
        if dealer in known:
            if known[dealer] != digest:
                raise ProtocolError(
                    f"Aggregator {dealer} already dealt a different share for block "
                    f"({node.level}, {node.index}); refusing the second."
                )
            return
        total = self._shares.get(node)
        self._shares[node] = (
            values.copy() if total is None else (total + values) % self._config.field.p
        )
        known[dealer] = digest

    def missing_dealers(self, step: int) -> tuple[int, ...]:
        """Aggregators whose share of the block entering at ``step`` has not arrived."""
        node = self._config.added(step)
        known = self._dealers.get(node, {})
        return tuple(j for j in range(1, self._config.num_aggregators + 1) if j not in known)

    def node_noise_share(self, node: TreeNode) -> Share:
        """This aggregator's share of a live block's total noise (every dealer's).

        Raises:
            ProtocolError: if the block is not held (not dealt yet, or retired).
        """
        values = self._shares.get(node)
        if values is None:
            raise ProtocolError(f"Block ({node.level}, {node.index}) is not held here.")
        return Share(index=self._index, values=values.copy())

    # -- releasing -------------------------------------------------------------------

    def release(self, step: int, aggregate: FieldArray, *, round_id: int | None = None) -> Share:
        """This aggregator's share of the noised release at ``step``.

        Args:
            step: The step: under ``tree``, released rounds 1, 2, ... (not round ids);
                under ``fresh``, any number above the last released step.
            aggregate: This aggregator's share of the round's aggregate.
            round_id: The round the aggregate sums, when releases are bound to rounds:
                each round is released at one step only, and rounds only increase.

        Returns:
            Its share of ``aggregate + noise(added block) - noise(removed blocks)``,
            or under ``toeplitz`` of ``sum_j c_j aggregate_(t-j) + noise(0, t)``.

        Raises:
            ProtocolError: for a step out of order, a step already released with a
                different aggregate or round, a round already released (or older than
                one released), a malformed aggregate, or a block whose dealers have not
                all dealt.
        """
        config = self._config
        aggregate = np.asarray(aggregate, dtype=np.uint64)
        if aggregate.shape != (config.length,) or (
            aggregate.size and int(aggregate.max()) >= config.field.modulus
        ):
            raise ProtocolError(f"The aggregate share must hold {config.length} field elements.")
        digest = _digest(aggregate.astype("<u4").tobytes())
        if step == self._released and step > 0:
            if digest != self._last_digest or round_id != self._last_round:
                raise ProtocolError(
                    f"Step {step} was already released over another aggregate or round; "
                    "releasing it again would reveal the difference of the two without noise."
                )
            assert self._last_values is not None
            return Share(index=self._index, values=self._last_values.copy())
        if round_id is not None and self._last_round is not None and round_id <= self._last_round:
            raise ProtocolError(
                f"Round {round_id} cannot be released at step {step}: round "
                f"{self._last_round} was already released (at step {self._released}), and a "
                "round gets one noisy release only (two would average the noise down)."
            )
        in_order = (
            step > self._released if config.schedule == "fresh" else step == self._released + 1
        )
        if not in_order:
            raise ProtocolError(
                f"Noise steps are released in order: step {step} cannot follow step "
                f"{self._released}."
            )
        missing = self.missing_dealers(step)
        if missing:
            raise ProtocolError(
                f"Step {step} cannot be released yet: aggregators {list(missing)} have not "
                "dealt their noise for it."
            )
        added, removed = config.added(step), config.removed(step)
        if self._encoder is not None:
            noise, head = self._shares[added], config.encoded
            value = np.concatenate(
                [
                    self._encoder.release(aggregate[:head], noise[:head]),
                    (aggregate[head:] + noise[head:]) % config.field.p,
                ]
            )
        else:
            value = (aggregate + self._shares[added]) % config.field.p
        for node in removed:
            value = config.field.sub(value, self._shares[node])
        self._released = step
        self._last_round = round_id
        self._last_digest = digest
        self._last_values = value
        stale = (
            [node for node in self._dealers if node.index < step]
            if config.fresh_blocks
            else list(removed)
        )
        for node in stale:
            self._forget(node)
        return Share(index=self._index, values=value.copy())

    def _forget(self, node: TreeNode) -> None:
        self._shares.pop(node, None)
        self._dealers.pop(node, None)
        self._seeds.pop(node, None)

    # -- persistence -----------------------------------------------------------------

    def _header(self) -> dict[str, Any]:
        config = self._config
        nodes = sorted(self._dealers)
        return {
            "version": _STATE_VERSION,
            "index": self._index,
            "num_aggregators": config.num_aggregators,
            "threshold": config.threshold,
            "length": config.length,
            "noised_length": config.noised,
            "block_stddev": config.block_stddev,
            "modulus": config.field.modulus,
            "schedule": config.schedule,
            "profile": [[count, sigma] for count, sigma in config.segments],
            "coefficients": list(config.coefficients),
            "encoded_length": config.encoded,
            "encoder": None if self._encoder is None else self._encoder.state().to_json(),
            "released": self._released,
            "last_round": self._last_round,
            "last_digest": self._last_digest,
            "nodes": [
                {
                    "level": node.level,
                    "index": node.index,
                    "dealers": {str(j): d for j, d in sorted(self._dealers[node].items())},
                    "seed": self._seeds[node].hex() if node in self._seeds else None,
                }
                for node in nodes
            ],
        }

    def to_bytes(self) -> bytes:
        """The whole state (secret: it holds dealing seeds and noise shares)."""
        header = json.dumps(self._header(), sort_keys=True).encode()
        arrays = [self._shares[node] for node in sorted(self._dealers)]
        if self._last_values is not None:
            arrays.append(self._last_values)
        body = b"".join(np.asarray(a).astype("<u4").tobytes() for a in arrays)
        return _STATE_MAGIC + struct.pack("<I", len(header)) + header + body

    @classmethod
    def from_bytes(
        cls,
        data: bytes,
        *,
        config: TreeNoiseConfig,
        index: int,
        rng: CsprngStream | None = None,
    ) -> TreeNoiseAggregator:
        """Rebuild the state :meth:`to_bytes` wrote, for the same settings.

        Raises:
            StorageError: if the data is damaged or was written for other settings.
        """
        state = cls(config, index=index, rng=rng)
        try:
            if data[:4] != _STATE_MAGIC:
                raise ValueError("not a tree-noise state")
            (size,) = struct.unpack_from("<I", data, 4)
            header = json.loads(data[8 : 8 + size])
            if header.get("version") not in _READABLE_STATE_VERSIONS:
                raise ValueError(f"format version {header.get('version')!r} is not readable")
            expected = {
                "index": index,
                "num_aggregators": config.num_aggregators,
                "threshold": config.threshold,
                "length": config.length,
                "noised_length": config.noised,
                "block_stddev": config.block_stddev,
                "modulus": config.field.modulus,
                "schedule": config.schedule,
                "profile": [[count, sigma] for count, sigma in config.segments],
                "coefficients": list(config.coefficients),
                "encoded_length": config.encoded,
            }
            header.setdefault("coefficients", [])  # version 2: no Toeplitz schedule
            header.setdefault("encoded_length", config.length)
            differing = sorted(k for k, v in expected.items() if header.get(k) != v)
            if differing:
                raise ConfigurationError(f"it was written with other {', '.join(differing)}")
            body = np.frombuffer(data, dtype="<u4", offset=8 + size).astype(np.uint64)
            count = len(header["nodes"]) + (header["last_digest"] is not None)
            if body.size != count * config.length:
                raise ValueError("the arrays do not match the header")
            if body.size and int(body.max()) >= config.field.modulus:
                raise ValueError("values outside the field")
            vectors = body.reshape(count, config.length)
            for position, entry in enumerate(header["nodes"]):
                node = TreeNode(int(entry["level"]), int(entry["index"]))
                state._shares[node] = vectors[position].copy()
                state._dealers[node] = {int(j): str(d) for j, d in entry["dealers"].items()}
                if entry["seed"] is not None:
                    state._seeds[node] = bytes.fromhex(entry["seed"])
            if state._encoder is not None and header.get("encoder") is not None:
                state._encoder = StreamingEncoder.from_state(
                    StreamState.from_json(header["encoder"]), field=config.field
                )
            state._released = int(header["released"])
            if state._encoder is not None and state._encoder.steps != state._released:
                raise ValueError("the encoder's steps do not match the released steps")
            last_round = header["last_round"]
            state._last_round = None if last_round is None else int(last_round)
            if header["last_digest"] is not None:
                state._last_digest = str(header["last_digest"])
                state._last_values = vectors[-1].copy()
        except (
            ValueError,
            KeyError,
            TypeError,
            struct.error,
            ConfigurationError,
            StorageError,
        ) as error:
            raise StorageError(
                f"The stored tree-noise state cannot be used ({error}); restore the file this "
                "aggregator wrote for this run, with the run's settings."
            ) from None
        return state
