"""Local training on a Ray cluster: virtual clients beyond one machine.

``pip install '.[ray]'`` (in the veilfl checkout) brings Ray (the engine Flower's
simulation uses). A :class:`RayExecutor` starts a pool of Ray actors, each holding the
learner, a scratch model and (once, through Ray's object store) the population's
data; each training job names its client by index, and each global model version is
put in the object store once (while the caller passes the same weights object for
it), so a task carries only indices, plans and seeds. Every actor reserves the
resources of one client (``cpus_per_client``, ``gpus_per_client``, which may be a
fraction of a GPU); actors with a GPU train on it, and may train their share of the
jobs batched (:class:`~veilfl.sim.executor.BatchedExecutor`).

With the same seeds a Ray run trains the same updates as an in-process one: the
actors run the very executors of :mod:`veilfl.sim.executor`. Updates come back in
job order, with at most two tasks per actor in flight, so the driver's memory is
bounded by the jobs in flight, not by the population.

Example::

    with RayExecutor(learner, client_data, address="auto", gpus_per_client=0.25) as ex:
        updates = ex.train(jobs)
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from veilfl.errors import ConfigurationError
from veilfl.ml.datasets import ClientPartitions
from veilfl.ml.learner import Learner, LocalUpdate
from veilfl.ml.local_data import LocalData
from veilfl.protocol.messages import LocalTrainingPlan
from veilfl.sim.executor import (
    BatchedExecutor,
    SequentialExecutor,
    TrainingExecutor,
    TrainingJob,
    check_indices,
)
from veilfl.tensors import Weights

__all__ = ["RayExecutor"]

DataT = TypeVar("DataT")

_INSTALL = "Ray is not installed; install it with `pip install '.[ray]'` in the veilfl checkout."
_CACHED_VERSIONS = 8


@dataclass(frozen=True)
class _JobSpec:
    """A job as it travels to an actor: its weights by version, not by value."""

    client_index: int
    model_version: int
    plan: LocalTrainingPlan
    seed: int | None


class _Worker(Generic[DataT]):
    """A Ray actor: one learner, a scratch model and the population's data."""

    def __init__(
        self,
        learner: Learner[DataT],
        client_data: Sequence[DataT | LocalData[DataT]],
        *,
        device: str,
        batched: bool,
        max_clients: int,
    ) -> None:
        placed = learner.on(device)
        self._executor: TrainingExecutor = (
            BatchedExecutor(placed, client_data, max_clients=max_clients)
            if batched
            else SequentialExecutor(placed, client_data)
        )
        self._weights: dict[str, Weights] = {}  # by object id, oldest first

    def train(self, specs: list[_JobSpec], models: Mapping[int, Any]) -> list[LocalUpdate]:
        import ray

        by_version: dict[int, Weights] = {}
        for version, (ref,) in models.items():
            key = ref.hex()
            if key not in self._weights:
                if len(self._weights) >= _CACHED_VERSIONS:
                    self._weights.pop(next(iter(self._weights)))
                self._weights[key] = ray.get(ref)
            by_version[version] = self._weights[key]
        jobs = [
            TrainingJob(
                client_index=s.client_index,
                model_version=s.model_version,
                weights=by_version[s.model_version],
                plan=s.plan,
                seed=s.seed,
            )
            for s in specs
        ]
        return self._executor.train(jobs)


