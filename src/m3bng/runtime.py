"""Everything one process builds from its settings, handed to routes and workers explicitly."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.connectors import Connectors
from m3bng.connectors.m3.client import M3Client
from m3bng.connectors.m3.metadata import M3Metadata
from m3bng.connectors.shares import PERIOD, SharedLimit, ShareKeeper
from m3bng.flows import default_registry
from m3bng.flows.routing import BodRouter
from m3bng.flows.runtime import FlowRegistry
from m3bng.inbox.ingest import GroupCommit, Notifier
from m3bng.inbox.worker import Worker, new_worker_id
from m3bng.instances import DEFAULT, Instances, load_instances
from m3bng.mapping import Mapping, MappingFileError, load_mappings
from m3bng.observability.tracing import configure_tracing
from m3bng.ops import mapping_versions
from m3bng.ops.auth import Authenticator
from m3bng.ops.bulk import run_bulk_replays
from m3bng.ops.mapping_versions import Refresher
from m3bng.poller import InventoryPoller
from m3bng.store import migrate
from m3bng.store.db import create_engine, session_factory, wait_until_reachable

if TYPE_CHECKING:
    from m3bng.connectors.bng.client import BngClient
    from m3bng.storefront.bods import BodFollower
    from m3bng.storefront.service import Storefront

log = structlog.get_logger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    registry: FlowRegistry
    connectors: Connectors = field(default_factory=Connectors)
    mappings: dict[str, Mapping] = field(default_factory=dict)
    webhook_secrets: list[str] = field(default_factory=list)
    instances: Instances | None = None  # None: built from the settings alone (one instance)
    notifier: Notifier = field(default_factory=Notifier)
    ingest_group: GroupCommit | None = None  # the webhook route's group commit (built in build)
    workers: list[Worker] = field(default_factory=list)
    authenticator: Authenticator | None = None
    sandbox_ops_token: str | None = None
    _router: BodRouter | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _shares: ShareKeeper | None = None
    # True when the runtime built the registry from the mappings itself: only then does it run
    # the store's live mapping versions and rebuild the registry when one is published.
    own_registry: bool = False
    mapping_refresher: Refresher | None = None
    _storefronts: dict[str, Storefront] = field(default_factory=dict)
    storefront_follower: BodFollower | None = None

    @property
    def has_storefront(self) -> bool:
        """True once a storefront read built a cache (only then can a BOD make it stale)."""
        return bool(self._storefronts)

    @property
    def storefronts(self) -> list[Storefront]:
        """The storefronts built so far, one per BNG instance read."""
        return list(self._storefronts.values())

    @property
    def storefront(self) -> Storefront:
        """The instance ``default``'s storefront (``storefront_for``)."""
        return self.storefront_for(DEFAULT)

    def storefront_for(self, instance_id: str) -> Storefront:
        """The storefront reads of one BNG instance and their cache (storefront/), built at first
        use: a process that serves no storefront keeps no cache. Each instance's reads run in its
        M3 company (``M3Client.for_company``) on the storefront's lane of the M3 cap, and its
        customers are its own cross-references. KeyError: no such instance."""
        found = self._storefronts.get(instance_id)
        if found is not None:
            return found
        from m3bng.storefront.bods import BodFollower
        from m3bng.storefront.service import storefront_for

        if not self.known_instance(instance_id):
            raise KeyError(instance_id)
        found = storefront_for(self.settings, self.sessions, self.connectors, instance_id)
        self._storefronts[instance_id] = found
        seconds = self.settings.storefront_bod_follow_seconds
        if seconds and self.storefront_follower is None:  # BODs other processes receive (bods.py)
            self.storefront_follower = BodFollower(self._storefronts, self.sessions, seconds)
            task = asyncio.create_task(self.storefront_follower.run(self._stop), name="storefront-bods")
            self._tasks.append(task)
        return found

    def known_instance(self, instance_id: str) -> bool:
        """Whether ``instance_id`` is configured (``default`` always is)."""
        return instance_id == DEFAULT or (self.instances is not None and instance_id in self.instances)

    @classmethod
    def build(cls, settings: Settings, registry: FlowRegistry | None = None) -> Runtime:
        configure_tracing(settings)  # once per process (serve or worker); off unless M3BNG_OTEL_ENABLED
        engine = create_engine(settings)
        sessions = session_factory(engine)
        mappings: dict[str, Mapping] = {}
        own_registry = registry is None
        if registry is None:
            registry, mappings = load_registry_and_mappings(settings)
        elif settings.mappings_dir is not None or settings.sandbox:
            folder = settings.mappings_folder
            mappings = load_mappings(folder) if folder.is_dir() else {}
        secrets = webhook_secrets(settings)
        instances = sandbox_secrets(load_instances(settings), settings, secrets)
        sandbox_token = None
        if settings.sandbox and not settings.ops_tokens and not settings.ops_jwt_enabled:
            from m3bng.sandbox import sandbox_ops_token

            sandbox_token = sandbox_ops_token(settings)
        return cls(
            settings=settings,
            engine=engine,
            sessions=sessions,
            registry=registry,
            connectors=build_connectors(settings, sessions, instances),
            mappings=mappings,
            webhook_secrets=secrets,
            instances=instances,
            authenticator=Authenticator(settings, sandbox_token=sandbox_token),
            sandbox_ops_token=sandbox_token,
            ingest_group=GroupCommit(sessions),
            own_registry=own_registry,
        )

    @property
    def bod_router(self) -> BodRouter:
        """Which instance(s) a received BOD is stored for (flows/routing.py)."""
        if self._router is None:
            configured = self.instances if self.settings.instances_file is not None else None
            self._router = BodRouter(configured, self.mappings, self.sessions)
        return self._router

    async def start(self, *, workers: bool) -> None:
        up_to_date = True
        await wait_until_reachable(self.engine)
        if self.settings.should_migrate_on_start:
            await migrate.upgrade(self.engine)
        elif not await migrate.is_up_to_date(self.engine):
            up_to_date = False
            log.warning("store.migrations_pending", hint="run `m3bng db upgrade`")
        if self.own_registry and up_to_date:
            await self.use_mapping_versions()
        if workers:
            await self.share_limits()
            worker = self.new_worker()
            self.notifier.subscribe(worker.wakeup)
            self._tasks.append(asyncio.create_task(worker.run(self._stop), name="worker"))
            poller = self.new_poller()
            if poller is not None:
                self._tasks.append(asyncio.create_task(poller.run(self._stop), name="inventory-poller"))
            from m3bng.ops.alerts import Alerter
            from m3bng.ops.retention import Retention

            clients = (("m3", self.connectors.m3), ("bng", self.connectors.bng))
            breakers = {name: client.breaker for name, client in clients if client is not None}
            # Each instance's BNG has a breaker of its own (bng:us …), alerted on its own.
            breakers |= {client.name: client.breaker for client in self.connectors.bng_clients.values()}
            alerter = Alerter(self.settings, self.sessions, breakers=lambda: breakers, registry=self.registry)
            from m3bng.reconcile import scheduled_jobs
            from m3bng.sync import price_jobs

            jobs = (
                alerter.job(),
                Retention(self.settings, self.sessions).job(),
                # each run with the versions live at that moment (a studio publication included)
                *scheduled_jobs(self.settings, self.sessions, self.connectors, lambda: self.mappings),
                # catalog prices through this process's storefront (its cache and M3 lane)
                *price_jobs(
                    self.settings, self.sessions, self.connectors, lambda: self.mappings, self.storefront_for
                ),
            )
            for job in jobs:
                if job is not None:  # retention with M3BNG_RETENTION_RUN_SECONDS=0: off
                    self._tasks.append(asyncio.create_task(job.run(self._stop), name=job.name))
            self._tasks.append(
                asyncio.create_task(
                    run_bulk_replays(self.settings, self.sessions, self.notifier, self._stop),
                    name="bulk-replays",
                )
            )

    async def use_mapping_versions(self) -> None:
        """Import the mapping files into the store's versions (ops/mapping_versions.py), run the
        live versions, and from now on follow publications made by any process."""
        report = await mapping_versions.import_files(self.sessions, self.settings.mappings_folder)
        if report.imported or report.conflicts:
            log.info("mapping.import", imported=report.imported, conflicts=report.conflicts, kept=report.kept)
        self.mapping_refresher = mapping_versions.Refresher(
            self.sessions, self.settings.mappings_refresh_seconds
        )
        await self.reload_mappings()
        if self.settings.mappings_refresh_seconds > 0:
            self._tasks.append(asyncio.create_task(self._follow_publications(), name="mapping-refresh"))

    async def reload_mappings(self) -> None:
        """The live versions as this process's mappings and registry; workers take the new
        registry for the next event they claim (events in flight finish with the old one)."""
        mark, mappings = await mapping_versions.load_live(self.sessions, self.settings.mappings_folder)
        registry = build_registry(self.settings, mappings)
        self.mappings, self.registry, self._router = mappings, registry, None
        for worker in self.workers:
            worker.registry = registry
            worker.paused.registry = registry
            worker.paused.invalidate()
        if self.mapping_refresher is not None:
            self.mapping_refresher.mark = mark

    async def mappings_published(self) -> None:
        """A version was published through this process: run it here at once (other processes
        see it within ``M3BNG_MAPPINGS_REFRESH_SECONDS``). The publication is committed: a
        failure here is logged and left to the next refresh, not reported as a failed publish."""
        if self.own_registry and self.mapping_refresher is not None:
            try:
                await self.reload_mappings()
            except Exception as exc:
                log.error("mapping.reload_failed", error=str(exc)[:500])

    def check_registry(self, mappings: dict[str, Mapping]) -> None:
        """Raises ``MappingFileError`` unless this process could build its flows from ``mappings``."""
        build_registry(self.settings, mappings)

    async def _follow_publications(self) -> None:
        refresher = self.mapping_refresher
        assert refresher is not None
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=min(1.0, refresher.seconds))
            if self._stop.is_set():
                return
            try:
                if await refresher.changed():
                    await self.reload_mappings()
                    log.info("mapping.reloaded", flows=len(self.mappings))
            except Exception as exc:  # a bad version or a store blip: keep running the current ones
                log.error("mapping.reload_failed", error=str(exc)[:500])

    async def share_limits(self) -> None:
        """Before this process's workers make their first call: take this process's share of
        the installation-wide M3 and BNG limits (PostgreSQL; connectors/shares.py)."""
        if self._shares is not None or not self.settings.limits_shared:
            return
        limits = shared_limits(self.settings, self.connectors)
        if limits:
            self._shares = ShareKeeper(self.sessions, new_worker_id(), limits)
            await self._shares.start(self._stop)

    def new_worker(self) -> Worker:
        from m3bng.flows.confirm import ConfirmOnDeadLetter

        worker = Worker(
            self.settings,
            self.sessions,
            self.registry,
            connectors=self.connectors,
            on_dead_letter=ConfirmOnDeadLetter(self.settings, self.sessions, self.notifier),
            # Without an instances file every event is the default instance's: the plain claim.
            instances=self.instances if self.settings.instances_file is not None else None,
        )
        self.workers.append(worker)
        return worker

    def new_poller(self) -> InventoryPoller | None:
        """The inventory poller, when it is switched on and M3 and its mapping are there."""
        if not self.settings.inventory_poll_seconds:
            return None
        mapping = self.mappings.get("inventory_poll")
        if self.connectors.m3 is None or mapping is None:
            log.warning(
                "poller.not_started",
                reason="M3 not configured"
                if self.connectors.m3 is None
                else "no mappings/inventory_poll.yaml",
            )
            return None
        return InventoryPoller(
            self.settings,
            self.sessions,
            self.connectors.m3,
            # each poll with the live version (the one the poller started with, if retired)
            lambda: self.mappings.get("inventory_poll") or mapping,
            self.notifier,
            instances=self.instances if self.settings.instances_file is not None else None,
        )

    async def stop(self) -> None:
        """Graceful: workers finish in-flight events (up to the grace period) or release them."""
        self._stop.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._shares is not None:
            await self._shares.stop()
        for storefront in self._storefronts.values():
            await storefront.aclose()
        await self.connectors.aclose()
        await self.engine.dispose()


