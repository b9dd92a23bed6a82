"""Everything one process builds from its settings, handed to routes and workers explicitly."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.flows import default_registry
from m3bng.inbox.flows import FlowRegistry
from m3bng.inbox.ingest import Notifier
from m3bng.inbox.worker import Worker
from m3bng.store import migrate
from m3bng.store.db import create_engine, session_factory

log = structlog.get_logger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    registry: FlowRegistry
    notifier: Notifier = field(default_factory=Notifier)
    workers: list[Worker] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    def build(cls, settings: Settings, registry: FlowRegistry | None = None) -> Runtime:
        engine = create_engine(settings)
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            registry=registry if registry is not None else load_registry(settings),
        )

    async def start(self, *, workers: bool) -> None:
        if self.settings.should_migrate_on_start:
            await migrate.upgrade(self.engine)
        elif not await migrate.is_up_to_date(self.engine):
            log.warning("store.migrations_pending", hint="run `m3bng db upgrade`")
        if workers:
            worker = Worker(self.settings, self.sessions, self.registry)
            self.notifier.subscribe(worker.wakeup)
            self.workers.append(worker)
            self._tasks.append(asyncio.create_task(worker.run(self._stop), name="worker"))

    async def stop(self) -> None:
        """Graceful: workers finish in-flight events (up to the grace period) or release them."""
        self._stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.engine.dispose()


def load_registry(settings: Settings) -> FlowRegistry:
    """The built-in flows plus any ``M3BNG_FLOW_PLUGINS`` (``module:function`` taking the registry)."""
    registry = default_registry()
    for spec in settings.flow_plugins:
        module_name, _, attr = spec.partition(":")
        if not attr:
            raise ValueError(f"M3BNG_FLOW_PLUGINS entry {spec!r} must look like package.module:function")
        register: Callable[[FlowRegistry], None] = getattr(importlib.import_module(module_name), attr)
        register(registry)
    return registry
