"""One simulated run from its settings, for both simulators: the in-process aggregators
(under secure aggregation), the settings fitted to their minimums as ``veilfl server``
fits them, the coordinator core from :func:`veilfl.protocol.assembly.build_coordinator`
and the run description the aggregators attach to (under distributed DP they deal the
noise)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from veilfl.errors import ConfigurationError
from veilfl.protocol.assembly import AssembledRun, build_coordinator
from veilfl.protocol.messages import PublishedAggregator, RunInfo
from veilfl.protocol.run_description import RunDescription
from veilfl.protocol.run_spec import RunSpec
from veilfl.secagg.aggregator_policy import AggregatorPolicy
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.sim.in_process_aggregators import InProcessAggregators
from veilfl.tensors import Weights, spec_of

__all__ = ["SimulatedRun", "assemble_simulated_run"]


@dataclass(frozen=True)
class SimulatedRun:
    """A simulated run, ready to drive.

    Attributes:
        assembled: The coordinator core with its cohort figures and privacy backend.
        description: The run's spec with the aggregators' consents, as the coordinator
            would publish it.
        aggregators: The in-process aggregators, or None for plaintext aggregation.
    """

    assembled: AssembledRun
    description: RunDescription
    aggregators: InProcessAggregators | None

    @property
    def run(self) -> RunInfo:
        """The run, as its parties read it."""
        return self.description.info

    @property
    def policies(self) -> tuple[AggregatorPolicy, ...]:
        """The aggregators' signed policies (none for plaintext aggregation)."""
        return () if self.aggregators is None else self.aggregators.policies


def assemble_simulated_run(
    settings_for: Callable[[tuple[PublishedAggregator, ...]], RunSpec],
    *,
    secure: SecureAggregationConfig | None,
    weights: Weights,
    min_participants: int,
    down: Collection[int] = (),
) -> SimulatedRun:
    """Assemble a simulated run.

    Args:
        settings_for: The simulation's coordinator settings, given the aggregators it
            publishes (none for plaintext aggregation).
        secure: Secure aggregation parameters, or None.
        weights: The initial global model.
        min_participants: Each in-process aggregator's minimum cohort.
        down: Aggregators unreachable for the whole simulation.

    Raises:
        ConfigurationError: for settings that contradict each other or the
            aggregators' minimums, or for so many aggregators down that fewer than the
            quorum remain (no round could ever be certified).
    """
    if secure is not None:
        up = secure.num_aggregators - len(set(down))
        if up < secure.quorum:
            raise ConfigurationError(
                f"With aggregators {sorted(set(down))} down for the whole simulation, {up} of "
                f"{secure.num_aggregators} remain, fewer than the quorum of {secure.quorum} "
                "that certifies a round's participant list: no round could be released."
            )
    model_size = spec_of(weights).total_size
    aggregators = (
        None
        if secure is None
        else InProcessAggregators(
            secure,
            model_size=model_size,
            down=down,
            min_participants=min_participants,
        )
    )
    settings = settings_for(() if aggregators is None else aggregators.published)
    if aggregators is not None:
        settings = aggregators.fit(settings)
    spec = settings.sealed(coordinator_key="", salt="", model_size=model_size)
    description = RunDescription(spec)
    assembled = build_coordinator(spec, initial_weights=weights, run_id=description.run_id)
    if aggregators is not None:  # they consent; under distributed DP they deal the noise
        consents = aggregators.attach(description.info)
        description = RunDescription(spec, consents)
    return SimulatedRun(assembled=assembled, description=description, aggregators=aggregators)