def webhook_secrets(settings: Settings) -> list[str]:
    settings.require_webhook_secrets()  # the sandbox's own secret never stands in outside it
    if settings.webhook_secrets:
        return [s.get_secret_value() for s in settings.webhook_secrets]
    from m3bng.sandbox import sandbox_webhook_secret

    return [sandbox_webhook_secret(settings)]


def sandbox_secrets(instances: Instances, settings: Settings, secrets: list[str]) -> Instances:
    """The default instance verifies with ``secrets`` (the sandbox's generated one when nothing
    is configured), and so does a sandbox instance without a secret of its own."""
    by_id = {}
    for item in instances:
        if item.id == DEFAULT or (settings.sandbox and not item.webhook_secrets):
            item = replace(item, webhook_secrets=tuple(secrets))
        by_id[item.id] = item
    return Instances(by_id)


def build_connectors(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], instances: Instances | None = None
) -> Connectors:
    """Production connectors from the settings; in sandbox mode the simulators stand in.

    With several instances, each other instance gets a BNG client of its own (its credentials,
    rate limit, concurrency cap and circuit breaker); a sandbox instance without a BNG URL gets
    its own in-process BNG simulator."""
    from m3bng.connectors.bng.client import BngClient
    from m3bng.connectors.ion.client import IonClient

    extras: dict[str, object] = {}
    m3: M3Client | None = None
    bng: BngClient | None = None
    if settings.ionapi_file is not None:
        m3 = M3Client.from_settings(settings)
    elif settings.sandbox:
        from m3bng.sandbox import sandbox_m3_client

        m3, extras["m3_sim_app"] = sandbox_m3_client(settings)
    if settings.bng_base_url is not None:
        bng = BngClient.from_settings(settings)
    elif settings.sandbox:
        from m3bng.sandbox import sandbox_bng_client

        bng, extras["bng_sim_app"] = sandbox_bng_client(settings)
    storefront_m3 = None
    if m3 is not None and settings.storefront_m3_slots:
        storefront_m3 = m3.split_lane(settings.storefront_m3_slots)
    metadata = M3Metadata(m3, sessions, ttl_hours=settings.m3_metadata_ttl_hours) if m3 else None
    # ConfirmBODs go to ION with the same .ionapi credentials (and OAuth token) as MI calls.
    ion = IonClient.from_m3(m3, settings) if m3 is not None else None
    clients: dict[str, BngClient] = {}
    for item in instances or ():
        if item.id == DEFAULT:
            continue
        if item.settings.bng_base_url is not None:
            clients[item.id] = BngClient.from_settings(item.settings, name=f"bng:{item.id}")
        elif settings.sandbox:
            from m3bng.sandbox import sandbox_bng_client

            clients[item.id], extras[f"bng_sim_app:{item.id}"] = sandbox_bng_client(
                item.settings, name=f"bng:{item.id}"
            )
    return Connectors(
        m3=m3,
        m3_storefront=storefront_m3,
        m3_metadata=metadata,
        bng=bng,
        ion=ion,
        extras=extras,
        instances=instances if settings.instances_file is not None else None,
        bng_clients=clients,
    )


