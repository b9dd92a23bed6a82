"""The simulator's side of the contract (docs/bng-api.md), spoken to with a plain HTTP client."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from m3bng.sim.bng import DEFAULT_API_KEY, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, BngSimConfig, create_app
from tests.support.bng import BngSim, running_bng_sim

KEY = {"X-API-Key": DEFAULT_API_KEY}


def write(key: str) -> dict[str, str]:
    return {**KEY, "Idempotency-Key": key}


async def test_authentication(bng_sim: BngSim) -> None:
    async with bng_sim.server.client() as http:
        missing = await http.get("/api/v1/customers")
        assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = await http.get("/api/v1/customers", headers={"X-API-Key": "nope"})
        assert wrong.json() == {
            "error": "invalid_api_key",
            "message": "the X-API-Key header does not hold a valid API key",
            "field": None,
        }
        assert (await http.get("/api/v1/customers", headers=KEY)).json() == {"items": [], "count": 0}

        by_form = await http.post(
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": DEFAULT_CLIENT_ID,
                "client_secret": DEFAULT_CLIENT_SECRET,
                "scope": "bng.write",
            },
        )
        assert by_form.status_code == 200
        assert by_form.json()["token_type"] == "Bearer" and by_form.json()["expires_in"] == 3600
        assert by_form.json()["scope"] == "bng.write"
        by_basic = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
        )
        bearer = {"Authorization": f"Bearer {by_basic.json()['access_token']}"}
        assert (await http.get("/api/v1/orders", headers=bearer)).status_code == 200
        bad_client = await http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(DEFAULT_CLIENT_ID, "wrong")
        )
        assert bad_client.status_code == 401 and bad_client.json()["error"] == "invalid_client"
        bad_grant = await http.post(
            "/oauth/token", data={"grant_type": "password"}, auth=(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET)
        )
        assert bad_grant.status_code == 400 and bad_grant.json()["error"] == "unsupported_grant_type"

        await bng_sim.expire_tokens()
        expired = await http.get("/api/v1/orders", headers=bearer)
        assert expired.status_code == 401 and expired.json()["error"] == "invalid_token"


async def test_writes_and_their_errors(bng_sim: BngSim) -> None:
    async with bng_sim.server.client() as http:
        url = "/api/v1/customers/C1"
        no_key = await http.put(url, json={}, headers=KEY)
        assert no_key.status_code == 400
        assert no_key.json()["error"] == "idempotency_key_required"
        assert no_key.json()["field"] == "Idempotency-Key"
        assert (await http.put(url, json={}, headers=write("k" * 256))).status_code == 400
        not_json = await http.put(url, content=b"{", headers=write("a"))
        assert (not_json.status_code, not_json.json()["error"]) == (400, "invalid_json")
        not_object = await http.put(url, json=[1], headers=write("b"))
        assert (not_object.status_code, not_object.json()["error"]) == (422, "invalid_body")
        mismatch = await http.put(url, json={"CustomerID": "C2"}, headers=write("c"))
        assert (mismatch.status_code, mismatch.json()["field"]) == (422, "CustomerID")
        # Validation failures are not remembered: the same key works once the body is right.
        created = await http.put(url, json={"CompanyName": "A"}, headers=write("c"))
        assert created.status_code == 201 and created.json() == {"CompanyName": "A", "CustomerID": "C1"}

        assert (await http.post(url, json={}, headers=write("d"))).status_code == 405
        assert (await http.get("/api/v1/widgets/1", headers=KEY)).status_code == 404
        shape = await http.get("/api/v1/inventory/100", headers=KEY)
        assert shape.status_code == 404 and "{Warehouse}/{SKU}" in shape.json()["message"]

        slash = await http.put("/api/v1/products/A%2FB", json={"Name": "x"}, headers=write("e"))
        assert slash.json()["SKU"] == "A/B"
        assert (await http.get("/api/v1/products/A%2FB", headers=KEY)).json()["Name"] == "x"

        missing = await http.patch("/api/v1/orders/SO-9", json={"Status": "Shipped"}, headers=write("f"))
        assert missing.status_code == 404
        replayed = await http.patch("/api/v1/orders/SO-9", json={"Status": "Shipped"}, headers=write("f"))
        assert replayed.status_code == 404 and replayed.headers["idempotent-replayed"] == "true"


async def test_seed_state_reset_calls_and_fault_validation(bng_sim: BngSim) -> None:
    await bng_sim.seed({"orders": {"SO-1": {"Status": "New"}}, "inventory": {"100/SKU-1": {"OnHand": 2}}})
    state = await bng_sim.state()
    assert state["orders"]["SO-1"] == {"Status": "New", "OrderID": "SO-1"}
    assert state["inventory"]["100/SKU-1"] == {"OnHand": 2, "Warehouse": "100", "SKU": "SKU-1"}
    assert set(state) == {"orders", "customers", "products", "vendors", "inventory", "invoices"}
    async with bng_sim.server.client() as http:
        bad_seed = await http.post("/_sim/seed", json={"widgets": {}})
        assert bad_seed.status_code == 422 and "widgets" in bad_seed.json()["message"]
        bad_faults = await http.post("/_sim/faults", json={"error_rate": 2})
        assert bad_faults.status_code == 422 and bad_faults.json()["field"] == "error_rate"
        for n in range(3):
            await http.get(f"/api/v1/orders/SO-{n}", headers=KEY)
        last = (await http.get("/_sim/calls", params={"limit": "2"})).json()
        assert [c["path"] for c in last] == ["/api/v1/orders/SO-1", "/api/v1/orders/SO-2"]
        assert set(last[0]) >= {"time", "method", "path", "idempotency_key", "status", "replayed"}
    assert (await bng_sim.stats())["by_status"] == {"200": 1, "404": 2}
    await bng_sim.reset()
    assert (await bng_sim.state())["orders"] == {} and await bng_sim.calls() == []


async def test_rate_limit_answers_429_with_retry_after(bng_sim: BngSim) -> None:
    await bng_sim.faults(rate_limit_per_second=3, retry_after=0.25)
    async with bng_sim.server.client() as http:
        answers = [await http.get("/api/v1/orders", headers=KEY) for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    assert answers[3].headers["retry-after"] == "0.25" and answers[3].json()["error"] == "rate_limited"
    stats = await bng_sim.stats()
    assert (stats["throttled"], stats["max_requests_per_second"]) == (2, 3)


async def test_outage_and_errors(bng_sim: BngSim) -> None:
    await bng_sim.faults(outage_seconds=0.3, paths=["orders"])
    async with bng_sim.server.client() as http:
        assert (await http.get("/api/v1/orders/SO-1", headers=KEY)).status_code == 503
        assert (await http.get("/api/v1/customers/C1", headers=KEY)).status_code == 404  # not in paths
        await asyncio.sleep(0.35)
        assert (await http.get("/api/v1/orders/SO-1", headers=KEY)).status_code == 404
        await bng_sim.faults(error_rate=1.0, error_status=502, methods=["PUT"], limit=1)
        assert (await http.put("/api/v1/orders/SO-1", json={}, headers=write("x"))).status_code == 502
        assert (await http.put("/api/v1/orders/SO-1", json={}, headers=write("x"))).status_code == 201


async def test_idempotency_keys_expire() -> None:
    async with running_bng_sim(BngSimConfig(idempotency_ttl_seconds=0.2)) as sim, sim.server.client() as http:
        assert (await http.put("/api/v1/vendors/V1", json={"A": 1}, headers=write("k"))).status_code == 201
        assert (await http.put("/api/v1/vendors/V1", json={"A": 2}, headers=write("k"))).status_code == 422
        await asyncio.sleep(0.25)
        assert (await http.put("/api/v1/vendors/V1", json={"A": 2}, headers=write("k"))).status_code == 200


async def test_works_mounted_under_a_prefix() -> None:
    sim = create_app()
    host = Starlette(routes=[Mount("/_sim/bng", app=sim)])
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://host") as http:
        body: dict[str, Any] = {"CompanyName": "A"}
        first = await http.put("/_sim/bng/api/v1/customers/C1", json=body, headers=write("m"))
        again = await http.put("/_sim/bng/api/v1/customers/C1", json=body, headers=write("m"))
        assert (first.status_code, again.headers.get("idempotent-replayed")) == (201, "true")
        calls = (await http.get("/_sim/bng/_sim/calls")).json()
        assert [c["path"] for c in calls] == ["/api/v1/customers/C1"] * 2
        token = await http.post(
            "/_sim/bng/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),
        )
        assert token.status_code == 200


def test_cli_checks_its_options() -> None:
    from typer.testing import CliRunner

    from m3bng.sim.cli import sim_app

    runner = CliRunner()
    assert "--rate-limit" in runner.invoke(sim_app, ["bng", "--help"]).output
    refused = runner.invoke(sim_app, ["bng", "--webhook-url", "http://127.0.0.1:1/webhooks/bng"])
    assert refused.exit_code != 0 and "--webhook-secret" in refused.output
