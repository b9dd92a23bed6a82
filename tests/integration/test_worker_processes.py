"""Real `m3bng worker` processes on PostgreSQL: scale-out without duplicates, and SIGKILL recovery."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.store.db import create_engine, session_factory
from m3bng.store.models import Event, Step
from m3bng.store.sql import utcnow
from tests.conftest import REPO_ROOT
from tests.support import postgres

pytestmark = pytest.mark.slow

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def pg_url(pg_template: str) -> AsyncIterator[str]:
    name = postgres.unique_name("m3bng_proc")
    await postgres.create_database(name, template=pg_template)
    yield postgres.async_url(name)
    await postgres.drop_database(name)


@pytest.fixture
async def pg_sessions(pg_url: str) -> AsyncIterator[Sessions]:
    engine = create_engine(Settings(database_url=pg_url))
    yield session_factory(engine)
    await engine.dispose()


@contextmanager
def workers(url: str, count: int, **env: str) -> Iterator[list[subprocess.Popen[bytes]]]:
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith("M3BNG_")},
        "PYTHONPATH": str(REPO_ROOT),
        "M3BNG_DATABASE_URL": url,
        "M3BNG_FLOW_PLUGINS": "tests.support.flows:register",
        "M3BNG_WORKER_POLL_INTERVAL": "0.05",
        "M3BNG_WORKER_CONCURRENCY": "8",
        "M3BNG_LOG_LEVEL": "WARNING",
        **env,
    }
    procs = [
        subprocess.Popen([sys.executable, "-m", "m3bng", "worker"], env=environment, cwd=REPO_ROOT)
        for _ in range(count)
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


async def bulk_add(sessions: Sessions, count: int, **data: Any) -> None:
    now = utcnow()
    rows = [
        {
            "source": "bng",
            "external_id": f"msg_{n}",
            "event_type": "test.record",
            "business_key": f"order:{n % 50}",
            "payload": {"type": "test.record", "data": {"n": n, **data}},
            "correlation_id": f"c{n}",
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "received_at": now,
            "updated_at": now,
            "checkpoint": {},
        }
        for n in range(count)
    ]
    async with sessions.begin() as session:
        await session.execute(insert(Event), rows)


async def wait_until(check: Callable[[], Any], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        await asyncio.sleep(0.1)


async def status_counts(sessions: Sessions) -> dict[str, int]:
    async with sessions() as session:
        result = await session.execute(select(Event.status, func.count()).group_by(Event.status))
        return {status: count for status, count in result.all()}


async def test_two_worker_processes_process_1000_events_exactly_once(
    pg_url: str, pg_sessions: Sessions
) -> None:
    await bulk_add(pg_sessions, 1000)
    with workers(pg_url, 2) as procs:

        async def all_done() -> bool:
            assert all(p.poll() is None for p in procs), "a worker process died"
            return (await status_counts(pg_sessions)) == {"done": 1000}

        await wait_until(all_done, timeout=180)
    async with pg_sessions() as session:
        per_event = (await session.execute(select(Step.event_id, func.count()).group_by(Step.event_id))).all()
        attempts = set((await session.execute(select(Event.attempts))).scalars())
    assert len(per_event) == 1000
    assert {count for _, count in per_event} == {1}
    assert attempts == {1}


async def test_sigkilled_worker_event_is_finished_by_another(pg_url: str, pg_sessions: Sessions) -> None:
    await bulk_add(pg_sessions, 1, sleep=3)
    with workers(pg_url, 1, M3BNG_LEASE_SECONDS="2") as [victim]:

        async def in_flight() -> bool:
            async with pg_sessions() as session:
                ev = (await session.execute(select(Event))).scalar_one()
                return bool(ev.status == "processing" and ev.checkpoint.get("started"))

        await wait_until(in_flight, timeout=30)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
    # Nobody cleans up by hand: a new worker finds the expired lease and finishes the event.
    with workers(pg_url, 1, M3BNG_LEASE_SECONDS="2"):

        async def done() -> bool:
            return (await status_counts(pg_sessions)) == {"done": 1}

        await wait_until(done, timeout=60)
    async with pg_sessions() as session:
        ev = (await session.execute(select(Event))).scalar_one()
        steps = list((await session.execute(select(Step))).scalars())
    assert ev.attempts == 2
    assert [(s.name, s.attempt, s.status) for s in steps] == [("effect", 2, "ok")]


async def test_sigterm_releases_the_lease_at_once(pg_url: str, pg_sessions: Sessions) -> None:
    await bulk_add(pg_sessions, 1, sleep=60)
    with workers(pg_url, 1, M3BNG_LEASE_SECONDS="60", M3BNG_SHUTDOWN_GRACE_SECONDS="0.5") as [proc]:

        async def in_flight() -> bool:
            async with pg_sessions() as session:
                ev = (await session.execute(select(Event))).scalar_one()
                return bool(ev.status == "processing" and ev.checkpoint.get("started"))

        await wait_until(in_flight, timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    async with pg_sessions() as session:
        ev = (await session.execute(select(Event))).scalar_one()
    # Handed back at once for another worker, not left until a 60 s lease runs out.
    assert (ev.status, ev.lease_owner, ev.attempts) == ("pending", None, 0)
