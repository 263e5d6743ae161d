"""The client's async HTTP edge: join, ask for a task, fetch, train, upload, repeat.

All decisions about rounds live on the coordinator; this loop only moves bytes and
time. Network failures and 5xx answers are retried with exponential backoff and
jitter; a 409 (the round closed, or the model moved on) drops the stale update and
asks for a new task; the loop ends cleanly when the coordinator says the run is done.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx

from veilfl.errors import TransportError
from veilfl.ml.learner import Learner
from veilfl.protocol.messages import LocalTrainingPlan, TaskKind, UpdateHeader
from veilfl.tensors import Weights
from veilfl.wire.tensor_codec import decode_weights, encode_weights

__all__ = ["ClientSummary", "RetryPolicy", "run_client"]

logger = logging.getLogger(__name__)
DataT = TypeVar("DataT")
BINARY = "application/octet-stream"


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up on the coordinator.

    Attributes:
        max_attempts: Attempts per request (network errors, 5xx and 429 are retried).
        initial_backoff_s: First wait; doubles each attempt, with jitter.
        max_backoff_s: Longest single wait.
        timeout_s: Per-request timeout.
    """

    max_attempts: int = 12
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    timeout_s: float = 120.0

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based), with jitter."""
        base = min(self.max_backoff_s, self.initial_backoff_s * 2.0 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)  # jitter only; not a secret


@dataclass(frozen=True)
class ClientSummary:
    """What a client did during the run."""

    client_id: str
    rounds_trained: int
    updates_refused: int


class _Coordinator(Generic[DataT]):
    """Thin typed wrapper over the coordinator's HTTP API, with retries."""

    def __init__(self, http: httpx.AsyncClient, retry: RetryPolicy) -> None:
        self._http = http
        self._retry = retry

    async def request(
        self, method: str, path: str, *, expect: tuple[int, ...] = (200,), **kwargs: Any
    ) -> httpx.Response:
        last_problem = "no attempt was made"
        for attempt in range(1, self._retry.max_attempts + 1):
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                last_problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code in expect or (
                    400 <= response.status_code < 500 and response.status_code != 429
                ):
                    return response
                last_problem = f"HTTP {response.status_code}: {response.text[:200]}"
            wait = self._retry.backoff(attempt)
            logger.warning(
                "%s %s failed (%s); retrying in %.1f s (attempt %d of %d)",
                method,
                path,
                last_problem,
                wait,
                attempt,
                self._retry.max_attempts,
            )
            await asyncio.sleep(wait)
        raise TransportError(
            f"The coordinator did not answer {method} {path} after "
            f"{self._retry.max_attempts} attempts ({last_problem}). Check that it is running "
            "and reachable."
        )


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, Mapping):
        return str(body.get("message", body))
    return str(body)


async def run_client(
    server_url: str,
    learner: Learner[DataT],
    data: DataT,
    *,
    name: str = "",
    retry: RetryPolicy | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ClientSummary:
    """Take part in a run until the coordinator says it is done.

    Args:
        server_url: The coordinator's base URL, e.g. ``http://127.0.0.1:8080``.
        learner: How to build and train the model (its architecture must match the run's).
        data: This client's local data; it never leaves this process.
        name: A label the coordinator shows in its records.
        retry: Retry and timeout policy.
        transport: An httpx transport (tests use ``httpx.ASGITransport``).

    Raises:
        TransportError: if the coordinator cannot be reached after all retries, or
            refuses the client outright.
    """
    policy = retry or RetryPolicy()
    async with httpx.AsyncClient(
        base_url=server_url, timeout=policy.timeout_s, transport=transport
    ) as http:
        api: _Coordinator[DataT] = _Coordinator(http, policy)
        client_id, plan = await _join(api, name)
        logger.info("joined as %s", client_id)
        model = await asyncio.to_thread(learner.model_fn)
        trained = refused = 0
        while True:
            response = await api.request("GET", f"/v1/clients/{client_id}/task")
            if response.status_code == 404:
                logger.warning("the coordinator no longer knows this client; joining again")
                client_id, plan = await _join(api, name)
                continue
            _raise_for_status(response, "ask for a task")
            task = response.json()
            kind = TaskKind(task["kind"])
            if kind is TaskKind.DONE:
                logger.info("run complete after %d rounds trained here", trained)
                return ClientSummary(client_id, trained, refused)
            if kind is TaskKind.WAIT:
                await asyncio.sleep(float(task["retry_after_s"]))
                continue
            round_id, version = int(task["round_id"]), int(task["model_version"])
            global_weights = await _fetch_model(api, version)
            if global_weights is None:
                continue
            logger.info("round %d: training on model version %d", round_id, version)
            update = await asyncio.to_thread(
                learner.local_update, model, global_weights, data, plan
            )
            header = UpdateHeader(
                client_id=client_id,
                round_id=round_id,
                base_version=version,
                num_samples=update.num_samples,
                loss=update.mean_loss,
            )
            body = await asyncio.to_thread(
                encode_weights, update.delta, metadata=header.to_metadata()
            )
            response = await api.request(
                "POST",
                f"/v1/rounds/{round_id}/updates",
                content=body,
                headers={"Content-Type": BINARY},
                expect=(202,),
            )
            if response.status_code == 409:
                refused += 1
                logger.warning(
                    "round %d refused the update: %s", round_id, _error_message(response)
                )
                continue
            _raise_for_status(response, "upload an update", expected=202)
            trained += 1
            logger.info(
                "round %d: uploaded (%d samples, loss %.4f)",
                round_id,
                update.num_samples,
                update.mean_loss,
            )


async def _join(api: _Coordinator[Any], name: str) -> tuple[str, LocalTrainingPlan]:
    response = await api.request("POST", "/v1/clients", json={"name": name}, expect=(201,))
    _raise_for_status(response, "join", expected=201)
    body = response.json()
    return str(body["client_id"]), LocalTrainingPlan(**body["run"]["plan"])


async def _fetch_model(api: _Coordinator[Any], version: int) -> Weights | None:
    response = await api.request("GET", "/v1/model")
    _raise_for_status(response, "download the model")
    served = int(response.headers.get("X-Model-Version", "-1"))
    if served != version:
        logger.info("model moved on to version %d; asking for a new task", served)
        return None
    weights, _ = await asyncio.to_thread(decode_weights, response.content)
    return weights


def _raise_for_status(response: httpx.Response, action: str, *, expected: int = 200) -> None:
    if response.status_code != expected:
        raise TransportError(
            f"The coordinator refused to {action} (HTTP {response.status_code}): "
            f"{_error_message(response)}"
        )
