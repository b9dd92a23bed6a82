"""The production client against the simulator's gateway faults, over real HTTP.

What may have run in M3 decides what the client does: a write whose answer proves nothing is an
unknown outcome and is never resent; only answers that prove nothing ran are retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from m3bng.connectors.m3.client import M3Client
from m3bng.connectors.m3.errors import M3Throttled, M3TransientError, M3UnknownOutcome
from tests.integration.m3.conftest import SimHandle

MakeClient = Callable[..., M3Client]
ADD = {"CUTM": "TEMPLATE", "CUNO": "GW1", "CUNM": "Gateway test", "CUA1": "Street 1"}


async def adds(sim: SimHandle) -> int:
    return int((await sim.stats()).get("CRS610MI/Add", 0))


@pytest.mark.parametrize("status", [502, 503, 504])
@pytest.mark.parametrize("after", [True, False])
async def test_gateway_error_on_a_write_is_an_unknown_outcome_never_resent(
    m3_client: MakeClient, m3_sim: SimHandle, status: int, after: bool
) -> None:
    m3 = m3_client(m3_circuit_failures=100)
    await m3_sim.faults(
        programs=["CRS610MI/Add"], gateway_rate=1.0, gateway_status=status, gateway_after=after, limit=1
    )
    with pytest.raises(M3UnknownOutcome) as unknown:
        await m3.execute("CRS610MI", "Add", ADD)
    assert str(status) in str(unknown.value)
    assert await adds(m3_sim) == 1  # sent once, not retried in the call
    customers = (await m3_sim.state())["customers"]
    assert ("GW1" in customers) is after  # what happened is for the read-back to find out


async def test_reset_after_execution_is_an_unknown_outcome_and_the_write_happened(
    m3_client: MakeClient, m3_sim: SimHandle
) -> None:
    m3 = m3_client()
    await m3_sim.faults(programs=["CRS610MI/Add"], reset_rate=1.0, limit=1)
    with pytest.raises(M3UnknownOutcome):
        await m3.execute("CRS610MI", "Add", ADD)
    assert await adds(m3_sim) == 1 and "GW1" in (await m3_sim.state())["customers"]


@pytest.mark.parametrize("fault", [{"gateway_rate": 1.0, "gateway_status": 504}, {"reset_rate": 1.0}])
async def test_reads_are_retried_through_gateway_faults(
    m3_client: MakeClient, m3_sim: SimHandle, fault: dict[str, Any]
) -> None:
    m3 = m3_client()
    await m3_sim.faults(programs=["CRS610MI/GetBasicData"], limit=1, **fault)
    result = await m3.execute("CRS610MI", "GetBasicData", {"CUNO": "10001"})
    assert result.record["CUNO"] == "10001"
    assert (await m3_sim.stats())["CRS610MI/GetBasicData"] == 2


async def test_throttled_write_is_retried_because_it_never_ran(
    m3_client: MakeClient, m3_sim: SimHandle
) -> None:
    m3 = m3_client()
    await m3_sim.faults(programs=["CRS610MI/Add"], throttle={"rate": 1.0, "retry_after": 0}, limit=1)
    assert (await m3.execute("CRS610MI", "Add", ADD)).record["CUNO"] == "GW1"
    assert await adds(m3_sim) == 2


async def test_no_connection_is_retried_because_nothing_was_sent(m3_client: MakeClient) -> None:
    m3 = m3_client(m3_call_attempts=1, m3_base_url="http://127.0.0.1:9/M3/m3api-rest")
    with pytest.raises(M3TransientError) as failed:
        await m3.execute("CRS610MI", "Add", ADD)
    assert not isinstance(failed.value, M3UnknownOutcome | M3Throttled)


async def test_lists_answer_one_page_unless_asked_for_all(m3_client: MakeClient, m3_sim: SimHandle) -> None:
    customers = [{"CUNO": f"P{n:04d}", "CUNM": f"Customer {n}", "CUA1": "-"} for n in range(150)]
    (await m3_sim.control.post("/_sim/seed", json={"customers": customers})).raise_for_status()
    m3 = m3_client()
    page = await m3.execute("CRS610MI", "LstByNumber", {"CUNO": "P"})
    assert len(page.records) == 100  # M3's default when no maxrecs is sent
    everything = await m3.execute("CRS610MI", "LstByNumber", {"CUNO": "P"}, maxrecs=0)
    assert len([r for r in everything.records if r["CUNO"].startswith("P")]) == 150
    bulk = await m3.execute_many("CRS610MI", [("LstByNumber", {"CUNO": "P"})])
    assert not isinstance(bulk[0], Exception) and len(bulk[0].records) == 100
