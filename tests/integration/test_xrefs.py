"""The BNG id ⇄ M3 key cross-reference under concurrency: every order of one customer links the
customer at once, and none of them may fail on the unique key (they did, and were retried)."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.store import documents
from m3bng.store.models import CrossReference


async def link(sessions: async_sessionmaker[AsyncSession], bng_id: str, m3_key: str) -> None:
    async with sessions.begin() as session:
        await documents.put_xref(session, "customer", bng_id, m3_key)


async def rows(sessions: async_sessionmaker[AsyncSession]) -> list[tuple[str, str]]:
    async with sessions() as session:
        result = await session.execute(
            select(CrossReference.bng_id, CrossReference.m3_key).order_by(CrossReference.bng_id)
        )
        return [(row.bng_id, row.m3_key) for row in result]


async def test_many_concurrent_writers_of_one_link_all_succeed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    await asyncio.gather(*(link(sessions, "10001", "10001") for _ in range(20)))
    assert await rows(sessions) == [("10001", "10001")]


async def test_a_new_link_still_moves_the_old_one(sessions: async_sessionmaker[AsyncSession]) -> None:
    await link(sessions, "C-1", "100")
    await link(sessions, "C-2", "200")
    await link(sessions, "C-1", "200")  # M3 key 200 now belongs to C-1: both old links go
    assert await rows(sessions) == [("C-1", "200")]
    async with sessions() as session:
        assert await documents.get_xref(session, "customer", "C-1") == "200"
        assert await documents.get_xref_by_m3(session, "customer", "100") is None
