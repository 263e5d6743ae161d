"""What a round produces for people to read: evaluation results and round metrics."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from veilfl.strategy.federated_evaluation import FederatedEvaluation
from veilfl.tensors import Weights

__all__ = ["EvaluateFn", "Evaluation", "FederatedEvaluation", "RoundMetrics"]


@dataclass(frozen=True)
class Evaluation:
    """A model's loss and accuracy on held-out data.

    Attributes:
        loss: Mean loss.
        accuracy: Fraction of correct predictions, in [0, 1].
    """

    loss: float
    accuracy: float


@dataclass(frozen=True)
class RoundMetrics:
    """One completed round, as shown in tables, metrics files and plots.

    Attributes:
        round_id: The round.
        num_clients: Clients whose updates the round aggregated.
        train_loss: Sample-weighted mean of the clients' local training losses (None
            under DP with secure aggregation, where losses are not reported).
        test_loss: Server-side test loss of the new model, if evaluated.
        test_accuracy: Server-side test accuracy in [0, 1], if evaluated.
        seconds: Wall time from the round's opening to its new model.
        epsilon: Privacy spent so far against the public (anyone who sees the released
            models), when DP is on.
        epsilon_coordinator: Privacy spent so far against the coordinator, which knows
            who took part; None without DP, and None under central noise, where the
            coordinator sees the noiseless sum and is not protected against.
        accounting: How both were computed (``"rdp"`` or ``"pld"``), when DP is on.
        delta: The delta both hold at (the run's delta plus the withheld-round term),
            when DP is on.
        excluded: Clients that reported for the round but were left out of its sum
            (a contribution that failed verification, a receipt for shares the
            aggregators do not hold), sorted.
        federated_loss: Federated evaluation: the example-weighted mean loss of the
            model this round started from (the previous round's model), evaluated by
            the round's clients on their own evaluation splits; None when none did.
        federated_accuracy: The same evaluation's example-weighted accuracy.
        federated_examples: How many examples it covered.
    """

    round_id: int
    num_clients: int
    train_loss: float | None
    test_loss: float | None
    test_accuracy: float | None
    seconds: float
    epsilon: float | None = None
    epsilon_coordinator: float | None = None
    accounting: str | None = None
    delta: float | None = None
    excluded: tuple[str, ...] = ()
    federated_loss: float | None = None
    federated_accuracy: float | None = None
    federated_examples: float | None = None

    def __post_init__(self) -> None:
        # Rows read back from JSON give a list: keep one representation.
        object.__setattr__(self, "excluded", tuple(self.excluded))

    def with_federated(self, evaluation: FederatedEvaluation | None) -> RoundMetrics:
        """These metrics with ``evaluation``'s means (unchanged when it is None)."""
        if evaluation is None or evaluation.examples <= 0:
            return self
        return dataclasses.replace(
            self,
            federated_loss=evaluation.loss,
            federated_accuracy=evaluation.accuracy,
            federated_examples=evaluation.examples,
        )


EvaluateFn = Callable[[Weights], Evaluation]
"""Server-side evaluation of a model."""
