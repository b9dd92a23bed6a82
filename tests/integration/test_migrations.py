from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from sqlalchemy.exc import IntegrityError

from m3bng.config import Settings
from m3bng.store import documents, migrate, queue
from m3bng.store.db import create_engine, session_factory
from m3bng.store.models import Base
from m3bng.store.queue import NewEvent
from tests.support import postgres

TABLES = {
    "events",
    "steps",
    "dead_letters",
    "replays",
    "audit_log",
    "xrefs",
    "m3_field_metadata",
    "ion_messages",
    "document_versions",
    "bng_state",
    "inventory_snapshots",
    "scheduler_leases",
    "event_keys",
    "controls",
    "bulk_replays",
    "alerts",
    "sync_records",
    "sync_runs",
    "reconcile_runs",
    "reconcile_findings",
    "mapping_versions",
    "mapping_conflicts",
    "alembic_version",
}


async def _tables(url: str) -> set[str]:
    engine = create_engine(Settings(database_url=url))
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


def _model_drift(conn: Connection) -> list[Any]:
    """What autogenerate would add: tables, columns, indexes the models have and the migrations lack."""
    context = MigrationContext.configure(conn, opts={"compare_type": False})
    diffs = compare_metadata(context, Base.metadata)
    return [
        d
        for d in diffs
        if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version")
    ]


async def _up_down_up(url: str) -> None:
    engine = create_engine(Settings(database_url=url))
    try:
        assert not await migrate.is_up_to_date(engine)
        await migrate.upgrade(engine)
        assert await migrate.is_up_to_date(engine)
        assert await _tables(url) >= TABLES
        await migrate.downgrade(engine, "base")
        assert await _tables(url) == {"alembic_version"}
        await migrate.upgrade(engine)
        await migrate.upgrade(engine)  # a second upgrade is a no-op
        assert await migrate.is_up_to_date(engine)
        async with engine.connect() as conn:
            drift = await conn.run_sync(_model_drift)
        assert drift == [], f"the migrations and store/models.py disagree: {drift}"
    finally:
        await engine.dispose()


async def test_migrations_on_fresh_sqlite_file(tmp_path: Path) -> None:
    await _up_down_up(f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}")


async def test_migrations_on_fresh_postgresql() -> None:
    await postgres.ensure_running()
    name = postgres.unique_name("m3bng_mig")
    await postgres.create_database(name)
    try:
        await _up_down_up(postgres.async_url(name))
    finally:
        await postgres.drop_database(name)


async def test_upgrading_to_instances_keeps_rows_as_the_default_instance(tmp_path: Path) -> None:
    """0008 (several BNG instances): rows written before it belong to ``default``, and the same
    ids can then be taken by another instance without breaking the old keys."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(Settings(database_url=url))
    try:
        await migrate.upgrade(engine, "0007")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO events (source, external_id, event_type, correlation_id, status, attempts,"
                    " next_attempt_at, received_at, updated_at, checkpoint) VALUES ('bng', 'msg_1',"
                    " 'order.created', 'c', 'done', 1, '2026-12-01', '2026-12-01', '2026-12-01', '{}')"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO xrefs (entity, bng_id, m3_key, created_at, updated_at)"
                    " VALUES ('order', 'SO-1', '1000001', '2026-12-01', '2026-12-01')"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO bng_state (entity, bng_id, data, origin, updated_at)"
                    " VALUES ('order', 'SO-1', '{}', 'bng', '2026-12-01')"
                )
            )
        await migrate.upgrade(engine)
        async with engine.begin() as conn:
            for table in ("events", "xrefs", "bng_state"):
                assert (await conn.execute(text(f"SELECT instance FROM {table}"))).scalar_one() == "default"
        sessions = session_factory(engine)
        async with sessions.begin() as session:
            # The same webhook again is still a duplicate, and the link and BNG state still found.
            again = NewEvent("bng", "msg_1", "order.created", {}, None, "c2")
            assert (await queue.insert_event_once(session, again))[1] is False
            assert await documents.get_xref(session, "order", "SO-1") == "1000001"
            assert await documents.get_bng_state(session, "order", "SO-1") == {}
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO xrefs (instance, entity, bng_id, m3_key, created_at, updated_at)"
                    " VALUES ('us', 'order', 'SO-1', '1000001', '2026-12-01', '2026-12-01')"
                )
            )
        with pytest.raises(IntegrityError):  # within one instance the keys stay unique
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO xrefs (entity, bng_id, m3_key, created_at, updated_at)"
                        " VALUES ('order', 'SO-1', '1000002', '2026-12-01', '2026-12-01')"
                    )
                )
    finally:
        await engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_upgrading_from_0008_adds_mapping_versions_with_one_live_per_flow(
    backend: str, tmp_path: Path
) -> None:
    """0009 (mapping versions): an installation at 0008 keeps its events and gains the versions
    table, whose partial unique index lets no flow have two live versions."""
    name = None
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    else:
        await postgres.ensure_running()
        name = postgres.unique_name("m3bng_mig9")
        await postgres.create_database(name)
        url = postgres.async_url(name)
    engine = create_engine(Settings(database_url=url))
    row = (
        "INSERT INTO mapping_versions (flow, version, file_name, text, content_hash, source, state,"
        " author, created_at) VALUES ('order_to_cash', {n}, 'o.yaml', 't', 'h', 'file', '{state}', 'x',"
        " '2026-12-07')"
    )
    try:
        await migrate.upgrade(engine, "0008")
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO events (source, external_id, event_type, correlation_id, status, attempts,"
                    " next_attempt_at, received_at, updated_at, checkpoint, mapping_hash) VALUES ('bng',"
                    " 'msg_1', 'order.created', 'c', 'done', 1, '2026-12-01', '2026-12-01', '2026-12-01',"
                    " '{}', 'h')"
                )
            )
        await migrate.upgrade(engine)
        assert await migrate.is_up_to_date(engine)
        async with engine.begin() as conn:
            assert (await conn.execute(text("SELECT mapping_hash FROM events"))).scalar_one() == "h"
            await conn.execute(text(row.format(n=1, state="superseded")))
            await conn.execute(text(row.format(n=2, state="live")))
        with pytest.raises(IntegrityError):
            async with engine.begin() as conn:
                await conn.execute(text(row.format(n=3, state="live")))
        await migrate.downgrade(engine, "0008")
        assert "mapping_versions" not in await _tables(url)
    finally:
        await engine.dispose()
        if name is not None:
            await postgres.drop_database(name)
