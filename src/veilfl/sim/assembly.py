"""One simulated run from its settings, for both simulators: the in-process aggregators
(under secure aggregation), the settings fitted to their minimums as ``veilfl server``
fits them, the coordinator core from :func:`veilfl.protocol.assembly.build_coordinator`
and the run description the aggregators attach to (under distributed DP they deal the
noise)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from veilfl.errors import ConfigurationError
from veilfl.protocol.assembly import AssembledRun, build_coordinator, describe_run
from veilfl.protocol.messages import PublishedAggregator, RunInfo
from veilfl.protocol.settings import CoordinatorSettings
from veilfl.secagg.aggregator_policy import AggregatorPolicy
from veilfl.secagg.config import SecureAggregationConfig
from veilfl.sim.in_process_aggregators import InProcessAggregators
from veilfl.tensors import Weights, spec_of

__all__ = ["RUN_ID", "SimulatedRun", "assemble_simulated_run"]

RUN_ID = "simulation"
"""The run id of every simulated run."""


@dataclass(frozen=True)
class SimulatedRun:
    """A simulated run, ready to drive.

    Attributes:
        assembled: The coordinator core with its cohort figures and privacy backend.
        run: The run description, as the coordinator would publish it.
        aggregators: The in-process aggregators, or None for plaintext aggregation.
    """

    assembled: AssembledRun
    run: RunInfo
    aggregators: InProcessAggregators | None

    @property
    def policies(self) -> tuple[AggregatorPolicy, ...]:
        """The aggregators' signed policies (none for plaintext aggregation)."""
        return () if self.aggregators is None else self.aggregators.policies


def assemble_simulated_run(
    settings_for: Callable[[tuple[PublishedAggregator, ...]], CoordinatorSettings],
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
    spec = spec_of(weights)
    aggregators = (
        None
        if secure is None
        else InProcessAggregators(
            secure,
            run_id=RUN_ID,
            model_size=spec.total_size,
            down=down,
            min_participants=min_participants,
        )
    )
    settings = settings_for(() if aggregators is None else aggregators.published)
    if aggregators is not None:
        settings = aggregators.fit(settings)
    assembled = build_coordinator(settings, initial_weights=weights, run_id=RUN_ID)
    run = describe_run(settings, run_id=RUN_ID, coordinator_key="", spec=spec)
    if aggregators is not None:
        aggregators.attach(run)  # under distributed DP they deal the noise
    return SimulatedRun(assembled=assembled, run=run, aggregators=aggregators)
