"""Everything one process builds from its settings, handed to routes and workers explicitly."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.connectors import Connectors
from m3bng.connectors.m3.client import M3Client
from m3bng.connectors.m3.metadata import M3Metadata
from m3bng.flows import default_registry
from m3bng.inbox.flows import FlowRegistry
from m3bng.inbox.ingest import Notifier
from m3bng.inbox.worker import Worker
from m3bng.mapping import MappingFileError, load_mappings
from m3bng.store import migrate
from m3bng.store.db import create_engine, session_factory

log = structlog.get_logger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    registry: FlowRegistry
    connectors: Connectors = field(default_factory=Connectors)
    webhook_secrets: list[str] = field(default_factory=list)
    notifier: Notifier = field(default_factory=Notifier)
    workers: list[Worker] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, registry: FlowRegistry | None = None) -> Runtime:
        engine = create_engine(settings)
        sessions = session_factory(engine)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            registry=registry if registry is not None else load_registry(settings),
            connectors=build_connectors(settings, sessions),
            webhook_secrets=webhook_secrets(settings),
        )

    async def start(self, *, workers: bool) -> None:
        if self.settings.should_migrate_on_start:
            await migrate.upgrade(self.engine)
        elif not await migrate.is_up_to_date(self.engine):
            log.warning("store.migrations_pending", hint="run `m3bng db upgrade`")
        if workers:
            worker = self.new_worker()
            self.notifier.subscribe(worker.wakeup)
            self._tasks.append(asyncio.create_task(worker.run(self._stop), name="worker"))

    def new_worker(self) -> Worker:
        worker = Worker(self.settings, self.sessions, self.registry, connectors=self.connectors)
        self.workers.append(worker)
        return worker

    async def stop(self) -> None:
        """Graceful: workers finish in-flight events (up to the grace period) or release them."""
        self._stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.connectors.aclose()
        await self.engine.dispose()


def webhook_secrets(settings: Settings) -> list[str]:
    if settings.webhook_secrets:
        return [s.get_secret_value() for s in settings.webhook_secrets]
    from m3bng.sandbox import sandbox_webhook_secret

    return [sandbox_webhook_secret(settings)]


def build_connectors(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> Connectors:
    """Production connectors from the settings; in sandbox mode the simulators stand in."""
    extras: dict[str, object] = {}
    m3: M3Client | None = None
    if settings.ionapi_file is not None:
        m3 = M3Client.from_settings(settings)
    elif settings.sandbox:
        from m3bng.sandbox import sandbox_m3_client

        m3, extras["m3_sim_app"] = sandbox_m3_client(settings)
    metadata = M3Metadata(m3, sessions, ttl_hours=settings.m3_metadata_ttl_hours) if m3 else None
    return Connectors(m3=m3, m3_metadata=metadata, extras=extras)


def load_registry(settings: Settings) -> FlowRegistry:
    """The built-in flows plus any ``M3BNG_FLOW_PLUGINS`` (``module:function`` taking the registry).

    Mapping files are read here, at start-up: a broken one stops the process with its file, line
    and problem (``MappingFileError``) instead of dead-lettering every event later.
    """
    folder = settings.mappings_dir
    if not folder.is_dir():
        raise MappingFileError(
            [
                f"M3BNG_MAPPINGS_DIR: {folder.resolve()} is not a folder (it holds the mapping YAML "
                "files; the project's own are in mappings/ at the repository root)"
            ]
        )
    registry = default_registry(load_mappings(folder))
    for spec in settings.flow_plugins:
        module_name, _, attr = spec.partition(":")
        if not attr:
            raise ValueError(f"M3BNG_FLOW_PLUGINS entry {spec!r} must look like package.module:function")
        register: Callable[[FlowRegistry], None] = getattr(importlib.import_module(module_name), attr)
        register(registry)
    return registry
