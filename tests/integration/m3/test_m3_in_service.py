"""M3 inside the service: the standalone simulator CLI, `m3bng m3 check`, metadata cached in the
store, the sandbox wiring, and an outage that must not dead-letter anything."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.connectors import Connectors
from m3bng.connectors.m3.client import M3Client
from m3bng.connectors.m3.metadata import M3Metadata
from m3bng.flows.runtime import FlowContext, FlowRegistry
from m3bng.inbox.ingest import ingest_event
from m3bng.inbox.worker import Worker
from m3bng.store.models import DeadLetter, Event, M3FieldMetadata
from tests.conftest import LiveServer, free_port
from tests.integration.m3.conftest import SimHandle
from tests.support.webhooks import TEST_SECRET

Sessions = async_sessionmaker[AsyncSession]


async def test_standalone_simulator_and_m3_check(tmp_path: Path) -> None:
    port = free_port()
    ionapi = tmp_path / "sim.ionapi"
    env = {k: v for k, v in os.environ.items() if not k.startswith("M3BNG_")}
    sim = subprocess.Popen(
        [sys.executable, "-m", "m3bng", "sim", "m3", "--port", str(port), "--write-ionapi", str(ionapi)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                async with httpx.AsyncClient() as client:
                    if (await client.get(f"http://127.0.0.1:{port}/_sim/stats")).status_code == 200:
                        break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "simulator did not start"
            await asyncio.sleep(0.1)
        keys = json.loads(ionapi.read_text())
        assert {"ti", "ci", "cs", "iu", "pu", "ot", "or", "saak", "sask"} <= set(keys)
        check = subprocess.run(
            [sys.executable, "-m", "m3bng", "m3", "check"],
            env={**env, "M3BNG_IONAPI_FILE": str(ionapi), "M3BNG_WEBHOOK_SECRETS": TEST_SECRET,
                 "M3BNG_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )  # fmt: skip
        assert check.returncode == 0, check.stderr
        assert "CONO=100" in check.stdout and "DIVI=AAA" in check.stdout
        assert f"127.0.0.1:{port}" in check.stdout
    finally:
        sim.terminate()
        sim.wait(timeout=10)


async def test_metadata_is_fetched_once_and_cached_in_the_store(
    m3_client: Callable[..., M3Client], m3_sim: SimHandle, sessions: Sessions
) -> None:
    metadata = M3Metadata(m3_client(), sessions)
    # Many flows asking at once (a worker starting under load) make one call, not one each.
    fields, *others = await asyncio.gather(*(metadata.fields("CRS610MI", "Add") for _ in range(8)))
    assert all(other == fields for other in others)
    assert fields["CUNM"].mandatory and fields["CUNM"].length == 36
    problems = await metadata.check("CRS610MI", "Add", {"CUTM": "TEMPLATE", "CUNM": "x" * 40})
    assert [str(p) for p in problems] == [
        "CUA1: is mandatory in CRS610MI/Add",
        "CUNM: is 40 characters; M3 allows 36",
    ]
    # A new process (new memory cache) reads the store, not M3.
    again = M3Metadata(m3_client(), sessions)
    assert (await again.fields("CRS610MI", "Add")) == fields
    stats = await m3_sim.stats()
    assert stats["MRS001MI/LstFields"] == 1
    async with sessions() as session:
        assert (await session.execute(select(func.count()).select_from(M3FieldMetadata))).scalar_one() == 1


async def test_sandbox_serves_the_simulator_and_its_client_uses_it(
    make_settings: Callable[..., Settings], live_server: Callable[..., LiveServer]
) -> None:
    server = live_server(make_settings())
    async with server, server.client() as client:
        m3 = server.app.state.runtime.connectors.m3
        assert m3 is not None
        result = await m3.execute("CRS610MI", "GetBasicData", {"CUNO": "10001"})
        assert result.record["CUNM"] == "Nordic Bikes AB"
        stats = (await client.get("/_sim/m3/_sim/stats")).json()
        assert stats["token_requests"] == 1 and stats["mi_calls"] == 1


async def test_m3_outage_opens_the_circuit_and_dead_letters_nothing(
    m3_client: Callable[..., M3Client],
    m3_sim: SimHandle,
    make_settings: Callable[..., Settings],
    sessions: Sessions,
) -> None:
    """Events wait while M3 is down (no attempt used) and complete once it is back."""
    m3 = m3_client(m3_call_attempts=1, m3_circuit_failures=2, m3_circuit_reset_seconds=0.3)

    async def flow(ctx: FlowContext) -> None:
        assert ctx.connectors.m3 is not None
        cuno = ctx.payload["data"]["CustomerID"]
        async with ctx.step(
            "get_customer", target="m3", operation="CRS610MI/GetBasicData", request={"CUNO": cuno}
        ) as step:
            step.response = (
                await ctx.connectors.m3.execute("CRS610MI", "GetBasicData", {"CUNO": cuno})
            ).record

    registry = FlowRegistry()
    registry.register("customer.updated", flow)
    for n in range(6):
        await ingest_event(
            sessions,
            source="bng",
            external_id=f"msg_{n}",
            event_type="customer.updated",
            payload={"type": "customer.updated", "data": {"CustomerID": "10001"}},
            business_key=f"customer:{n}",
        )
    await m3_sim.faults(outage_seconds=1.5)
    # Two transient failures would normally use up this short schedule and dead-letter the events.
    settings = make_settings(retry_schedule=[0.05], worker_poll_interval=0.05)
    worker = Worker(settings, sessions, registry, connectors=Connectors(m3=m3))
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    deadline = time.monotonic() + 30
    while True:
        async with sessions() as session:
            statuses = list((await session.execute(select(Event.status))).scalars())
        if statuses == ["done"] * 6 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    stop.set()
    await task
    async with sessions() as session:
        dead = (await session.execute(select(func.count()).select_from(DeadLetter))).scalar_one()
    assert statuses == ["done"] * 6
    assert dead == 0
    assert m3.breaker.state == "closed"
