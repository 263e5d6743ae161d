"""The coordinator's HTTP API (FastAPI; the OpenAPI spec is served at /openapi.json).

Endpoints (all under ``/v1``):

* ``POST /clients`` — join; returns a client id and the run's description.
* ``GET /run`` — the run's description.
* ``GET /clients/{client_id}/task`` — train, wait or done.
* ``GET /model`` — the current global model as safetensors bytes
  (``X-Model-Version`` header).
* ``POST /rounds/{round_id}/updates`` — a model update as safetensors bytes whose
  metadata carries client id, round, base version, sample count and loss.
* ``GET /status`` and ``GET /metrics`` — progress and per-round metrics.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, Field

from veilfl.errors import WireFormatError
from veilfl.protocol.messages import UpdateHeader
from veilfl.protocol.metrics import RoundMetrics
from veilfl.server.http_errors import install_error_handlers
from veilfl.server.service import CoordinatorService

__all__ = ["create_app"]

BINARY = "application/octet-stream"


class JoinRequest(BaseModel):
    """Body of ``POST /v1/clients``."""

    name: str = Field(default="", max_length=200, description="A human-readable label.")


class JoinResponse(BaseModel):
    """Answer to a join: the client's id and the run it joined."""

    client_id: str
    run: dict[str, Any]


class TaskResponse(BaseModel):
    """What the client should do now."""

    kind: str
    round_id: int | None
    model_version: int | None
    retry_after_s: float
    privacy: dict[str, Any] | None = None


class ShareReceiptRequest(BaseModel):
    """Body of ``POST /v1/rounds/{round_id}/receipts`` (secure aggregation)."""

    client_id: str = Field(min_length=1, max_length=200)
    base_version: int = Field(ge=0)
    aggregators: list[int] = Field(min_length=1, max_length=16)


class TicketRequest(BaseModel):
    """Body of ``POST /v1/tickets`` (buffered asynchronous runs)."""

    client_id: str = Field(min_length=1, max_length=200)
    trained_version: int = Field(ge=0)


class TicketResponse(BaseModel):
    """Which buffer the update goes to, and its staleness weight (fixed now)."""

    buffer_id: int
    base_version: int
    trained_version: int
    staleness: int
    weight: float


class UploadResponse(BaseModel):
    """Answer to an update upload."""

    accepted: bool
    duplicate: bool
    round_id: int


def _run_json(service: CoordinatorService) -> dict[str, Any]:
    info = service.run_info
    return {
        "run_id": info.run_id,
        "model_name": info.model_name,
        "num_rounds": info.num_rounds,
        "plan": {
            "learning_rate": info.plan.learning_rate,
            "momentum": info.plan.momentum,
            "epochs": info.plan.epochs,
            "batch_size": info.plan.batch_size,
            "max_batches": info.plan.max_batches,
        },
        "secure": info.secure,
        "dp": info.dp,
        "mode": info.mode,
    }


def create_app(
    service: CoordinatorService, *, metrics: Callable[[], list[RoundMetrics]]
) -> FastAPI:
    """Build the coordinator's FastAPI application around ``service``.

    Args:
        service: The async wrapper of the coordinator core.
        metrics: Returns all completed rounds' metrics (from the run store).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="veilfl coordinator",
        version="1",
        description="Coordinates federated training rounds. Binary bodies are safetensors.",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    @app.post("/v1/clients", status_code=201, response_model=JoinResponse)
    async def join(request: JoinRequest) -> JoinResponse:
        client_id = uuid.uuid4().hex
        await service.join(client_id, request.name)
        return JoinResponse(client_id=client_id, run=_run_json(service))

    @app.get("/v1/run")
    async def run() -> dict[str, Any]:
        return _run_json(service)

    @app.get("/v1/clients/{client_id}/task", response_model=TaskResponse)
    async def task(client_id: str) -> TaskResponse:
        answer = await service.task_for(client_id)
        return TaskResponse(**answer.to_json())

    @app.get(
        "/v1/model",
        response_class=Response,
        responses={200: {"content": {BINARY: {}}, "description": "safetensors bytes"}},
    )
    async def model() -> Response:
        encoded = await service.model()
        return Response(
            content=encoded.body,
            media_type=BINARY,
            headers={"X-Model-Version": str(encoded.version)},
        )

    @app.post(
        "/v1/rounds/{round_id}/updates",
        status_code=202,
        response_model=UploadResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {BINARY: {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def upload(round_id: int, request: Request) -> UploadResponse:
        body = await request.body()
        if not body:
            raise WireFormatError("The update body is empty; send safetensors bytes.")
        _, accepted = await service.submit_update(body, round_id=round_id)
        return UploadResponse(accepted=True, duplicate=not accepted, round_id=round_id)

    @app.post("/v1/rounds/{round_id}/receipts", status_code=202, response_model=UploadResponse)
    async def receipt(round_id: int, request: ShareReceiptRequest) -> UploadResponse:
        header = UpdateHeader(
            client_id=request.client_id,
            round_id=round_id,
            base_version=request.base_version,
            aggregators=tuple(request.aggregators),
        )
        accepted = await service.submit_receipt(header)
        return UploadResponse(accepted=True, duplicate=not accepted, round_id=round_id)

    @app.post("/v1/tickets", response_model=TicketResponse)
    async def ticket(request: TicketRequest) -> TicketResponse:
        answer = await service.ticket(request.client_id, trained_version=request.trained_version)
        return TicketResponse(**vars(answer))

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        return await service.status()

    @app.get("/v1/metrics")
    async def metrics_endpoint() -> list[dict[str, Any]]:
        return [vars(m) for m in metrics()]

    return app