def load_registry(settings: Settings) -> FlowRegistry:
    return load_registry_and_mappings(settings)[0]


def load_registry_and_mappings(settings: Settings) -> tuple[FlowRegistry, dict[str, Mapping]]:
    """The built-in flows plus any ``M3BNG_FLOW_PLUGINS`` (``module:function`` taking the registry).

    Mapping files are read here, at start-up: a broken one stops the process with its file, line
    and problem (``MappingFileError``) instead of dead-lettering every event later.
    """
    folder = settings.mappings_folder
    if not folder.is_dir():
        raise MappingFileError(
            [
                f"M3BNG_MAPPINGS_DIR: {folder.resolve()} is not a folder (it holds the mapping YAML "
                "files; `m3bng init DIR` writes a copy of the default ones)"
            ]
        )
    mappings = load_mappings(folder)
    return build_registry(settings, mappings), mappings


def build_registry(settings: Settings, mappings: dict[str, Mapping]) -> FlowRegistry:
    """The built-in flows for these mappings plus any ``M3BNG_FLOW_PLUGINS`` (``module:function``
    taking the registry); built again when a mapping version is published."""
    registry = default_registry(mappings)
    for spec in settings.flow_plugins:
        module_name, _, attr = spec.partition(":")
        if not attr:
            raise ValueError(f"M3BNG_FLOW_PLUGINS entry {spec!r} must look like package.module:function")
        register: Callable[[FlowRegistry], None] = getattr(importlib.import_module(module_name), attr)
        register(registry)
    return registry


