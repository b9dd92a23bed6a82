"""Shares of an installation-wide limit between processes, on PostgreSQL (connectors/shares.py):
the recorded shares never add up to more than the limit, no process uses more than its share,
they even out as processes come, and a process that stops or dies gives its share back."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.connectors import shares
from m3bng.connectors.limits import Gate
from m3bng.connectors.shares import SharedLimit, ShareKeeper
from m3bng.store.db import create_engine, session_factory
from m3bng.store.models import LimitShare

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
Sessions = async_sessionmaker[AsyncSession]
TOTAL = 8


@pytest.fixture
async def pg(db_url: str) -> AsyncIterator[Sessions]:
    engine = create_engine(Settings(database_url=db_url))
    yield session_factory(engine)
    await engine.dispose()


def limit(ttl: float = 5.0) -> tuple[SharedLimit, Gate]:
    gate = Gate(TOTAL)
    return SharedLimit("m3.concurrency", TOTAL, ttl, gate.grow, gate.shrink), gate


async def recorded(sessions: Sessions) -> dict[str, int]:
    async with sessions() as session:
        rows = await session.execute(
            select(LimitShare.holder, LimitShare.slots).where(LimitShare.holder != "")
        )
        return {row.holder: row.slots for row in rows}


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Wait for ``check`` with a deadline: shares move every PERIOD, later on a busy machine."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.02)


def holdings(keepers: list[tuple[ShareKeeper, SharedLimit, Gate]]) -> list[int]:
    return sorted(lim.holding for _, lim, _ in keepers)


async def test_shares_even_out_and_never_add_up_to_more_than_the_limit(
    pg: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shares, "PERIOD", 0.05)
    stop = asyncio.Event()
    keepers: list[tuple[ShareKeeper, SharedLimit, Gate]] = []
    worst = 0

    async def watch() -> None:
        nonlocal worst
        while not stop.is_set():
            # Gate sizes before and after the read: a keeper records a bigger share before its
            # gate grows and shrinks its gate before its record, so the record read in between is
            # at least the smaller of the two sizes (comparing with one of them races the keeper).
            before = {keeper.holder: gate.size for keeper, _, gate in keepers}
            rows = await recorded(pg)
            worst = max(worst, sum(rows.values()))
            # No process uses (or may use) more than it has on record.
            for keeper, lim, gate in keepers:
                used = min(before.get(keeper.holder, gate.size), gate.size)
                assert used <= rows.get(keeper.holder, 0) or lim.holding == 0
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    try:
        for n in range(3):
            lim, gate = limit()
            keeper = ShareKeeper(pg, f"process-{n}", [lim])
            await keeper.start(stop)
            keepers.append((keeper, lim, gate))

        async def three_shares() -> bool:
            return holdings(keepers) == [2, 3, 3] and sorted((await recorded(pg)).values()) == [2, 3, 3]

        await eventually(three_shares)
        # A process that stops gives its share back; the others grow into it.
        first, _, _ = keepers.pop(0)
        await first.stop()

        async def two_shares() -> bool:
            return holdings(keepers) == [4, 4]

        await eventually(two_shares)
    finally:
        stop.set()
        await watcher
        for keeper, _, _ in keepers:
            await keeper.stop()
    assert worst <= TOTAL
    assert await recorded(pg) == {}


async def test_a_process_that_dies_keeps_its_share_until_it_expires(
    pg: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shares, "PERIOD", 0.05)
    stop, dead = asyncio.Event(), asyncio.Event()
    alive_limit, _ = limit(ttl=0.5)
    dying_limit, _ = limit(ttl=0.5)
    alive = ShareKeeper(pg, "alive", [alive_limit])
    dying = ShareKeeper(pg, "dying", [dying_limit])
    await dying.start(dead)
    await alive.start(stop)

    async def halves() -> bool:
        return (alive_limit.holding, dying_limit.holding) == (4, 4)

    await eventually(halves)
    dead.set()  # stops renewing, gives nothing back: as after SIGKILL
    died = time.monotonic()

    async def all_of_it() -> bool:
        return alive_limit.holding == TOTAL

    await eventually(all_of_it)
    # The dead one's share was not free before it expired (its row lives 0.5 s after renewal).
    assert time.monotonic() - died >= 0.3
    stop.set()
    await alive.stop()


async def test_random_comings_and_goings_never_overrun_the_limit(
    pg: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shares, "PERIOD", 0.02)
    rng = random.Random(5)
    stop = asyncio.Event()
    running: dict[str, tuple[ShareKeeper, Gate]] = {}
    in_flight = 0
    most = 0

    async def caller(gate: Gate) -> None:
        nonlocal in_flight, most
        while not stop.is_set():
            async with gate:
                in_flight += 1
                most = max(most, in_flight)
                await asyncio.sleep(rng.uniform(0.001, 0.02))
                in_flight -= 1
            await asyncio.sleep(0)

    callers: list[asyncio.Task[None]] = []
    for step in range(30):
        if running and rng.random() < 0.4:
            holder = rng.choice(sorted(running))
            keeper, _ = running.pop(holder)
            await keeper.stop()
        else:
            lim, gate = limit(ttl=1.0)
            keeper = ShareKeeper(pg, f"p{step}", [lim])
            await keeper.start(stop)
            running[keeper.holder] = (keeper, gate)
            callers += [asyncio.create_task(caller(gate)) for _ in range(6)]
        await asyncio.sleep(rng.uniform(0.02, 0.1))
    for task in callers:
        task.cancel()
    await asyncio.gather(*callers, return_exceptions=True)
    stop.set()
    for keeper, _ in running.values():
        await keeper.stop()
    assert 0 < most <= TOTAL
