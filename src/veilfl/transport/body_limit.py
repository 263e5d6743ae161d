"""Reading a request body no larger than the endpoint's declared limit.

A body is read before anything in it is trusted (its signature covers its digest), so
without a limit a sender that holds no key still makes the server buffer, and a JSON
endpoint parse, whatever it sends. :func:`read_limited_body` refuses a body whose
``Content-Length`` exceeds the limit before reading a byte, and stops reading one that
streams past it (a chunked body declares no length).
"""

from __future__ import annotations

from fastapi import Request

from veilfl.errors import BodyTooLargeError, WireFormatError

__all__ = ["read_limited_body"]


def _too_large(limit: int) -> BodyTooLargeError:
    return BodyTooLargeError(
        f"The request body is larger than the {limit:,} bytes this endpoint accepts; "
        "nothing in it was read. Send the body the protocol describes."
    )


async def read_limited_body(request: Request, *, limit: int) -> bytes:
    """The body of ``request``, at most ``limit`` bytes.

    Raises:
        BodyTooLargeError: (HTTP 413) if the body is, or declares to be, longer.
        WireFormatError: if ``Content-Length`` is not a number.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isascii() or not declared.isdigit():
            raise WireFormatError("The Content-Length header is not a whole number.")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)