def shared_limits(settings: Settings, connectors: Connectors) -> list[SharedLimit]:
    """The limits this process takes a share of: each client's gate, and BNG's rate."""
    limits: list[SharedLimit] = []
    m3, bng = connectors.m3, connectors.bng
    if m3 is not None:
        # A process that dies leaves its calls running at M3 for up to a timeout: its share is
        # not handed on before that.
        ttl = settings.m3_timeout + 3 * PERIOD
        # The storefront's lane is kept out of the shared cap: the worker processes share what
        # is left after it (storefront/, M3BNG_STOREFRONT_M3_SHARE).
        total = settings.m3_max_concurrency - (
            settings.storefront_m3_slots if connectors.m3_storefront else 0
        )
        limits.append(SharedLimit("m3.concurrency", total, ttl, m3.gate.grow, m3.gate.shrink))
    # Each BNG instance's limits hold for the installation, apart from the other instances'.
    for suffix, client in (("", bng), *((f":{i}", c) for i, c in connectors.bng_clients.items())):
        if client is not None:
            limits.extend(_bng_limits(suffix, client, settings.bng_timeout + 3 * PERIOD))
    return limits


def _bng_limits(suffix: str, bng: BngClient, ttl: float) -> list[SharedLimit]:
    gate, limiter = bng.gate, bng.limiter
    limits = [
        SharedLimit(f"bng.concurrency{suffix}", bng.config.max_concurrency, ttl, gate.grow, gate.shrink)
    ]
    if not limiter.unlimited:

        async def grow(slots: int) -> None:
            limiter.grow(slots)

        limits.append(SharedLimit(f"bng.rate{suffix}", limiter.slots, ttl, grow, limiter.shrink))
    return limits
