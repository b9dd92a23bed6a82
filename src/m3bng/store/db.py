"""Engine and session factory: the only place that knows which database driver is in use."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from asyncpg.exceptions import (
    CannotConnectNowError,
    InterfaceError,
    OperatorInterventionError,
    PostgresConnectionError,
)
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from m3bng import jsonfast
from m3bng.config import Settings

log = structlog.get_logger(__name__)

# SQLite: WAL lets readers run beside the single writer; busy_timeout makes a second process
# (worker + API on one file) wait for the write lock instead of failing with "database is locked".
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)


def create_engine(settings: Settings) -> AsyncEngine:
    url = make_url(settings.database_url)
    # JSON columns (payloads, step requests and answers) through orjson: m3bng/jsonfast.py.
    kwargs: dict[str, Any] = {
        "pool_pre_ping": True,
        "json_serializer": jsonfast.dumps,
        "json_deserializer": jsonfast.loads,
    }
    if url.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": settings.db_connect_timeout}
        busy_ms = int(settings.db_connect_timeout * 1000)
        engine = create_async_engine(url, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # aiosqlite opens transactions itself; let SQLAlchemy emit BEGIN so that a claim
            # (UPDATE ... RETURNING) and its commit are one write transaction.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            for pragma in (*_SQLITE_PRAGMAS, f"PRAGMA busy_timeout={busy_ms}"):
                cursor.execute(pragma)
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # BEGIN IMMEDIATE takes the write lock up front: two processes never both read
            # "free" and then race to write, and no deferred transaction fails mid-way.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.update(
        # No pre-ping on PostgreSQL: asyncpg's ping is its own BEGIN, query and ROLLBACK on every
        # checkout, a quarter of a transaction's CPU, paid by every step of every flow. A
        # connection that died (a server restart, a failover) fails its next statement instead;
        # SQLAlchemy then recognises the disconnect and replaces every pooled connection, so one
        # operation per process fails and is retried (a webhook's sender retries, an event's
        # attempt is rescheduled: tests/chaos/test_database.py). Connections are recycled after
        # five minutes, before a firewall or load balancer drops them for idling.
        pool_pre_ping=False,
        pool_recycle=300,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_connect_timeout,
        connect_args={"timeout": settings.db_connect_timeout, "command_timeout": 60},
    )
    return create_async_engine(url, **kwargs)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


_SINGLE: weakref.WeakKeyDictionary[AsyncEngine, async_sessionmaker[AsyncSession]] = (
    weakref.WeakKeyDictionary()
)


@asynccontextmanager
async def single_statement(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """A session for one statement that needs no transaction around it: a read, or a write
    that is one statement (the claim), which PostgreSQL applies atomically on its own.

    On PostgreSQL the session's connection is in autocommit, so the statement is one round
    trip instead of three (BEGIN, the statement, COMMIT or ROLLBACK): a worker's reads and its
    claim were a quarter of its round trips to the database per order (docs/benchmarks.md).
    Elsewhere (SQLite, whose writers take the lock with BEGIN IMMEDIATE) it is a transaction
    as before. Only for one statement: two statements here would not be atomic together.
    """
    engine = sessions.kw["bind"]
    if engine.dialect.name != "postgresql":
        async with sessions.begin() as session:
            yield session
        return
    single = _SINGLE.get(engine)
    if single is None:
        single = _SINGLE[engine] = session_factory(engine.execution_options(isolation_level="AUTOCOMMIT"))
    async with single() as session:
        yield session


def on_postgresql(sessions: async_sessionmaker[AsyncSession]) -> bool:
    """Whether the store is PostgreSQL, whose hot writes go straight to asyncpg (``driver_connection``)."""
    return bool(sessions.kw["bind"].dialect.name == "postgresql")


@asynccontextmanager
async def driver_connection(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[Any]:
    """asyncpg's own connection under a pooled one, in autocommit: for the hot writes that are
    one statement each (the ingest's group commit, a flow's fenced writes), with no session,
    statement compilation or BEGIN and COMMIT round trips around them.

    SQLAlchemy does not run what is sent here, so it cannot tell a dropped connection (the
    server restarted) from a refused row: if anything fails, the connection is discarded,
    never handed to the next write broken (tests/chaos/test_database.py).
    """
    engine = sessions.kw["bind"]
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        try:
            yield driver
        except BaseException as exc:
            await conn.invalidate()
            if isinstance(exc, _CONNECTION_LOST):
                # The server went away (a restart, a failover): so did every connection pooled
                # beside this one. A new pool, as SQLAlchemy starts one when a statement of its
                # own meets a lost connection, so that the next writes do not each find a dead one.
                await engine.dispose(close=False)
            raise


# What asyncpg raises when the connection itself is gone, not the statement refused.
_CONNECTION_LOST = (OSError, PostgresConnectionError, OperatorInterventionError, InterfaceError)


def printable_url(database_url: str) -> str:
    """The store's URL as it may be printed or logged: password masked."""
    return make_url(database_url).render_as_string(hide_password=True)


def sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite store; None for another database, an in-memory one or a ``file:`` URI."""
    url = make_url(database_url)
    database = url.database
    if (
        url.get_backend_name() != "sqlite"
        or not database
        or database == ":memory:"
        or database.startswith("file:")
    ):
        return None
    return Path(database)


def store_error_types() -> tuple[type[BaseException], ...]:
    """What opening or querying the store raises when it is unreachable or refuses: the CLI turns
    these into one line naming the setting to fix."""
    return (SQLAlchemyError, OSError, TimeoutError)


# How long `serve` and `worker` wait at start for a database that refuses connections: a
# process started while PostgreSQL restarts (a deploy of both, a failover) waits for it instead
# of exiting. A wrong host, password or database name is not waited for; a wrong port looks like
# a server that is not up yet, and fails after the wait with the same error.
START_WAIT_SECONDS = 60.0


def _refused_connection(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the server is not accepting connections yet."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | CannotConnectNowError):
            return True
        current = current.__cause__ or current.__context__ or getattr(current, "orig", None)
    return False


async def wait_until_reachable(engine: AsyncEngine, *, deadline_seconds: float = START_WAIT_SECONDS) -> None:
    """Return once the store takes a connection; while it refuses them, try again (0.2 s, 0.4 s
    … up to 5 s apart, each wait logged) until ``deadline_seconds``, then raise the last error.
    Any other error is raised at once."""
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + deadline_seconds
    wait = 0.2
    while True:
        try:
            async with engine.connect():
                return
        except (SQLAlchemyError, OSError) as exc:
            if not _refused_connection(exc) or loop.time() + wait > give_up_at:
                raise
            log.warning("store.unreachable", waiting_seconds=wait, error=repr(exc)[:300])
        await asyncio.sleep(wait)
        wait = min(wait * 2, 5.0)
