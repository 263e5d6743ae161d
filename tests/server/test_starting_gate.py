"""While the coordinator sets its run up it listens already: its status says
"starting", every other request is a 503 that clients retry, and once the run's app
is set every request reaches it."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from veilfl.server.starting_gate import StartingGate


async def test_the_gate_answers_starting_until_the_runs_app_is_set() -> None:
    gate = StartingGate()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gate), base_url="http://coordinator"
    ) as http:
        status = await http.get("/v1/status")
        run = await http.get("/v1/run")
        assert status.status_code == 200 and status.json()["opened"] is False
        assert run.status_code == 503 and run.headers["retry-after"] == "1"
        assert "aggregators' signed policies" in run.json()["message"]

        app = FastAPI()

        @app.get("/v1/run")
        async def described() -> dict[str, str]:
            return {"run_id": "r"}

        gate.app = app
        assert (await http.get("/v1/run")).json() == {"run_id": "r"}
