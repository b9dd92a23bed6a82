"""The production M3 client against the M3 simulator over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from m3bng.connectors.m3.client import M3Client
from m3bng.connectors.m3.errors import (
    M3DataError,
    M3Duplicate,
    M3NotFound,
    M3ProgramError,
    M3Throttled,
    M3TransientError,
    M3Unavailable,
    M3UnknownOutcome,
)
from tests.integration.m3.conftest import SimHandle

MakeClient = Callable[..., M3Client]


def token_requests(stats: dict[str, Any]) -> int:
    return int(stats["token_requests"])


@pytest.mark.parametrize("version", ["v2", "v1"])
async def test_customer_round_trip_in_both_api_versions(m3_client: MakeClient, version: str) -> None:
    m3 = m3_client(m3_api_version=version)
    created = await m3.execute(
        "CRS610MI",
        "Add",
        {"CUTM": "TEMPLATE", "CUNO": f"N{version}", "CUNM": "Nordic Bikes", "CUA1": "Main 1"},
    )
    assert created.record.get("CUNO", f"N{version}") == f"N{version}"
    got = await m3.execute("CRS610MI", "GetBasicData", {"CUNO": f"N{version}"})
    assert got.record["CUNM"] == "Nordic Bikes"  # right-trimmed even where v1 pads
    with pytest.raises(M3Duplicate) as dup:
        await m3.execute(
            "CRS610MI", "Add", {"CUTM": "TEMPLATE", "CUNO": f"N{version}", "CUNM": "X", "CUA1": "Y"}
        )
    assert dup.value.program == "CRS610MI" and dup.value.transaction == "Add"
    with pytest.raises(M3NotFound):
        await m3.execute("CRS610MI", "GetBasicData", {"CUNO": "NOPE"})
    with pytest.raises(M3DataError) as too_long:
        await m3.execute("CRS610MI", "Add", {"CUTM": "TEMPLATE", "CUNM": "X" * 80, "CUA1": "Y"})
    assert too_long.value.field == "CUNM"
    with pytest.raises(M3DataError) as missing:
        await m3.execute("CRS610MI", "Add", {"CUTM": "TEMPLATE", "CUA1": "Y"})
    assert missing.value.field == "CUNM"
    with pytest.raises(M3ProgramError):
        await m3.execute("CRS610MI", "NoSuchTransaction")


async def test_order_batch_entry_gives_real_order_number(m3_client: MakeClient, m3_sim: SimHandle) -> None:
    m3 = m3_client()
    head = await m3.execute("OIS100MI", "AddBatchHead", {"CUNO": "10001", "CUOR": "BNG-1001", "WHLO": "100"})
    temporary = head.record["ORNO"]
    await m3.execute("OIS100MI", "AddBatchLine", {"ORNO": temporary, "ITNO": "BIKE-100", "ORQT": 2})
    confirmed = await m3.execute("OIS100MI", "Confirm", {"ORNO": temporary})
    real = confirmed.record["ORNO"]
    assert real and real != temporary and confirmed.record["STAT"] == "22"
    state = await m3_sim.state()
    assert temporary not in state["batches"]
    assert state["orders"][real]["head"]["CUOR"] == "BNG-1001"
    found = await m3.execute("OIS100MI", "LstHead", {"CUNO": "10001"})
    assert [r["ORNO"] for r in found.records if r["CUOR"] == "BNG-1001"] == [real]
    assert (await m3.execute("OIS100MI", "GetOrderNo", {"ORNO": temporary})).record["ORNR"] == real
    with pytest.raises(M3NotFound) as gone:
        await m3.execute("OIS100MI", "Confirm", {"ORNO": temporary})
    assert gone.value.field == "ORNO"


async def test_concurrent_calls_share_one_token_and_renew_after_expiry(
    m3_client: MakeClient, m3_sim: SimHandle
) -> None:
    m3 = m3_client(m3_max_concurrency=16)
    await asyncio.gather(
        *(m3.execute("MRS001MI", "LstTransactions", {"MINM": "CRS610MI"}) for _ in range(30))
    )
    assert token_requests(await m3_sim.stats()) == 1
    (await m3_sim.control.post("/_sim/tokens/expire")).raise_for_status()
    # The gateway now answers 401: the client renews once and the call still succeeds.
    await asyncio.gather(
        *(m3.execute("MRS001MI", "LstTransactions", {"MINM": "CRS610MI"}) for _ in range(10))
    )
    assert token_requests(await m3_sim.stats()) == 2


async def test_concurrency_cap_is_never_exceeded(m3_client: MakeClient, m3_sim: SimHandle) -> None:
    m3 = m3_client(m3_max_concurrency=4)
    await m3_sim.faults(latency_ms=30)
    await asyncio.gather(
        *(m3.execute("MRS001MI", "LstTransactions", {"MINM": "OIS100MI"}) for _ in range(24))
    )
    stats = await m3_sim.stats()
    assert 1 < stats["max_in_flight"] <= 4


async def test_throttling_and_server_errors(m3_client: MakeClient, m3_sim: SimHandle) -> None:
    m3 = m3_client(m3_call_attempts=1, m3_circuit_failures=100)
    await m3_sim.faults(throttle={"rate": 1.0, "retry_after": 7})
    with pytest.raises(M3Throttled) as throttled:
        await m3.execute("MRS001MI", "LstTransactions", {"MINM": "OIS100MI"})
    assert throttled.value.retry_after == 7
    await m3_sim.faults(error_rate=1.0)
    with pytest.raises(M3TransientError):
        await m3.execute("MRS001MI", "LstTransactions", {"MINM": "OIS100MI"})


async def test_lost_response_is_an_unknown_outcome_and_the_write_happened(
    m3_client: MakeClient, m3_sim: SimHandle
) -> None:
    m3 = m3_client(m3_timeout=1)
    await m3_sim.faults(drop_response_rate=1.0)
    with pytest.raises(M3UnknownOutcome):
        await m3.execute(
            "CRS610MI", "Add", {"CUTM": "TEMPLATE", "CUNO": "LOST1", "CUNM": "Lost", "CUA1": "Street"}
        )
    await m3_sim.faults()
    # Resolved by lookup, never by a blind resend: the record is there.
    assert (await m3.execute("CRS610MI", "GetBasicData", {"CUNO": "LOST1"})).record["CUNM"] == "Lost"


async def test_outage_opens_the_circuit_then_recovers_by_itself(
    m3_client: MakeClient, m3_sim: SimHandle
) -> None:
    m3 = m3_client(m3_call_attempts=1, m3_circuit_failures=3, m3_circuit_reset_seconds=0.5)
    await m3_sim.faults(outage_seconds=1.0)
    outcomes = []
    for _ in range(5):
        try:
            await m3.execute("MRS001MI", "LstTransactions", {"MINM": "OIS100MI"})
            outcomes.append("ok")
        except M3Unavailable:
            outcomes.append("circuit_open")
        except M3TransientError:
            outcomes.append("failed")
    # The failure that opens the circuit already reports "target down": the event will wait.
    assert outcomes == ["failed", "failed", "circuit_open", "circuit_open", "circuit_open"]
    calls_during_outage = (await m3_sim.stats())["mi_calls"]
    await asyncio.sleep(1.2)  # outage over, reset time passed: the probe closes the circuit
    await m3.execute("MRS001MI", "LstTransactions", {"MINM": "OIS100MI"})
    assert m3.breaker.state == "closed"
    assert (await m3_sim.stats())["mi_calls"] == calls_during_outage + 1
