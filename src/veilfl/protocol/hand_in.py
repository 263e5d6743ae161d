"""How a client hands in one trained update: one sans-I/O pipeline for every client.

:func:`hand_in` is a generator in the style of httpx's auth flows: it does the pure
work (clip and noise under DP, encode, share and seal under secure aggregation), yields
each request it needs sent, and is resumed with the answer::

    flow = hand_in(delta, num_samples=..., loss=..., context=..., rng=..., policy=...,
                   evaluation=...)
    request = next(flow)
    while True:
        try:
            request = flow.send(perform(request))   # HTTP, or a function call
        except StopIteration as stop:
            result = stop.value
            break

The HTTP client (``veilfl.client``) and the simulators (``veilfl.sim``) drive this same
generator, so privatizing, sealing, counting acknowledgements, checking the threshold
and building the receipt are written once. So is the client's security policy
(:class:`~veilfl.protocol.client_policy.ClientPolicy`): the generator checks the run,
the privacy plan and the weight of the hand-in against it before its first request,
and raises :class:`~veilfl.errors.PolicyRefusal` instead of sending anything.

Under secure aggregation the weighted update ``w·Δ`` is clipped to the run's norm bound,
encoded with a proof of its bounds and shared t-of-m (:mod:`veilfl.secagg.contribution`).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from veilfl.crypto.csprng import CsprngStream
from veilfl.errors import ProtocolError
from veilfl.privacy.clipping import clip_l2
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan, privatize
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.messages import RunInfo, UpdateHeader
from veilfl.secagg.aggregator_policy import AggregatorPolicy
from veilfl.secagg.contribution import SealedShare, seal_contribution
from veilfl.strategy.federated_evaluation import FederatedEvaluation
from veilfl.tensors import Weights, flatten, spec_of, unflatten

__all__ = [
    "CoordinatorAnswer",
    "HandInContext",
    "HandInFlow",
    "HandInRequest",
    "HandInResult",
    "SendReceipt",
    "SendShares",
    "SendUpdate",
    "SharesTaken",
    "hand_in",
]


@dataclass(frozen=True)
class HandInContext:
    """Where one update goes.

    Attributes:
        client_id: The sending client.
        run: The run's description.
        round_id: The round (or buffer) the update is for.
        base_version: The model version it was trained from.
        weight: A buffered update's staleness weight (from its ticket); None in rounds.
        admission: The coordinator's admission to the round (secure aggregation).
        privacy: The round's DP plan, if any.
        aggregator_policies: The aggregators' signed policies (their minimum cohorts),
            as the client fetched them; the client's policy checks them.
        earlier_rounds: Rounds of this run the client has already handed in (DP-FTRL
            allows K in all).
    """

    client_id: str
    run: RunInfo
    round_id: int
    base_version: int
    weight: float | None = None
    admission: str | None = None
    privacy: ClientPrivacyPlan | None = None
    aggregator_policies: tuple[AggregatorPolicy, ...] = field(default=())
    earlier_rounds: int = 0


# --------------------------------------------------------------------- requests
@dataclass(frozen=True)
class SendShares:
    """Upload each sealed share to its aggregator, with the round's admission; answer
    with :class:`SharesTaken`."""

    client_id: str
    round_id: int
    shares: tuple[SealedShare, ...]
    admission: str


@dataclass(frozen=True)
class SendReceipt:
    """Tell the coordinator which aggregators took the shares; answer with
    :class:`CoordinatorAnswer`."""

    header: UpdateHeader


@dataclass(frozen=True)
class SendUpdate:
    """Upload a plaintext update to the coordinator; answer with
    :class:`CoordinatorAnswer`."""

    header: UpdateHeader
    delta: Weights


HandInRequest = SendShares | SendReceipt | SendUpdate


# ---------------------------------------------------------------------- answers
@dataclass(frozen=True)
class SharesTaken:
    """The aggregators that acknowledged their share."""

    aggregators: tuple[int, ...]


@dataclass(frozen=True)
class CoordinatorAnswer:
    """The coordinator's answer to an update or receipt.

    Attributes:
        accepted: Whether it counts (a duplicate of a counted one also counts).
        duplicate: It repeated one already counted.
        refusal: Why it was not taken (the round moved on, say), when not accepted.
    """

    accepted: bool
    duplicate: bool = False
    refusal: str | None = None


HandInAnswer = SharesTaken | CoordinatorAnswer


@dataclass(frozen=True)
class HandInResult:
    """How handing in went.

    Attributes:
        taken: The coordinator counts the update.
        duplicate: It had counted it already.
        reason: Why it was not taken.
    """

    taken: bool
    duplicate: bool = False
    reason: str | None = None


HandInFlow = Generator[HandInRequest, HandInAnswer, HandInResult]


def hand_in(
    delta: Weights,
    *,
    num_samples: int,
    loss: float,
    context: HandInContext,
    rng: CsprngStream,
    policy: ClientPolicy,
    evaluation: FederatedEvaluation | None = None,
) -> HandInFlow:
    """Privatize, protect and deliver one update (see the module docstring).

    Args:
        delta: The trained update (local minus global weights).
        num_samples: Local examples used (the FedAvg weight).
        loss: Mean local training loss.
        context: Where the update goes.
        rng: CSPRNG for DP noise and secret sharing.
        policy: What this client accepts; checked before the first request.
        evaluation: The client's federated evaluation of the model it received (on
            its own evaluation split), or None. It travels in the update's metadata in
            plaintext runs and inside the proven, secret-shared contribution under
            secure aggregation; under DP with secure aggregation it is not reported,
            like the training loss.

    Raises:
        PolicyRefusal: if the run, the privacy plan or the weight falls short of
            ``policy`` (nothing is sent).
        ProtocolError: under secure aggregation, if the coordinator gave no admission.
    """
    policy.check_hand_in(
        context.run,
        privacy=context.privacy,
        weight=context.weight,
        aggregator_policies=context.aggregator_policies,
        round_id=context.round_id,
        earlier_rounds=context.earlier_rounds,
    )
    spec = spec_of(delta)
    plan = context.privacy
    flat = flatten(delta, spec)
    within_bound = False
    if plan is not None:
        private = privatize(flat, plan=plan, rng=rng)
        flat, within_bound = private.vector.astype(np.float32), private.within_bound
    secure = context.run.secure
    if secure is None:
        header = UpdateHeader(
            client_id=context.client_id,
            round_id=context.round_id,
            base_version=context.base_version,
            num_samples=num_samples,
            loss=loss,
            evaluation=evaluation,
        )
        answer = yield SendUpdate(header, delta if plan is None else unflatten(flat, spec))
        return _result(answer)
    if not context.admission:
        raise ProtocolError(
            f"The coordinator gave no admission to round {context.round_id}; the aggregators "
            "would refuse the shares."
        )
    layout = secure.layout
    if context.weight is not None:
        weight = context.weight  # a buffered update's staleness weight
    elif plan is not None:
        weight = 1.0  # DP-FedAvg weighs every client the same
    else:
        weight = secure.config.client_weight(num_samples)
    weighted = clip_l2(flat.astype(np.float64) * weight, clip_norm=secure.config.norm_bound)
    measurement = layout.encode(
        weighted.vector,
        weight=weight,
        loss=0.0 if plan is not None else loss,  # under DP the loss is not reported
        # Only under adaptive clipping, whose count is noised and charged.
        unclipped=within_bound if plan is not None and plan.reports_bit else None,
        rng=rng,
        evaluation=None if plan is not None else evaluation,  # not reported under DP
    )
    sealed = seal_contribution(
        measurement,
        layout=layout,
        public_keys=[a.hpke_key() for a in secure.aggregators],
        run_id=context.run.run_id,
        round_id=context.round_id,
        client_id=context.client_id,
        rng=rng,
    )
    taken = yield SendShares(context.client_id, context.round_id, tuple(sealed), context.admission)
    if not isinstance(taken, SharesTaken):
        raise ProtocolError("A share upload must be answered with the aggregators that took it.")
    threshold = secure.config.threshold
    if len(taken.aggregators) < threshold:
        return HandInResult(
            taken=False,
            reason=f"only {len(taken.aggregators)} of the {threshold} aggregators needed took "
            "the shares",
        )
    answer = yield SendReceipt(
        UpdateHeader(
            client_id=context.client_id,
            round_id=context.round_id,
            base_version=context.base_version,
            aggregators=tuple(sorted(taken.aggregators)),
        )
    )
    return _result(answer)


def _result(answer: HandInAnswer) -> HandInResult:
    if not isinstance(answer, CoordinatorAnswer):
        raise ProtocolError("An upload must be answered with the coordinator's answer.")
    return HandInResult(taken=answer.accepted, duplicate=answer.duplicate, reason=answer.refusal)
