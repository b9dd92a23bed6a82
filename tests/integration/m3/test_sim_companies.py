"""The M3 simulator holds several companies (CONO), each with its own data and number series."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from m3bng.connectors.m3.client import M3Client
from m3bng.connectors.m3.errors import M3NotFound
from m3bng.sim.m3 import M3SimConfig
from tests.integration.m3.conftest import SimHandle

MakeClient = Callable[..., M3Client]

COMPANY_200: dict[str, Any] = {
    "company": "200",
    "divi": "BBB",
    "warehouses": [{"WHLO": "100", "WHNM": "Lager 200"}],
    "customers": [{"CUNO": "20001", "CUNM": "Second Company Kunde", "CUA1": "Gata 2", "STAT": "20"}],
    "items": [{"ITNO": "BIKE-100", "ITDS": "City bike (200)", "ITTY": "FG", "UNMS": "PCS", "STAT": "20"}],
    "stock": [{"WHLO": "100", "ITNO": "BIKE-100", "STQT": 7, "ALQT": 0}],
}


async def seed_company_200(m3_sim: SimHandle) -> None:
    response = await m3_sim.control.post("/_sim/seed", json=COMPANY_200)
    response.raise_for_status()
    assert response.json() == {"status": "seeded", "company": "200", "divi": "BBB"}


async def state_of(m3_sim: SimHandle, company: str) -> dict[str, Any]:
    response = await m3_sim.control.get("/_sim/state", params={"company": company})
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


async def enter_order(m3: M3Client, cuno: str, cuor: str) -> str:
    head = await m3.execute("OIS100MI", "AddBatchHead", {"CUNO": cuno, "CUOR": cuor, "WHLO": "100"})
    temporary = head.record["ORNO"]
    await m3.execute("OIS100MI", "AddBatchLine", {"ORNO": temporary, "ITNO": "BIKE-100", "ORQT": 2})
    return (await m3.execute("OIS100MI", "Confirm", {"ORNO": temporary})).record["ORNO"]


@pytest.mark.parametrize("version", ["v2", "v1"])
async def test_order_in_company_200_stays_there_with_its_own_series(
    m3_client: MakeClient, m3_sim: SimHandle, version: str
) -> None:
    await seed_company_200(m3_sim)
    m200 = m3_client(m3_cono=200, m3_divi="BBB", m3_api_version=version)
    m100 = m3_client(m3_api_version=version)

    orno_200 = await enter_order(m200, "20001", "BNG-200")
    # master data is per company: company 200's customer is unknown in 100, and the other way round
    with pytest.raises(M3NotFound):
        await m100.execute("OIS100MI", "AddBatchHead", {"CUNO": "20001", "CUOR": "X", "WHLO": "100"})
    with pytest.raises(M3NotFound):
        await m200.execute("CRS610MI", "GetBasicData", {"CUNO": "10001"})
    # the order is not visible in company 100, whose ORNO series starts from its own beginning
    with pytest.raises(M3NotFound):
        await m100.execute("OIS100MI", "GetHead", {"ORNO": orno_200})
    orno_100 = await enter_order(m100, "10001", "BNG-100")
    assert orno_100 == orno_200

    head = (await m200.execute("OIS100MI", "GetHead", {"ORNO": orno_200})).record
    assert (head["CUOR"], head["DIVI"]) == ("BNG-200", "BBB")
    customer = (await m200.execute("CRS610MI", "GetBasicData", {"CUNO": "20001"})).record
    assert (customer["CONO"], customer["DIVI"]) == ("200", "BBB")
    balance = (await m200.execute("MMS200MI", "GetItmWhsBal", {"WHLO": "100", "ITNO": "BIKE-100"})).record
    assert (balance["CONO"], balance["STQT"], balance["ALQT"]) == ("200", "7", "2")
    default = (await m100.execute("CRS610MI", "GetBasicData", {"CUNO": "10001"})).record
    assert (default["CONO"], default["DIVI"]) == ("100", "AAA")

    in_200, in_100 = await state_of(m3_sim, "200"), await m3_sim.state()
    assert [o["head"]["CUOR"] for o in in_200["orders"].values()] == ["BNG-200"]
    assert [o["head"]["CUOR"] for o in in_100["orders"].values()] == ["BNG-100"]
    assert in_200["stock"]["100/BIKE-100"]["ALQT"] == "2"
    assert await state_of(m3_sim, "100") == in_100


async def test_unknown_company_is_an_mi_error_and_has_no_state(
    m3_client: MakeClient, m3_sim: SimHandle
) -> None:
    m3 = m3_client(m3_cono=300)
    with pytest.raises(M3NotFound) as unknown:
        await m3.execute("CRS610MI", "GetBasicData", {"CUNO": "10001"})
    assert "Company 300 does not exist" in str(unknown.value)
    response = await m3_sim.control.get("/_sim/state", params={"company": "300"})
    assert response.status_code == 404 and "300" in response.json()["error"]
    [call] = await m3_sim.calls()
    assert (call["cono"], call["outcome"]) == ("300", "error")


async def test_bulk_call_runs_in_the_named_company(m3_client: MakeClient, m3_sim: SimHandle) -> None:
    await seed_company_200(m3_sim)
    m3 = m3_client(m3_cono=200, m3_divi="BBB")
    results = await m3.execute_many(
        "MMS200MI",
        [
            ("GetItmWhsBal", {"WHLO": "100", "ITNO": "BIKE-100"}),
            ("GetItmWhsBal", {"WHLO": "100", "ITNO": "HELMET-1"}),  # only in company 100
        ],
    )
    first, second = results
    assert not isinstance(first, Exception)
    assert (first.record["CONO"], first.record["STQT"]) == ("200", "7")
    assert isinstance(second, M3NotFound)
    calls = await m3_sim.calls()
    assert [(c["cono"], c["divi"], c["outcome"]) for c in calls] == [
        ("200", "BBB", "ok"),
        ("200", "BBB", "error"),
    ]


async def test_bulk_call_takes_the_company_from_the_body_too(m3_sim: SimHandle) -> None:
    """Without query parameters the bulk endpoint reads ``cono``/``divi`` from the JSON body."""
    await seed_company_200(m3_sim)
    config = M3SimConfig()
    granted = await m3_sim.control.post(
        f"/{config.ti}/as/token.oauth2",
        data={
            "grant_type": "password",
            "client_id": config.client_id,
            "client_secret": config.client_secret,
            "username": config.saak,
            "password": config.sask,
        },
    )
    granted.raise_for_status()
    body = {
        "program": "CRS610MI",
        "cono": 200,
        "divi": "BBB",
        "transactions": [{"transaction": "GetBasicData", "record": {"CUNO": "20001"}}],
    }
    response = await m3_sim.control.post(
        f"/{config.ti}/M3/m3api-rest/v2/execute",
        json=body,
        headers={"Authorization": f"Bearer {granted.json()['access_token']}"},
    )
    response.raise_for_status()
    [result] = response.json()["results"]
    assert (result["records"][0]["CONO"], result["records"][0]["DIVI"]) == ("200", "BBB")
    [call] = await m3_sim.calls()
    assert (call["cono"], call["divi"]) == ("200", "BBB")


async def test_call_log_names_the_company(m3_client: MakeClient, m3_sim: SimHandle) -> None:
    await seed_company_200(m3_sim)
    await m3_client().execute("CRS610MI", "GetBasicData", {"CUNO": "10001"})
    await m3_client(m3_cono=200).execute("CRS610MI", "GetBasicData", {"CUNO": "20001"})
    await m3_client(m3_cono=100, m3_divi="AAB").execute("CRS610MI", "GetBasicData", {"CUNO": "10002"})
    calls = await m3_sim.calls()
    assert [(c["cono"], c["divi"], c["record"]["CUNO"]) for c in calls] == [
        ("100", "AAA", "10001"),
        ("200", "BBB", "20001"),
        ("100", "AAB", "10002"),
    ]


async def test_reset_forgets_other_companies(m3_sim: SimHandle) -> None:
    await seed_company_200(m3_sim)
    assert (await state_of(m3_sim, "200"))["customers"].keys() == {"20001"}
    (await m3_sim.control.post("/_sim/reset")).raise_for_status()
    assert (await m3_sim.control.get("/_sim/state", params={"company": "200"})).status_code == 404
