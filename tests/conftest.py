"""Shared fixtures: settings on SQLite and on a fresh PostgreSQL database, a live HTTP server."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.app import create_app
from m3bng.config import Settings
from m3bng.flows.runtime import FlowRegistry
from m3bng.observability.logging import configure_logging
from m3bng.store import migrate
from m3bng.store.db import create_engine, session_factory
from tests.support import logscan, postgres
from tests.support.webhooks import TEST_SECRET

REPO_ROOT = Path(__file__).resolve().parent.parent

configure_logging("WARNING", "console")


def pytest_configure(config: pytest.Config) -> None:
    """Every line the app logs, at every level, is kept and scanned for secrets after the last
    test (tests/support/logscan.py); the console still shows WARNING and above. Only in a pytest
    run: scripts that import these fixtures (benchmarks, probes) keep plain logging."""
    logscan.configure(config)
    configure_logging("WARNING", "console")  # again, now with the tap: before any logger is used
    config.pluginmanager.register(logscan, "m3bng-logscan")


BACKENDS = ["sqlite", "postgresql"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="chaos tests: the long variant (ten times the load, the full 60 s M3 outage)",
    )


@pytest.fixture(scope="session")
async def pg_template() -> AsyncIterator[str]:
    await postgres.ensure_running()
    name = postgres.unique_name("m3bng_tpl")
    await postgres.create_database(name)
    engine = create_engine(Settings(database_url=postgres.async_url(name)))
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()
    yield name
    await postgres.drop_free_databases(name)
    await postgres.drop_database(name)


@pytest.fixture(scope="session")
async def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store the migrations built, once per test process: each test's store is a copy."""
    path = tmp_path_factory.mktemp("sqlite_template") / "template.db"
    await migrate_sqlite(path)
    # Closing the last connection checkpointed the WAL into the file: the file alone is the store.
    assert not path.with_name(path.name + "-wal").exists(), "the template's WAL was not checkpointed"
    return path


async def migrate_sqlite(path: Path) -> str:
    url = f"sqlite+aiosqlite:///{path}"
    engine = create_engine(Settings(database_url=url))
    await migrate.upgrade(engine)
    await engine.dispose()
    return url


@asynccontextmanager
async def fresh_store(
    backend: str, directory: Path, pg_template: str, sqlite_template: Path | None = None
) -> AsyncIterator[str]:
    """A migrated, empty store: a new SQLite file in ``directory`` (a copy of ``sqlite_template``,
    or migrated here without one), or a PostgreSQL database in the template's state (a new clone,
    or one an earlier test of this process used, renamed and emptied: postgres.take_database)."""
    if backend == "sqlite":
        path = directory / "store.db"
        if sqlite_template is None:
            yield await migrate_sqlite(path)
            return
        shutil.copyfile(sqlite_template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    name = await postgres.take_database(pg_template)
    try:
        yield postgres.async_url(name)
    finally:
        postgres.release_database(name, pg_template)


@pytest.fixture(params=BACKENDS)
async def db_url(
    request: pytest.FixtureRequest, tmp_path: Path, pg_template: str, sqlite_template: Path
) -> AsyncIterator[str]:
    """A migrated, empty store: a new SQLite file, or a PostgreSQL database (see fresh_store)."""
    async with fresh_store(request.param, tmp_path, pg_template, sqlite_template) as url:
        yield url


@pytest.fixture
def make_settings(db_url: str) -> Callable[..., Settings]:
    """Settings for a test: fast polling, a compressed retry schedule, the test's own store."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": db_url,
            "worker_poll_interval": 0.05,
            "lease_seconds": 5,
            "retry_schedule": [0.05, 0.05, 0.05],
            "retry_jitter": 0.0,
            "shutdown_grace_seconds": 2,
            "migrate_on_start": False,
            "log_level": "WARNING",
            "webhook_secrets": [TEST_SECRET],
            "mappings_dir": REPO_ROOT / "mappings",
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
async def sessions(db_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(Settings(database_url=db_url))
    yield session_factory(engine)
    await engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int = 0) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class AsgiServer:
    """Any ASGI app behind a real uvicorn server on a free loopback port, in the test's loop.

    The port's socket is bound here and handed to uvicorn: a port found free, closed and bound
    again by uvicorn could be taken in between by another test's connection on a busy machine."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._sock = _listening()
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="auto")
        self.server = uvicorn.Server(config)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        if self._sock.fileno() == -1:  # served and stopped before: the same port again
            self._sock = _listening(self.port)
        self._task = asyncio.create_task(self.server.serve(sockets=[self._sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self._task is not None:
            await self._task
        self._sock.close()

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=10)


class LiveServer(AsgiServer):
    """The real m3bng app (lifespan included) behind uvicorn."""

    def __init__(self, settings: Settings, registry: FlowRegistry | None, run_workers: bool) -> None:
        super().__init__(create_app(settings, registry=registry, run_workers=run_workers))


@pytest.fixture
def live_server() -> Callable[..., LiveServer]:
    def make(
        settings: Settings, registry: FlowRegistry | None = None, run_workers: bool = False
    ) -> LiveServer:
        return LiveServer(settings, registry, run_workers)

    return make
