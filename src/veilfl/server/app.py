"""The coordinator's HTTP API (FastAPI; the OpenAPI spec is served at /openapi.json).

Endpoints (all under ``/v1``; those marked * must be signed by the client's enrolled
Ed25519 key, see :mod:`veilfl.auth.signed_request`):

* ``POST /clients`` * — enroll (or join again) with a public key, signed by that key;
  returns the client id and the run's description.
* ``GET /run`` — the run's description, including the coordinator's public key.
* ``GET /clients/{client_id}/task`` * — train, wait or done (with a round admission for
  the aggregators under secure aggregation).
* ``GET /model`` * — the current global model as safetensors bytes
  (``X-Model-Version`` header).
* ``POST /rounds/{round_id}/updates`` * — a model update as safetensors bytes whose
  metadata carries client id, round, base version, sample count and loss.
* ``POST /rounds/{round_id}/receipts`` * — secure aggregation: which aggregators hold
  the client's shares.
* ``POST /tickets`` * — buffered runs: which buffer the next update goes to.
* ``GET /status`` and ``GET /metrics`` — progress and per-round metrics;
  ``GET /metrics.png`` their plot, drawn on demand.
* ``GET /dashboard?since=R`` — what the live dashboard shows (round rows changed after
  revision R).

Outside ``/v1``, ``GET /metrics`` serves Prometheus metrics
(:mod:`veilfl.server.coordinator_metrics`) and ``GET /dashboard`` the live dashboard.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel, Field

from veilfl.errors import WireFormatError
from veilfl.protocol.messages import TaskKind, UpdateHeader
from veilfl.protocol.metrics import RoundMetrics
from veilfl.protocol.run_spec import RunSpec
from veilfl.server.client_access import ClientAccess
from veilfl.server.coordinator_metrics import install_coordinator_metrics
from veilfl.server.dashboard import install_dashboard
from veilfl.server.metrics_plot import MetricsPicture
from veilfl.server.service import CoordinatorService
from veilfl.transport.http_errors import install_error_handlers

__all__ = ["create_app"]

BINARY = "application/octet-stream"


class JoinRequest(BaseModel):
    """Body of ``POST /v1/clients`` (the request is signed by ``public_key``)."""

    name: str = Field(default="", max_length=200, description="A human-readable label.")
    public_key: str = Field(
        min_length=43, max_length=44, description="Ed25519 public key, URL-safe base64."
    )
    enrollment_token: str | None = Field(
        default=None, max_length=200, description="A one-time token from the operator."
    )


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
    admission: str | None = None


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
    admission: str | None = None


class UploadResponse(BaseModel):
    """Answer to an update upload."""

    accepted: bool
    duplicate: bool
    round_id: int


def create_app(
    service: CoordinatorService,
    *,
    metrics: Callable[[], list[RoundMetrics]],
    access: ClientAccess,
    settings: RunSpec | None = None,
) -> FastAPI:
    """Build the coordinator's FastAPI application around ``service``.

    Args:
        service: The async wrapper of the coordinator core.
        metrics: Returns all completed rounds' metrics (from the run store).
        access: Enrollment and request authentication.
        settings: The run's settings, shown on the dashboard (default: the public run
            description only).
    """
    secure = service.run_info.secure is not None

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
    install_coordinator_metrics(app, service, history=metrics)
    install_dashboard(app, service, history=metrics, settings=settings)

    @app.post("/v1/clients", status_code=201, response_model=JoinResponse)
    async def join(body: JoinRequest, request: Request) -> JoinResponse:
        client_id = await access.enroll(
            request, public_key_text=body.public_key, token=body.enrollment_token, name=body.name
        )
        await service.join(client_id)
        return JoinResponse(client_id=client_id, run=service.description.to_json())

    @app.get("/v1/run")
    async def run() -> dict[str, Any]:
        # "open": whether the aggregators' consents are in (a client waits until then);
        # not part of the spec: a false "open" only makes clients refuse the run.
        return {**service.description.to_json(), "open": service.opened}

    @app.get("/v1/clients/{client_id}/task", response_model=TaskResponse)
    async def task(client_id: str, request: Request) -> TaskResponse:
        await access.authenticate(request, round_id=None, acting_for=client_id)
        answer = await service.task_for(client_id)
        if secure and answer.kind is TaskKind.TRAIN and answer.round_id is not None:
            answer = replace(answer, admission=access.admission(client_id, answer.round_id))
        return TaskResponse(**answer.to_json())

    @app.get(
        "/v1/model",
        response_class=Response,
        responses={200: {"content": {BINARY: {}}, "description": "safetensors bytes"}},
    )
    async def model(request: Request) -> Response:
        await access.authenticate(request, round_id=None)
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
        sender = await access.authenticate(request, round_id=round_id)
        body = await request.body()
        if not body:
            raise WireFormatError("The update body is empty; send safetensors bytes.")
        _, accepted = await service.submit_update(body, round_id=round_id, sender=sender)
        return UploadResponse(accepted=True, duplicate=not accepted, round_id=round_id)

    @app.post("/v1/rounds/{round_id}/receipts", status_code=202, response_model=UploadResponse)
    async def receipt(round_id: int, body: ShareReceiptRequest, request: Request) -> UploadResponse:
        await access.authenticate(request, round_id=round_id, acting_for=body.client_id)
        header = UpdateHeader(
            client_id=body.client_id,
            round_id=round_id,
            base_version=body.base_version,
            aggregators=tuple(body.aggregators),
        )
        accepted = await service.submit_receipt(header)
        return UploadResponse(accepted=True, duplicate=not accepted, round_id=round_id)

    @app.post("/v1/tickets", response_model=TicketResponse)
    async def ticket(body: TicketRequest, request: Request) -> TicketResponse:
        await access.authenticate(request, round_id=None, acting_for=body.client_id)
        answer = await service.ticket(body.client_id, trained_version=body.trained_version)
        response = TicketResponse(**vars(answer))
        if secure:
            response.admission = access.admission(body.client_id, answer.buffer_id)
        return response

    @app.get("/v1/status")
    async def status() -> dict[str, Any]:
        return await service.status()

    @app.get("/v1/metrics")
    async def metrics_endpoint() -> list[dict[str, Any]]:
        return [vars(m) for m in metrics()]

    picture = MetricsPicture(metrics, title=f"veilfl run {service.run_info.run_id}")

    @app.get(
        "/v1/metrics.png",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "The metrics' plot."}},
    )
    async def metrics_plot() -> Response:
        return Response(await asyncio.to_thread(picture.png), media_type="image/png")

    return app
