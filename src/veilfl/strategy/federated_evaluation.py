"""Federated evaluation as sums: what clients report about the global model they
received, evaluated on their own held-out data, and what a round adds up.

Sums (examples, summed loss, correct predictions) add across clients whether they
travel in the clear or inside a secure aggregate, and their ratios are the
example-weighted means a round reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from veilfl.errors import WireFormatError

__all__ = ["FederatedEvaluation"]


@dataclass(frozen=True)
class FederatedEvaluation:
    """Evaluation of the global model where the data is, as sums that add up across
    clients: ``examples`` evaluated, their summed loss, and how many were right.

    One client's evaluation and the sum over a round's clients have the same form, so
    the round's metrics are example-weighted means: ``loss_sum / examples`` and
    ``correct / examples``.

    Attributes:
        examples: Examples evaluated, at least 0.
        loss_sum: The sum of their losses (mean loss times ``examples``).
        correct: Correct predictions, in [0, ``examples``] (a whole number for one
            client; a sum decoded from a secure aggregate may carry rounding).

    Raises:
        WireFormatError: for a negative count, a correct count above the examples or a
            loss sum that is not finite.
    """

    examples: float
    loss_sum: float
    correct: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.examples) and self.examples >= 0):
            raise WireFormatError("An evaluation's example count must be a number of at least 0.")
        if not math.isfinite(self.loss_sum):
            raise WireFormatError("An evaluation's loss sum must be a finite number.")
        if not (math.isfinite(self.correct) and 0 <= self.correct <= self.examples):
            raise WireFormatError(
                f"An evaluation's correct count must lie in [0, {self.examples:g}] (its "
                f"examples); got {self.correct:g}."
            )

    @classmethod
    def of_means(cls, *, loss: float, accuracy: float, examples: int) -> FederatedEvaluation:
        """The sums for a mean ``loss`` and ``accuracy`` over ``examples`` examples."""
        return cls(
            examples=examples,
            loss_sum=loss * examples,
            correct=min(float(round(accuracy * examples)), float(examples)),
        )

    @classmethod
    def total(cls, parts: Iterable[FederatedEvaluation]) -> FederatedEvaluation | None:
        """The sum of ``parts``; None when they evaluated no example, or when the sums
        overflow (plaintext clients state their own: a metric is lost, never a round)."""
        examples = loss_sum = correct = 0.0
        for part in parts:
            examples += part.examples
            loss_sum += part.loss_sum
            correct += part.correct
        if examples <= 0 or not all(map(math.isfinite, (examples, loss_sum, correct))):
            return None
        return cls(examples=examples, loss_sum=loss_sum, correct=min(correct, examples))

    @property
    def loss(self) -> float:
        """Example-weighted mean loss (nan over no example)."""
        return self.loss_sum / self.examples if self.examples else math.nan

    @property
    def accuracy(self) -> float:
        """Example-weighted accuracy (nan over no example)."""
        return self.correct / self.examples if self.examples else math.nan
