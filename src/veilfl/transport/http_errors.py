"""How veilfl errors become HTTP answers: one table, shared by every service.

Every rejection is a 4xx JSON body ``{"error": <class name>, "message": <sentence>}``
that says what was wrong; the request changed nothing. The class name is also noted on
the request (:func:`error_noted`), so the edge's metrics can count refusals by reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from veilfl.errors import (
    AuthenticationError,
    BodyTooLargeError,
    BufferFullError,
    ConfigurationError,
    CryptoError,
    DecryptionError,
    EnrollmentRefusedError,
    ForbiddenError,
    PrivacyError,
    ProtocolError,
    RateLimitedError,
    RoundMismatchError,
    StaleUpdateError,
    TransportError,
    UnknownClientError,
    UpdateRejectedError,
    VeilflError,
    WireFormatError,
)

__all__ = [
    "STATUS_BY_ERROR",
    "error_body",
    "error_noted",
    "install_error_handlers",
    "status_for",
]

_ERROR_KEY = "veilfl_error"
"""Where, in the request's ASGI state, the handlers note the error class they answered."""

STATUS_BY_ERROR: tuple[tuple[type[VeilflError], int], ...] = (
    (RateLimitedError, 429),
    (ForbiddenError, 403),
    (EnrollmentRefusedError, 403),
    (AuthenticationError, 401),
    (UnknownClientError, 404),
    (RoundMismatchError, 409),
    (StaleUpdateError, 409),
    (UpdateRejectedError, 422),
    (BodyTooLargeError, 413),
    (WireFormatError, 400),
    (DecryptionError, 400),
    (CryptoError, 400),
    (PrivacyError, 409),
    (ProtocolError, 409),
    (ConfigurationError, 400),
    (TransportError, 503),
)


def status_for(error: VeilflError) -> int:
    """The HTTP status for ``error`` (500 for errors that are the server's fault)."""
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return status
    return 500


def error_body(error_type: str, message: str) -> dict[str, str]:
    """The JSON body of an error answer."""
    return {"error": error_type, "message": message}


def _note(request: Request, error_type: str) -> None:
    request.scope.setdefault("state", {})[_ERROR_KEY] = error_type


def error_noted(scope: Mapping[str, Any]) -> str | None:
    """The error class an error handler answered the request of ``scope`` with, if any."""
    state = scope.get("state")
    noted = state.get(_ERROR_KEY) if isinstance(state, Mapping) else None
    return noted if isinstance(noted, str) else None


def install_error_handlers(app: FastAPI) -> None:
    """Answer veilfl errors and request-validation errors as JSON with a clear message."""

    async def on_veilfl_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, VeilflError)
        _note(request, type(exc).__name__)
        headers = (
            {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
            if isinstance(exc, RateLimitedError | BufferFullError)
            else None
        )
        return JSONResponse(
            status_code=status_for(exc),
            content=error_body(type(exc).__name__, str(exc)),
            headers=headers,
        )

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        _note(request, "RequestValidationError")
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            for err in exc.errors()
        )
        return JSONResponse(
            status_code=422,
            content=error_body("RequestValidationError", f"The request is invalid: {problems}."),
        )

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        _note(request, "HTTPError")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"There is no {request.url.path}; see /openapi.json for the API."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        return JSONResponse(
            status_code=exc.status_code,
            content=error_body("HTTPError", message),
            headers=getattr(exc, "headers", None),
        )

    app.add_exception_handler(VeilflError, on_veilfl_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
