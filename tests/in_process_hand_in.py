"""Test support: one client's update of a tiny model handed in to a coordinator core and
in-process aggregators, through the real hand-in pipeline (``SimulatedHandIn``)."""

from __future__ import annotations

import numpy as np

from veilfl.crypto.csprng import CsprngStream
from veilfl.ml.learner import LocalUpdate
from veilfl.privacy.dp_fedavg import ClientPrivacyPlan
from veilfl.protocol.client_policy import ClientPolicy
from veilfl.protocol.coordinator import Coordinator
from veilfl.protocol.hand_in import HandInContext
from veilfl.protocol.messages import RunInfo
from veilfl.sim.hand_in import SimulatedHandIn
from veilfl.sim.in_process_aggregators import InProcessAggregators

__all__ = ["hand_in"]


def hand_in(
    core: Coordinator,
    aggregators: InProcessAggregators,
    run: RunInfo,
    client: str,
    value: float,
    *,
    now: float,
    round_id: int = 1,
    weight: float | None = None,
    privacy: ClientPrivacyPlan | None = None,
) -> bool:
    """Hand in ``client``'s update (every coordinate ``value``, 100 samples, loss 0.5)
    for ``round_id``, under the task's ``privacy`` plan; whether the coordinator took
    it."""
    hand = SimulatedHandIn(
        core,
        core.spec,
        aggregators=aggregators,
        csprng=CsprngStream(),
        policy=ClientPolicy.accepting(run, min_cohort=2),
    )
    result = hand.deliver(
        LocalUpdate(delta={"w": np.full(3, value, np.float32)}, num_samples=100, mean_loss=0.5),
        context=HandInContext(
            client_id=client,
            run=run,
            round_id=round_id,
            base_version=0,
            weight=weight,
            admission="in-process",
            privacy=privacy,
            aggregator_policies=aggregators.policies,
        ),
        now=now,
    )
    return result.taken
