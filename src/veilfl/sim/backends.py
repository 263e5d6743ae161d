"""Which executor a simulation trains its clients with: ``--backend inprocess|ray``.

An :class:`ExecutionSettings` says where local training runs; it is not part of a
run's settings, since every backend trains the same updates from the same seeds
(to floating-point tolerance; bitwise one client at a time on as many torch threads).
:func:`build_executor` turns it into a :class:`~veilfl.sim.executor.TrainingExecutor`:

* ``inprocess`` (the default): in this process, on the learner's device; the clients of
  a round train together (:class:`~veilfl.sim.executor.BatchedExecutor`) when the
  learner can be batched, else one at a time, and the log says why once.
* ``ray``: Ray actors (:class:`~veilfl.sim.ray_executor.RayExecutor`) on a local Ray
  instance or the cluster at ``ray_address``, each reserving ``ray_cpus`` CPUs and
  ``ray_gpus`` GPUs (a fraction shares a GPU); actors batch the same way.

Example::

    with build_executor(learner, client_data, ExecutionSettings(backend="ray")) as ex:
        result = simulate(learner, client_data=client_data, ..., executor=ex)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from veilfl.errors import ConfigurationError
from veilfl.ml.learner import Learner
from veilfl.ml.local_data import LocalData
from veilfl.sim.executor import (
    BatchedExecutor,
    SequentialExecutor,
    TrainingExecutor,
    learner_batching_obstacle,
)

__all__ = ["BACKENDS", "ExecutionSettings", "build_executor"]

DataT = TypeVar("DataT")

BACKENDS = ("inprocess", "ray")
"""What ``--backend`` takes."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutionSettings:
    """Where a simulation's local training runs.

    Attributes:
        backend: ``inprocess`` or ``ray``.
        batched: Train a round's clients together when the learner can be batched
            (False: always one at a time).
        max_clients: At most this many clients train together (memory: their data
            and a few copies of the model each).
        ray_address: A running Ray cluster (``auto``, ``ray://host:10001``); None
            starts a local instance (or uses the one this process already runs).
        ray_cpus: CPUs each Ray actor (one client at a time) reserves.
        ray_gpus: GPUs each Ray actor reserves; above 0, actors train on CUDA.
        ray_workers: Ray actors to start; None fits as many as the resources allow.
        ray_init: More keyword arguments for ``ray.init`` (say ``{"num_cpus": 2}``).

    Raises:
        ConfigurationError: for an unknown backend or a value out of range, naming
            the flag.
    """

    backend: Literal["inprocess", "ray"] = "inprocess"
    batched: bool = True
    max_clients: int = 100
    ray_address: str | None = None
    ray_cpus: float = 1.0
    ray_gpus: float = 0.0
    ray_workers: int | None = None
    ray_init: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigurationError(
                f"--backend {self.backend!r} is not known; choose one of {', '.join(BACKENDS)}."
            )
        if self.max_clients < 1:
            raise ConfigurationError(f"--batch-clients must be at least 1; got {self.max_clients}.")
        if not (self.ray_cpus > 0 and math.isfinite(self.ray_cpus)):
            raise ConfigurationError(f"--ray-cpus must be more than 0; got {self.ray_cpus}.")
        if not (self.ray_gpus >= 0 and math.isfinite(self.ray_gpus)):
            raise ConfigurationError(f"--ray-gpus must be at least 0; got {self.ray_gpus}.")
        if self.backend != "ray" and (
            self.ray_address is not None or self.ray_gpus > 0 or self.ray_workers is not None
        ):
            raise ConfigurationError(
                "--ray-address, --ray-gpus and --ray-workers need --backend ray."
            )


def build_executor(
    learner: Learner[DataT],
    client_data: Sequence[DataT | LocalData[DataT]],
    settings: ExecutionSettings | None = None,
) -> TrainingExecutor:
    """The executor ``settings`` describe, for ``learner`` and ``client_data``.

    Close it when done (or use it as a context manager): a Ray executor stops its
    actors, and the Ray instance it started.

    Raises:
        ConfigurationError: if Ray is asked for but not installed, or its cluster
            lacks the resources asked for.
    """
    settings = settings or ExecutionSettings()
    if settings.backend == "inprocess":
        if settings.batched:
            return BatchedExecutor(learner, client_data, max_clients=settings.max_clients)
        return SequentialExecutor(learner, client_data)
    from veilfl.sim.ray_executor import RayExecutor

    batched = settings.batched
    if batched:
        obstacle = learner_batching_obstacle(learner, client_data)
        if obstacle is not None:
            logger.info("Training clients one at a time, not batched: %s.", obstacle)
            batched = False
    return RayExecutor(
        learner,
        client_data,
        address=settings.ray_address,
        num_workers=settings.ray_workers,
        cpus_per_client=settings.ray_cpus,
        gpus_per_client=settings.ray_gpus,
        batched=batched,
        max_clients=settings.max_clients,
        init_options=settings.ray_init,
    )
