"""The test databases a process reuses (tests/support/postgres.take_database) are as isolated as
new clones: a database taken again is empty, its sequences start over, its old name reaches
nothing, and one whose schema a test changed is replaced by a new clone."""

from __future__ import annotations

import os

import asyncpg
import pytest

from tests.support import postgres


def dsn(name: str) -> str:
    return postgres.async_url(name).replace("+asyncpg", "")


async def test_a_taken_again_database_is_empty_renamed_and_its_old_name_reaches_nothing(
    pg_template: str,
) -> None:
    first = await postgres.take_database(pg_template)
    straggler = await asyncpg.connect(dsn(first))  # a connection a test left behind
    try:
        await straggler.execute("INSERT INTO scheduler_leases (name) VALUES ('left-behind')")
        sequence = await straggler.fetchval("SELECT sequencename FROM pg_sequences LIMIT 1")
        assert await straggler.fetchval(f"SELECT nextval('\"{sequence}\"')") == 1
        postgres.release_database(first, pg_template)
        second = await postgres.take_database(pg_template)
        try:
            assert second != first
            with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):  # as by a drop
                await straggler.fetchval("SELECT 1")
            with pytest.raises(asyncpg.InvalidCatalogNameError):  # and no way back in
                await asyncpg.connect(dsn(first))
            conn = await asyncpg.connect(dsn(second))
            try:
                assert await conn.fetchval("SELECT count(*) FROM scheduler_leases") == 0
                assert await conn.fetchval(f"SELECT nextval('\"{sequence}\"')") == 1
                assert await conn.fetchval("SELECT count(*) FROM alembic_version") == 1
            finally:
                await conn.close()
        finally:
            postgres.release_database(second, pg_template)
    finally:
        await straggler.close()


async def test_a_database_whose_schema_a_test_changed_is_not_taken_again(pg_template: str) -> None:
    first = await postgres.take_database(pg_template)
    conn = await asyncpg.connect(dsn(first))
    try:
        await conn.execute("ALTER TABLE controls RENAME TO controls_away")
    finally:
        await conn.close()
    postgres.release_database(first, pg_template)
    second = await postgres.take_database(pg_template)
    try:
        conn = await asyncpg.connect(dsn(second))
        try:
            assert await conn.fetchval("SELECT count(*) FROM controls") == 0
            assert await conn.fetchval("SELECT to_regclass('controls_away')") is None
        finally:
            await conn.close()
        admin = await asyncpg.connect(postgres.ADMIN_DSN)
        try:  # the changed one was dropped, not kept for another test: this process holds the
            # one taken and the free ones, no more
            mine = await admin.fetchval(
                "SELECT count(*) FROM pg_database WHERE datname LIKE $1", f"m3bng\\_t\\_{os.getpid()}\\_%"
            )
        finally:
            await admin.close()
        assert mine == 1 + len(postgres._free.get(pg_template, []))
    finally:
        postgres.release_database(second, pg_template)
