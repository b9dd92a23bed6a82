"""A process started while PostgreSQL is down waits for it (store/db.wait_until_reachable)
instead of exiting; what no wait can fix fails at once."""

from __future__ import annotations

import asyncio
import socket

import pytest
from sqlalchemy.exc import SQLAlchemyError

from m3bng.config import Settings
from m3bng.store.db import create_engine, wait_until_reachable
from tests.support.cluster import PrivatePostgres


async def test_waits_for_a_postgresql_that_comes_up(private_pg: PrivatePostgres) -> None:
    url = await private_pg.create_database("waiting")
    private_pg.stop()
    engine = create_engine(Settings(database_url=url, webhook_secrets=["x" * 32]))
    try:
        waiting = asyncio.create_task(wait_until_reachable(engine, deadline_seconds=60))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # still refused: still waiting
        await asyncio.to_thread(private_pg.start)
        await asyncio.wait_for(waiting, timeout=60)
    finally:
        await engine.dispose()


async def test_gives_up_after_the_deadline_and_not_at_all_for_other_errors() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = create_engine(
        Settings(database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/x", webhook_secrets=["x" * 32])
    )
    unknown_host = create_engine(
        Settings(
            database_url="postgresql+asyncpg://postgres@no-such-host.invalid/x", webhook_secrets=["x" * 32]
        )
    )
    try:
        with pytest.raises((SQLAlchemyError, OSError)):
            await wait_until_reachable(refused, deadline_seconds=0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises((SQLAlchemyError, OSError)):
            await wait_until_reachable(unknown_host, deadline_seconds=30)
        assert loop.time() - started < 25  # not waited for
    finally:
        await refused.dispose()
        await unknown_host.dispose()
