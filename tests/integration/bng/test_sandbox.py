"""Sandbox mode: the production BNG client talks to an in-process simulator, no socket."""

from __future__ import annotations

import httpx

from m3bng.config import Settings
from m3bng.sandbox import BNG_SIM_MOUNT, sandbox_bng_client


async def test_sandbox_client_writes_to_the_in_process_simulator() -> None:
    bng, sim_app = sandbox_bng_client(Settings())
    try:
        written = await bng.put("/api/v1/customers/C1", {"CompanyName": "A"}, idempotency_key="sandbox-1")
        assert written.status == 201
        assert await bng.get("/customers/C1") == {"CompanyName": "A", "CustomerID": "C1"}
    finally:
        await bng.aclose()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim_app), base_url="http://sim") as http:
        state = (await http.get("/_sim/state")).json()
    assert state["customers"]["C1"]["CompanyName"] == "A"
    assert BNG_SIM_MOUNT == "/_sim/bng"