class RayExecutor(TrainingExecutor, Generic[DataT]):
    """Training jobs as tasks of a pool of Ray actors.

    Args:
        learner: How to build and train the model (it must pickle: a learner from
            :func:`~veilfl.ml.learner.sgd_learner` with an importable model class
            does; Ray's cloudpickle copes with most closures).
        client_data: Every client's data, by index (put in the object store once).
        address: A running cluster's address (``auto``, ``ray://host:10001``, ...);
            None starts a local instance, unless Ray is already initialised.
        num_workers: Actors to start; None: as many as the cluster's CPUs (and GPUs)
            allow at the per-client resources below.
        cpus_per_client: CPUs each actor reserves.
        gpus_per_client: GPUs each actor reserves (a fraction shares a GPU between
            actors); above 0, the actors train on CUDA.
        batched: Train each task's jobs together (:class:`BatchedExecutor`).
        max_clients: With ``batched``, at most this many clients train together.
        jobs_per_task: Jobs sent to an actor at once; None chooses about a quarter
            of a call's jobs per actor, capped at ``max_clients``.
        init_options: More keyword arguments for ``ray.init`` (say ``num_cpus=2``).

    Raises:
        ConfigurationError: if Ray is missing, a setting is out of range, or the
            cluster lacks the GPUs asked for.
    """

    def __init__(
        self,
        learner: Learner[DataT],
        client_data: Sequence[DataT | LocalData[DataT]],
        *,
        address: str | None = None,
        num_workers: int | None = None,
        cpus_per_client: float = 1.0,
        gpus_per_client: float = 0.0,
        batched: bool = False,
        max_clients: int = 100,
        jobs_per_task: int | None = None,
        init_options: Mapping[str, Any] | None = None,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigurationError(_INSTALL) from None
        if not (cpus_per_client > 0 and math.isfinite(cpus_per_client)):
            raise ConfigurationError(f"cpus_per_client must be positive, not {cpus_per_client}.")
        if not (gpus_per_client >= 0 and math.isfinite(gpus_per_client)):
            raise ConfigurationError(f"gpus_per_client must be at least 0, not {gpus_per_client}.")
        if num_workers is not None and num_workers < 1:
            raise ConfigurationError(f"num_workers must be at least 1, not {num_workers}.")
        if jobs_per_task is not None and jobs_per_task < 1:
            raise ConfigurationError(f"jobs_per_task must be at least 1, not {jobs_per_task}.")
        if max_clients < 1:
            raise ConfigurationError(f"max_clients must be at least 1, not {max_clients}.")
        self._ray: Any = ray  # typed loosely: Ray's stubs do not cover actor handles
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            local = {"include_dashboard": False} if address is None else {}
            options = {**local, **(init_options or {})}
            ray.init(address=address, **options)
        self.population = len(client_data)
        self._puts: dict[int, tuple[Weights, Any]] = {}
        self.jobs_per_task = jobs_per_task
        self.max_clients = max_clients
        self.batched = batched
        try:
            self.num_workers = num_workers or self._fitting_workers(
                cpus_per_client, gpus_per_client
            )
            data_ref = ray.put(_shippable(client_data))
            actor = ray.remote(_Worker).options(num_cpus=cpus_per_client, num_gpus=gpus_per_client)
            device = "cuda" if gpus_per_client > 0 else "cpu"
            self._actors: list[Any] = [
                actor.remote(
                    learner, data_ref, device=device, batched=batched, max_clients=max_clients
                )
                for _ in range(self.num_workers)
            ]
        except BaseException:
            self.close()
            raise

    def _fitting_workers(self, cpus: float, gpus: float) -> int:
        resources = self._ray.cluster_resources()
        fit = int(resources.get("CPU", 1.0) // cpus)
        if gpus > 0:
            available = resources.get("GPU", 0.0)
            if available <= 0:
                raise ConfigurationError(
                    f"gpus_per_client is {gpus}, but the Ray cluster has no GPU; set it to 0 "
                    "or connect to a cluster with GPUs."
                )
            fit = min(fit, int(available // gpus))
        return max(1, fit)

    @property
    def preferred_batch(self) -> int:
        """Enough jobs to keep every actor busy: a batch, or two jobs, per actor."""
        per_actor = self.jobs_per_task or (self.max_clients if self.batched else 2)
        return max(1, self.num_workers * per_actor)

    def stream(self, jobs: Sequence[TrainingJob]) -> Iterator[LocalUpdate]:
        """Send the jobs to the actors in tasks; yield the updates in job order."""
        check_indices(jobs, self.population)
        if not jobs:
            return
        models: dict[int, Any] = {}
        for job in jobs:
            if job.model_version not in models:
                # Wrapped in a list so that Ray hands the actor the reference, which it
                # resolves once per version, rather than the weights with every task.
                models[job.model_version] = [self._reference(job.model_version, job.weights)]
        size = self.jobs_per_task or max(
            1, min(self.max_clients, math.ceil(len(jobs) / (4 * self.num_workers)))
        )
        chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
        pending: deque[Any] = deque()
        for number, chunk in enumerate(chunks):
            specs = [_JobSpec(j.client_index, j.model_version, j.plan, j.seed) for j in chunk]
            needed = {j.model_version: models[j.model_version] for j in chunk}
            actor = self._actors[number % len(self._actors)]
            pending.append(actor.train.remote(specs, needed))
            if len(pending) >= 2 * len(self._actors):
                yield from _owned(self._ray.get(pending.popleft()))
        while pending:
            yield from _owned(self._ray.get(pending.popleft()))

    def _reference(self, version: int, weights: Weights) -> Any:
        """The object-store copy of these weights: put once while the caller hands in
        the same weights object for a version (a new object, say of another run's
        version of the same number, is put anew)."""
        cached = self._puts.get(version)
        if cached is not None and cached[0] is weights:
            return cached[1]
        ref = self._ray.put(weights)
        self._puts.pop(version, None)
        self._puts[version] = (weights, ref)
        while len(self._puts) > _CACHED_VERSIONS:
            self._puts.pop(next(iter(self._puts)))
        return ref

    def close(self) -> None:
        """Stop the actors, and the local Ray instance if this executor started it."""
        for actor in getattr(self, "_actors", []):
            self._ray.kill(actor)
        self._actors = []
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns_ray = False


def _shippable(
    client_data: Sequence[DataT | LocalData[DataT]],
) -> Sequence[DataT | LocalData[DataT]]:
    """The data as it goes to the object store: a list, tuple or
    :class:`~veilfl.ml.datasets.ClientPartitions` (a data set and index arrays) as it
    is, any other sequence as a list."""
    if isinstance(client_data, list | tuple | ClientPartitions):
        return client_data
    return list(client_data)


def _owned(updates: list[LocalUpdate]) -> Iterator[LocalUpdate]:
    """The updates with their arrays copied out of Ray's (read-only) object store."""
    for update in updates:
        yield LocalUpdate(
            delta={name: np.array(value) for name, value in update.delta.items()},
            num_samples=update.num_samples,
            mean_loss=update.mean_loss,
            epsilon=update.epsilon,
            evaluation=update.evaluation,
        )
