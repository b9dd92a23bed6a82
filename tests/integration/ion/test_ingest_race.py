"""ingest_bod under concurrency, straight against the store (both backends): one event per messageId."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.connectors.ion.bod import parse_bod
from m3bng.connectors.ion.ingest import ingest_bod
from tests.integration.ion.conftest import ion_events, message_ids
from tests.unit.ion.bods import LIMIT, bod


async def test_one_message_id_many_bodids(sessions: async_sessionmaker[AsyncSession]) -> None:
    base = parse_bod(bod("SyncSalesOrder.xml"), max_bytes=LIMIT)
    variants = [replace(base, bodid=f"{base.bodid}&n={n}") for n in range(10)]
    results = await asyncio.gather(
        *(ingest_bod(sessions, v, payload=v.to_payload(), message_id="msg-same") for v in variants)
    )
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.event_id for r in results}) == 1
    assert len(await ion_events(sessions)) == 1
    assert await message_ids(sessions) == {"msg-same": results[0].event_id}


async def test_one_bodid_many_message_ids(sessions: async_sessionmaker[AsyncSession]) -> None:
    parsed = parse_bod(bod("SyncSalesOrder.xml"), max_bytes=LIMIT)
    results = await asyncio.gather(
        *(ingest_bod(sessions, parsed, payload=parsed.to_payload(), message_id=f"msg-{n}") for n in range(10))
    )
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.event_id for r in results}) == 1
    winner = next(r for r in results if not r.duplicate)
    assert list((await message_ids(sessions)).values()) == [winner.event_id]  # only the winner's messageId


async def test_without_message_id_and_long_bodid(sessions: async_sessionmaker[AsyncSession]) -> None:
    parsed = parse_bod(bod("SyncItemMaster.xml"), max_bytes=LIMIT)
    long = replace(parsed, bodid=parsed.bodid + "&x=" + "y" * 300)
    first = await ingest_bod(sessions, long, payload=long.to_payload(), message_id=None)
    again = await ingest_bod(sessions, long, payload=long.to_payload(), message_id=None)
    assert not first.duplicate and again.duplicate and first.event_id == again.event_id
    (event,) = await ion_events(sessions)
    assert event.external_id.startswith("bodid-sha256:") and len(event.external_id) == 13 + 64
    assert event.payload["bod"]["bodid"] == long.bodid
    assert await message_ids(sessions) == {}
