"""Test support: enrolled, signing httpx clients of an in-process coordinator."""

from __future__ import annotations

import httpx

from veilfl.auth.enrollment import EnrollmentPolicy
from veilfl.auth.identity import Identity
from veilfl.auth.signed_request import coordinator_audience
from veilfl.server.client_access import ClientAccess
from veilfl.transport.signing import SigningAuth

__all__ = ["enroll", "open_access", "signed_client"]


def open_access(run_id: str, **kwargs: object) -> ClientAccess:
    """Access control with open enrollment and a fresh coordinator key."""
    options: dict[str, object] = {"policy": EnrollmentPolicy(open=True), **kwargs}
    return ClientAccess.create(run_id=run_id, coordinator=Identity.generate(), **options)  # type: ignore[arg-type]


def signed_client(
    transport: httpx.AsyncBaseTransport, run_id: str, identity: Identity | None = None
) -> tuple[Identity, httpx.AsyncClient]:
    """An httpx client that signs every request with ``identity`` (default: a new one)."""
    identity = identity or Identity.generate()
    client = httpx.AsyncClient(
        transport=transport,
        base_url="http://test",
        auth=SigningAuth(identity, coordinator_audience(run_id)),
    )
    return identity, client


async def enroll(
    transport: httpx.AsyncBaseTransport,
    run_id: str,
    *,
    name: str = "",
    token: str | None = None,
    identity: Identity | None = None,
) -> tuple[str, httpx.AsyncClient]:
    """Enroll a client; return its id and a new (unopened) signing httpx client."""
    identity, joining = signed_client(transport, run_id, identity)
    async with joining:
        response = await joining.post(
            "/v1/clients",
            json={"name": name, "public_key": identity.public_key_text, "enrollment_token": token},
        )
    assert response.status_code == 201, response.text
    return str(response.json()["client_id"]), signed_client(transport, run_id, identity)[1]
