"""The ``m3bng`` command: serve, worker, db, m3, mappings, webhook. Settings come from M3BNG_*
variables or .env.

The command's other groups live beside this module: ``m3bng ops`` (``cli/ops.py``, a client of
the ops API over HTTP, with ``cli/ops_client.py``) and ``m3bng sim`` (``m3bng.sim.cli``). The
server's operations themselves are in ``m3bng.ops``; the ops CLI takes only the token helpers
from there (a token is made locally) and does everything else through the API, so it can do
nothing the API does not allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import structlog
import typer

from m3bng.config import Settings, SettingsError, load_settings
from m3bng.errors import M3bngError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from m3bng.connectors import Connectors
    from m3bng.instances import Instances

    Sessions = async_sessionmaker[AsyncSession]
    from m3bng.connectors.m3.metadata import FieldSpec
    from m3bng.mapping import Mapping
    from m3bng.mapping.schema import BngCallSpec, CallSpec
    from m3bng.runtime import Runtime
from m3bng.cli.doctor import doctor as doctor_command
from m3bng.cli.failures import CliState, serve_on
from m3bng.cli.failures import bind as _bind
from m3bng.cli.failures import fail as _fail
from m3bng.cli.init import init as init_command
from m3bng.cli.ops import ops_app
from m3bng.observability.logging import configure_logging
from m3bng.sim.cli import sim_app

app = typer.Typer(help="m3bng: integration service between Infor M3 and BNG.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")
m3_app = typer.Typer(help="Infor M3 connection.", no_args_is_help=True)
app.add_typer(m3_app, name="m3")
mappings_app = typer.Typer(help="Field mappings (mappings/*.yaml).", no_args_is_help=True)
app.add_typer(mappings_app, name="mappings")
app.add_typer(sim_app, name="sim")
webhook_app = typer.Typer(help="Send signed test webhooks, as BNG would.", no_args_is_help=True)
app.add_typer(webhook_app, name="webhook")
app.add_typer(ops_app, name="ops")
app.command("init")(init_command)
app.command("doctor")(doctor_command)

log = structlog.get_logger("m3bng.cli")


@app.callback()
def _root(
    debug: Annotated[
        bool, typer.Option("--debug", help="On an expected failure, show the traceback too.")
    ] = False,
) -> None:
    """m3bng: integration service between Infor M3 and BNG."""
    CliState.debug = debug


def _read_file(path: str | Path, what: str) -> bytes:
    """A file the user named on the command line, or one line saying why it cannot be read."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        _fail(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}", exc)


def _settings(*, webhook_secrets: bool = False, **overrides: object) -> Settings:
    """Settings for one command, validated for what that command needs: ``webhook_secrets``
    for the commands that verify or sign webhooks (``serve``, ``worker``, ``webhook send``)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        settings = load_settings(**given)
        if webhook_secrets:
            settings.require_webhook_secrets()
    except SettingsError as exc:
        _fail(str(exc))
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _store_url(settings: Settings) -> str:
    """The store's URL as it may be printed: password masked."""
    from m3bng.store.db import printable_url

    return printable_url(settings.database_url)


def _store_error_types() -> tuple[type[BaseException], ...]:
    from m3bng.store.db import store_error_types

    return store_error_types()


def _store_failure(settings: Settings, exc: BaseException | None, detail: str = "") -> NoReturn:
    """A store that cannot be opened (server down, no such database, SQLite folder missing):
    one line naming the setting to fix, never the driver's traceback."""
    if not detail:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        detail = reason[0] if reason else type(exc).__name__
    _fail(f"cannot open the store M3BNG_DATABASE_URL={_store_url(settings)}: {detail}", exc)


def _missing_sqlite_folder(settings: Settings) -> Path | None:
    """The folder a SQLite store's file should be in, when it does not exist. Checked before
    connecting: SQLite would only say "unable to open database file", and aiosqlite's thread
    can print a traceback of its own after a failed connect."""
    if not settings.is_sqlite:
        return None
    from m3bng.store.db import sqlite_file

    database = sqlite_file(settings.database_url)
    if database is None:
        return None
    folder = database.parent
    return None if folder.is_dir() else folder


@contextlib.contextmanager
def _store_errors(settings: Settings) -> Iterator[None]:
    """Turn the store's connection failures inside the block into `_store_failure`."""
    folder = _missing_sqlite_folder(settings)
    if folder is not None:
        _store_failure(settings, None, f"folder {str(folder)!r} does not exist")
    try:
        yield
    except _store_error_types() as exc:
        _store_failure(settings, exc)


async def _ready_store(settings: Settings, *, migrate_first: bool) -> None:
    """Before ``serve`` or ``worker`` start anything: the store must open and be at the newest
    migration, else the process would answer webhooks 500 and log `no such table` for ever.
    Sandbox mode (or ``M3BNG_MIGRATE_ON_START``, or ``--migrate``) upgrades it instead."""
    from m3bng.store import migrate
    from m3bng.store.db import create_engine

    engine = create_engine(settings)
    try:
        if migrate_first or settings.should_migrate_on_start:
            await migrate.upgrade(engine)
        elif not await migrate.is_up_to_date(engine):
            _fail(
                "the store's schema is not at the latest migration: run `m3bng db upgrade` "
                "first (or start with --migrate)"
            )
    finally:
        await engine.dispose()


def _check_store(settings: Settings, *, migrate_first: bool) -> None:
    with _store_errors(settings):
        asyncio.run(_ready_store(settings, migrate_first=migrate_first))


def _sandbox_banner(settings: Settings) -> None:
    line = "=" * 78
    typer.secho(
        f"{line}\n"
        "  SANDBOX MODE: no M3 (.ionapi) and no BNG configured.\n"
        "  m3bng runs with built-in stand-ins and is NOT connected to any real system.\n"
        f"  Store: {_store_url(settings)}\n"
        f"  Listening on http://{settings.host}:{settings.port}  (OpenAPI: /docs)\n"
        f"  Dashboard: http://{settings.host}:{settings.port}/ui  (ops:admin token in "
        "m3bng-sandbox.ops-token)\n"
        "  Set M3BNG_IONAPI_FILE and M3BNG_BNG_BASE_URL for production (see .env.example).\n"
        f"{line}",
        fg=typer.colors.YELLOW,
        bold=True,
        err=True,
    )


_MIGRATE_HELP = "First upgrade the store to the newest migration, as `m3bng db upgrade` does."


def _summary(runtime: Runtime, *, listening: str) -> None:
    """Outside sandbox mode, one summary at start (stderr): what listens where, which store, M3
    and BNG, and which flows run on events from which source. A flow whose target is not
    configured gets a warning now, not when its first event has waited for it."""
    settings, connectors = runtime.settings, runtime.connectors
    lines = [f"m3bng: {listening}", f"  store: {_store_url(settings)}"]
    if connectors.m3 is not None:
        credentials = connectors.m3.credentials
        tenant = f"tenant {credentials.tenant} at " if credentials is not None else ""
        lines.append(
            f"  M3: {tenant}{connectors.m3.config.base_url} (MI REST {connectors.m3.config.api_version})"
        )
    else:
        lines.append("  M3: not configured (M3BNG_IONAPI_FILE)")
    lines.append(f"  BNG: {settings.bng_base_url or 'not configured (M3BNG_BNG_BASE_URL)'}")
    groups: dict[tuple[str, str], list[str]] = {}
    for info in runtime.registry.describe():
        groups.setdefault((info.source or "any source", info.target or "-"), []).append(info.event_type)
    for (source, target), types in sorted(groups.items()):
        lines.append(f"  flows {source} -> {target}: {', '.join(types)}")
    configured = {
        "m3": (connectors.m3 is not None, "M3BNG_IONAPI_FILE"),
        "ion": (connectors.ion is not None, "M3BNG_IONAPI_FILE"),
        "bng": (connectors.bng is not None, "M3BNG_BNG_BASE_URL"),
    }
    for (source, target), types in sorted(groups.items()):
        ready, setting = configured.get(target, (True, ""))
        if not ready:
            lines.append(
                f"  WARNING: {len(types)} flow(s) from {source} write to {target}, which is not "
                f"configured ({setting}): their events will wait"
            )
    typer.echo("\n".join(lines), err=True)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (M3BNG_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (M3BNG_PORT).")] = None,
    workers: Annotated[
        bool | None,
        typer.Option("--workers/--no-workers", help="Run workers in-process (M3BNG_RUN_WORKERS)."),
    ] = None,
    migrate_first: Annotated[bool, typer.Option("--migrate", help=_MIGRATE_HELP)] = False,
) -> None:
    """Run the HTTP API with in-process workers."""
    import uvicorn

    from m3bng.app import create_app

    settings = _settings(webhook_secrets=True, host=host, port=port, run_workers=workers)
    _check_store(settings, migrate_first=migrate_first)
    try:
        application = create_app(settings)
    except (M3bngError, ValueError) as exc:  # connector settings that cannot work together
        _fail(str(exc), exc)
    sock = _bind(settings.host, settings.port)
    if settings.sandbox:
        _sandbox_banner(settings)
    else:
        mode = "with workers in-process" if settings.run_workers else "no workers (--no-workers)"
        _summary(
            application.state.runtime,
            listening=f"listening on http://{settings.host}:{settings.port}, {mode}",
        )
    server = uvicorn.Server(
        uvicorn.Config(
            application,
            log_level=settings.log_level.lower(),
            access_log=False,
            log_config=None,  # uvicorn's records go through our JSON logging (observability/logging.py)
            # HTTP requests (ingest) are short; the workers' own grace period follows in the lifespan.
            timeout_graceful_shutdown=5,
        )
    )
    serve_on(server, sock)


@app.command()
def worker(
    once: Annotated[bool, typer.Option(help="Process what is due now, then exit.")] = False,
    migrate_first: Annotated[bool, typer.Option("--migrate", help=_MIGRATE_HELP)] = False,
) -> None:
    """Run workers only (scale-out: any number of these on one PostgreSQL)."""
    settings = _settings(webhook_secrets=True)
    _check_store(settings, migrate_first=migrate_first)
    if settings.worker_metrics_port is not None:
        from prometheus_client import start_http_server

        try:
            start_http_server(settings.worker_metrics_port, addr=settings.host)
        except OSError as exc:
            where = f"{settings.host}:{settings.worker_metrics_port} (M3BNG_WORKER_METRICS_PORT)"
            _fail(f"cannot listen on {where}: {exc.strerror or exc}", exc)
    try:
        raise typer.Exit(_run_loop(_run_worker(settings, once=once)))
    except M3bngError as exc:
        _fail(str(exc), exc)


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    """uvloop where installed (it comes with uvicorn[standard]), as ``serve`` gets from uvicorn:
    a worker spends a good part of its CPU in the event loop and its socket writes."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not available on every platform
        return asyncio.run(main)
    return uvloop.run(main)


async def _run_worker(settings: Settings, *, once: bool) -> int:
    from m3bng.runtime import Runtime

    try:
        runtime = Runtime.build(settings)
    except (M3bngError, ValueError) as exc:  # ValueError: connector settings, as for serve
        _fail(str(exc), exc)
    if not settings.sandbox:
        metrics = settings.worker_metrics_port
        where = f", metrics on http://{settings.host}:{metrics}/metrics" if metrics else ""
        _summary(runtime, listening=f"worker{' --once' if once else ''} started{where}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runtime.start(workers=False)
        await runtime.share_limits()
        worker = runtime.new_worker()
        if once:
            await worker.run_until_idle(timeout=3600)
        else:
            await worker.run(stop)
    finally:
        await runtime.stop()
    return 0


def _migrate(direction: str, revision: str) -> None:
    from m3bng.store import migrate
    from m3bng.store.db import create_engine

    settings = _settings()

    from alembic.util import CommandError

    async def run() -> None:
        engine = create_engine(settings)
        try:
            await getattr(migrate, direction)(engine, revision)
        finally:
            await engine.dispose()

    try:
        with _store_errors(settings):
            asyncio.run(run())
    except CommandError as exc:  # e.g. a revision that does not exist
        _fail(f"db {direction} {revision}: {exc}", exc)
    typer.echo(f"database at {revision}")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    _migrate("upgrade", revision)


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, e.g. base.")]) -> None:
    """Revert migrations down to REVISION."""
    _migrate("downgrade", revision)


@m3_app.command("check")
def m3_check() -> None:
    """Check the M3 connection: token, MNS150MI GetUserData (company, division, user defaults)."""
    settings = _settings()

    async def run() -> int:
        async with _connected(settings) as (_sessions, connectors):
            return await check(connectors)

    async def check(connectors: Connectors) -> int:
        where = "M3"
        try:
            if connectors.m3 is None:
                typer.echo("M3 is not configured (set M3BNG_IONAPI_FILE)", err=True)
                return 2
            where = "sandbox simulator" if settings.sandbox else connectors.m3.config.base_url
            typer.echo(f"M3: {where} (MI REST {connectors.m3.config.api_version})")
            result = await connectors.m3.execute("MNS150MI", "GetUserData")
            user = result.record
            shown = {k: user.get(k, "") for k in ("USID", "CONO", "DIVI", "FACI", "WHLO", "DTFM", "TIZO")}
            typer.echo("MNS150MI/GetUserData: " + ", ".join(f"{k}={v}" for k, v in shown.items() if v))
            return 0
        except M3bngError as exc:
            typer.echo(f"M3 check failed ({where}): {exc}", err=True)
            return 1

    with _store_errors(settings):
        code = asyncio.run(run())
    raise typer.Exit(code)


_INSTANCE_OPTION = typer.Option(
    "--instance",
    metavar="ID",
    help="The BNG instance (M3BNG_INSTANCES_FILE): its BNG, its M3 company (docs/instances.md).",
)


@app.command()
def sync(
    entity: Annotated[
        str,
        typer.Argument(help="What to load: customers, items, suppliers, stock, or prices (catalog prices)."),
    ],
    to: Annotated[
        str,
        typer.Option(
            "--to", help="The system to load into: bng, or m3 for customers where BNG is their master."
        ),
    ] = "bng",
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Read and count (new, changed, same, refused); enqueue (prices: write) nothing."
        ),
    ] = False,
    restart: Annotated[
        bool,
        typer.Option("--restart", help="Start from the beginning of the list, not where a run stopped."),
    ] = False,
    page_size: Annotated[
        int,
        typer.Option(
            min=2,
            max=10000,
            help="Records per list call (at least 2: M3 answers the start key again; BNG at most 500).",
        ),
    ] = 500,
    warehouse: Annotated[
        list[str] | None,
        typer.Option(
            "--warehouse",
            help="stock: a warehouse to load (repeatable; default M3BNG_INVENTORY_POLL_WAREHOUSES).",
        ),
    ] = None,
    readers: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="M3 list calls at once, each for a key range of the list (default M3BNG_SYNC_READERS; "
            "within M3BNG_M3_MAX_CONCURRENCY).",
        ),
    ] = None,
    instance: Annotated[str, _INSTANCE_OPTION] = "default",
) -> None:
    """Initial load: each record enqueued for the flow its own events run (docs/sync.md).

    Resumable: after a kill or Ctrl-C, the same command continues after the last page it
    stored. Workers (m3bng serve or m3bng worker) apply the events to the target.
    """
    if warehouse and entity != "stock":
        _fail(f"--warehouse: only sync stock reads warehouses, not sync {entity}")
    settings = _settings()
    instances = _instances(settings, instance)
    _check_store(settings, migrate_first=False)
    mappings = _load_mappings(settings)

    async def run() -> int:
        from m3bng.sync import Progress, progress_line, run_sync

        # One line rewritten in place on a terminal; a plain line per page otherwise (a log).
        tty = sys.stdout.isatty() and sys.stderr.isatty()

        def show(progress: Progress) -> None:
            line = progress_line(entity, progress)
            typer.echo(("\r\x1b[K" + line) if tty else line, err=True, nl=not tty)

        from m3bng.instances import with_instance_vars

        async with _connected(settings, instances) as (sessions, connectors):
            view = connectors.for_instance(instance)  # its BNG, M3 in its company
            storefront = None
            if entity == "prices":  # the storefront's price read, in the instance's company
                from m3bng.storefront.service import storefront_for

                storefront = storefront_for(settings, sessions, connectors, instance)
            try:
                async with _shares(settings, sessions, connectors):
                    progress = await run_sync(
                        sessions,
                        view.m3,
                        with_instance_vars(mappings, view.instance),
                        entity,
                        target=to,
                        dry_run=dry_run,
                        restart=restart,
                        page_size=page_size,
                        readers=readers or settings.sync_readers,
                        on_page=show,
                        bng=view.bng,
                        warehouses=warehouse or settings.inventory_poll_warehouses,
                        instance=instance,
                        storefront=storefront,
                    )
            finally:
                if storefront is not None:
                    await storefront.aclose()
        if tty:
            typer.echo("", err=True)
        c = progress.counts
        what = "would enqueue" if dry_run else "enqueued"
        if entity == "prices":
            what = "would write" if dry_run else "wrote"
        label = f"sync {entity} --to {to}" + (f" --instance {instance}" if instance != "default" else "")
        typer.echo(
            f"{label} run {progress.run_id}: {c['read']} read, {what} {c['new']} new and "
            f"{c['changed']} changed, {c['same']} unchanged, {c['refused']} refused"
        )
        for refused in progress.refusals[:20]:
            typer.echo(f"  refused {refused['key']}: {refused['reason']}")
        return 0

    raise typer.Exit(_run_command(settings, run()))


@asynccontextmanager
async def _shares(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], connectors: Connectors
) -> AsyncIterator[None]:
    """On PostgreSQL, this command's share of the installation-wide M3 and BNG limits while it
    runs, as every serving process takes its own (connectors/shares.py): a load's key ranges or
    a reconciliation's reads stay within the cap the workers share, not on top of it. Its calls
    wait until the share is granted; the share is given back at the end."""
    from m3bng.connectors.shares import ShareKeeper
    from m3bng.inbox.worker import new_worker_id
    from m3bng.runtime import shared_limits

    limits = shared_limits(settings, connectors) if settings.limits_shared else []
    if not limits:
        yield
        return
    keeper = ShareKeeper(sessions, f"cli-{new_worker_id()}", limits)
    await keeper.start(asyncio.Event())  # renewed until keeper.stop()
    try:
        yield
    finally:
        await keeper.stop()


def _instances(settings: Settings, instance_id: str | None = None) -> Instances:
    """The installation's BNG instances; with ``instance_id``, one line naming ``--instance``
    and the known ids (exit 2) when it is not one of them."""
    from m3bng.instances import load_instances

    try:
        instances = load_instances(settings)
    except SettingsError as exc:
        _fail(str(exc), exc)
    if instance_id is not None and instance_id not in instances:
        _fail(
            f"--instance {instance_id!r}: no such BNG instance (known: {', '.join(instances.ids)}; "
            "M3BNG_INSTANCES_FILE, docs/instances.md)"
        )
    return instances


@asynccontextmanager
async def _connected(
    settings: Settings, instances: Instances | None = None
) -> AsyncIterator[tuple[async_sessionmaker[AsyncSession], Connectors]]:
    """The store and the connectors of a one-shot command (m3 check, sync, reconcile), every
    BNG instance's (``connectors.for_instance``), closed when it ends however it ends;
    connectors m3bng cannot build (an .ionapi file it cannot use) are one line and exit 2."""
    from m3bng.runtime import build_connectors
    from m3bng.store.db import create_engine, session_factory

    if instances is None:
        instances = _instances(settings)
    engine = create_engine(settings)
    try:
        sessions = session_factory(engine)
        try:
            connectors = build_connectors(settings, sessions, instances)
        except M3bngError as exc:
            _fail(str(exc), exc)
        try:
            yield sessions, connectors
        finally:
            await connectors.aclose()
    finally:
        await engine.dispose()


def _run_command(settings: Settings, main: Coroutine[Any, Any, int]) -> int:
    """A command's coroutine, with a store or M3bng error as one line and exit 2."""
    try:
        with _store_errors(settings):
            return asyncio.run(main)
    except M3bngError as exc:
        _fail(str(exc), exc)


def _duration(text: str, option: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``90s`` → a timedelta; one line naming the option otherwise."""
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    number, unit = text[:-1], text[-1:].lower()
    try:
        if unit not in units or float(number) < 0:
            raise ValueError(text)
        return timedelta(**{units[unit]: float(number)})
    except ValueError:
        _fail(f"{option} {text!r}: give a number and a unit, e.g. 7d, 12h, 30m or 90s")


@app.command()
def reconcile(
    kind: Annotated[
        str | None,
        typer.Argument(help="What to reconcile: orders, stock, customers or items (default: all)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="orders: the window, BNG's orders changed within it (7d, 12h …; default 7d)."),
    ] = None,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="orders: take in the lost ones; stock, customers, items: correct BNG from M3 (events).",
        ),
    ] = False,
    grace: Annotated[
        str | None,
        typer.Option(
            help="Younger orders may have their webhook on the way (default: M3BNG_RECONCILE_GRACE_MINUTES)."
        ),
    ] = None,
    sla: Annotated[
        str | None,
        typer.Option(help="Taken in longer ago and not in M3: stuck (default: M3BNG_RECONCILE_SLA_MINUTES)."),
    ] = None,
    tolerance: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="stock: a difference up to this is matching (default: M3BNG_RECONCILE_STOCK_TOLERANCE).",
        ),
    ] = None,
    instance: Annotated[str, _INSTANCE_OPTION] = "default",
) -> None:
    """Compare BNG with m3bng and M3, store the findings (docs/reconciliation.md). Exit 1 when
    something is left for a person: a finding --fix did not correct (or no --fix)."""
    from m3bng.reconcile import KINDS

    settings = _settings()
    instances = _instances(settings, instance)
    _check_store(settings, migrate_first=False)
    if kind is not None and kind not in KINDS:
        _fail(f"reconcile {kind!r}: the kinds are {', '.join(KINDS)} (docs/reconciliation.md)")
    if kind not in (None, "orders"):
        for name, value in (("--since", since), ("--grace", grace), ("--sla", sla)):
            if value is not None:
                _fail(f"{name} is for orders: {kind} are compared in full (docs/reconciliation.md)")
    if kind not in (None, "stock") and tolerance is not None:
        _fail("--tolerance is for stock")
    kinds = [kind] if kind else list(KINDS)
    # --grace and --sla default to the settings the scheduled run uses.
    window = _duration(since or "7d", "--since")
    grace_time = _duration(grace, "--grace") if grace else None
    sla_time = _duration(sla, "--sla") if sla else None

    async def run() -> int:
        from decimal import Decimal

        from m3bng.reconcile import run_kind
        from m3bng.store.sql import utcnow

        mappings = _load_mappings(settings) if kinds != ["orders"] else {}
        limit = None if tolerance is None else Decimal(str(tolerance))
        left = 0
        async with (
            _connected(settings, instances) as (sessions, connectors),
            _shares(settings, sessions, connectors),
        ):
            for one in kinds:
                report = await run_kind(
                    one, settings, sessions, connectors, mappings, since=utcnow() - window, fix=fix,
                    tolerance=limit, grace=grace_time, sla=sla_time, instance=instance,
                )  # fmt: skip
                shown = ", ".join(f"{n} {name}" for name, n in report.counts.items())
                fixed = f"{report.fixed} {'taken in' if one == 'orders' else 'corrected'}"
                of = f" --instance {instance}" if instance != "default" else ""
                typer.echo(
                    f"reconcile {one}{of} run {report.run_id}: {shown}; {fixed}, {report.m3_calls} M3 calls"
                )
                for found in report.findings:
                    typer.echo(f"  {found['finding']:<14} {found['key']}  {found['detail']}")
                left += sum(
                    1 for f in report.findings if f["event_id"] is None and f["finding"] != "in_flight"
                )
        return 1 if left else 0

    raise typer.Exit(_run_command(settings, run()))


def _load_mappings(settings: Settings) -> dict[str, Mapping]:
    """The mappings folder, or one line naming the file and problem (exit 1)."""
    from m3bng.mapping import MappingFileError, load_mappings

    try:
        return load_mappings(settings.mappings_folder)
    except (MappingFileError, SettingsError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


@mappings_app.command("check")
def mappings_check(
    metadata: Annotated[
        bool, typer.Option(help="Also check field names and lengths against M3 (MRS001MI).")
    ] = True,
) -> None:
    """Validate every mapping file; with M3 reachable, also against M3's field metadata."""
    settings = _settings()
    mappings = _load_mappings(settings)
    for mapping in mappings.values():
        calls = ", ".join(_operation(c) for c in mapping.spec.calls.values())
        typer.echo(f"ok  {mapping.path}  flow {mapping.flow}  [{mapping.content_hash[:12]}]  {calls}")
    if metadata:
        with _store_errors(settings):
            code = asyncio.run(_check_against_m3(settings, mappings))
        raise typer.Exit(code)


async def _check_against_m3(settings: Settings, mappings: dict[str, Mapping]) -> int:
    from m3bng.mapping.m3check import check_mappings_against_m3
    from m3bng.runtime import build_connectors
    from m3bng.store import migrate
    from m3bng.store.db import create_engine, session_factory

    engine = create_engine(settings)
    # Metadata is cached in the store: bring a sandbox store up to date, refuse an outdated one.
    if settings.should_migrate_on_start:
        await migrate.upgrade(engine)
    elif not await migrate.is_up_to_date(engine):
        typer.echo("the store's schema is not up to date: run `m3bng db upgrade` first", err=True)
        await engine.dispose()
        return 1
    connectors = build_connectors(settings, session_factory(engine))
    try:
        if connectors.m3_metadata is None:
            typer.echo("M3 not configured: metadata checks skipped")
            return 0
        # One judgement for `mappings check` and `doctor` (cli/doctor.py).
        findings = await check_mappings_against_m3(connectors.m3_metadata, mappings)
    finally:
        await connectors.aclose()
        await engine.dispose()
    for finding in findings:
        typer.echo(finding.line())
    return 1 if any(f.error for f in findings) else 0


@mappings_app.command("describe")
def mappings_describe() -> None:
    """Markdown tables of the loaded mappings: MI programs to authorize, tenant values (vars),
    and every field each flow sends with where its value comes from."""
    from m3bng.mapping.describe import markdown

    mappings = _load_mappings(_settings())
    typer.echo(markdown({m.flow: m for m in mappings.values()}), nl=False)


@mappings_app.command("preview")
def mappings_preview(
    flow: Annotated[str, typer.Argument(help="Flow name, e.g. order_to_cash")],
    input_file: Annotated[
        str,
        typer.Option("--input", help="Event data: a webhook body or its data (JSON), or a BOD (XML)"),
    ],
    ctx: Annotated[list[str] | None, typer.Option(help="Context value NAME=VALUE, e.g. CUNO=10001")] = None,
) -> None:
    """Print the exact MI calls (or BNG requests, for a BOD) a payload would produce. Sends nothing."""
    import json

    from m3bng.mapping import MappingError

    settings = _settings()
    mappings = _load_mappings(settings)
    if flow not in mappings:
        typer.echo(f"no flow {flow!r}; flows: {', '.join(sorted(mappings))}", err=True)
        raise typer.Exit(2)
    raw = _read_file(input_file, "input file")
    context: dict[str, Any] = dict(item.split("=", 1) for item in ctx or [] if "=" in item)
    if raw.lstrip().startswith(b"<"):  # a BOD, for the M3 → BNG mappings
        from m3bng.connectors.ion.bod import BodError, parse_bod

        try:
            bod = parse_bod(raw, max_bytes=settings.ion_max_bod_bytes)
        except BodError as exc:
            typer.echo(f"not a BOD m3bng accepts: {exc}", err=True)
            raise typer.Exit(1) from None
        data, context = bod.data, {"bod": bod.metadata(), **context}
    mapping = mappings[flow]
    if mapping.spec.target == "bng" and "M3Key" in mapping.spec.keys and "BngID" not in context:
        # What the flow does first: the BNG id is the BOD's own (keys.BngID), else the M3 key
        # (a cross-reference, which a preview cannot read, may name another).
        with contextlib.suppress(MappingError):
            context["M3Key"] = mapping.key("M3Key", data, context)
            context["BngID"] = context["M3Key"]
            context["BngID"] = mapping.key("BngID", data, context)
    else:
        try:
            payload = json.loads(raw)
        except ValueError as exc:
            _fail(f"input file {input_file!r} is neither JSON nor a BOD (XML): {exc}", exc)
        data = payload.get("data", payload) if isinstance(payload, dict) else payload
    try:
        previews = mapping.preview(data, context)
    except MappingError as exc:
        typer.echo(f"cannot map: {exc}", err=True)
        raise typer.Exit(1) from None
    for preview in previews:
        if preview.note:
            typer.echo(f"{preview.name:>18}  {preview.operation}: {preview.note}")
        elif preview.target == "bng":
            body = json.dumps(preview.record, ensure_ascii=False) if preview.record else ""
            typer.echo(f"{preview.name:>18}  {preview.operation} {body}".rstrip())
        else:
            query = "&".join(f"{k}={v}" for k, v in preview.record.items())
            typer.echo(f"{preview.name:>18}  GET /v2/execute/{preview.operation}?{query}")


def _sample_data(sample: str, settings: Settings) -> tuple[dict[str, Any], str | None, str | None]:
    """A sample's data and its event type when it names one: a JSON file (a webhook body or its
    data), a BOD (XML: its type, e.g. SyncItemMaster), or a shipped sample (``order.created``);
    and ``ion`` when it is a BOD (the draft's ``source``)."""
    import json

    from m3bng.connectors.bng.samples import event_types
    from m3bng.connectors.bng.samples import sample as shipped

    if not Path(sample).exists() and sample in event_types():
        return shipped(sample), sample, None
    raw = _read_file(sample, "sample file")
    if raw.lstrip().startswith(b"<"):
        from m3bng.connectors.ion.bod import BodError, parse_bod

        try:
            bod = parse_bod(raw, max_bytes=settings.ion_max_bod_bytes)
        except BodError as exc:
            _fail(f"not a BOD m3bng accepts: {exc}", exc)
        return dict(bod.data), bod.bod_type, "ion"
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        _fail(f"sample file {sample!r} is neither JSON nor a BOD (XML): {exc}", exc)
    if not isinstance(payload, dict) or not isinstance(payload.get("data", payload), dict):
        _fail(f"sample file {sample!r}: a JSON object (a webhook body or its data)")
    event_type = payload.get("type") if isinstance(payload.get("type"), str) else None
    return payload.get("data", payload), event_type, None


async def _m3_fields(settings: Settings, program: str, transaction: str) -> dict[str, FieldSpec] | None:
    """The transaction's input fields in the tenant's metadata (the store's cache, else
    MRS001MI); None when M3 is not configured."""
    from m3bng.store import migrate
    from m3bng.store.db import create_engine

    engine = create_engine(settings)
    try:
        if settings.should_migrate_on_start:  # metadata is cached in the store
            await migrate.upgrade(engine)
    finally:
        await engine.dispose()
    async with _connected(settings) as (_sessions, connectors):
        if connectors.m3_metadata is None:
            return None
        return dict(await connectors.m3_metadata.fields(program, transaction, "I"))


@mappings_app.command("suggest")
def mappings_suggest(
    program: Annotated[str, typer.Option(help="MI program, e.g. OIS100MI")],
    transaction: Annotated[str, typer.Option(help="MI transaction, e.g. AddBatchHead")],
    sample: Annotated[
        str,
        typer.Option(
            help="A payload: JSON file (webhook body or its data), BOD (XML), or a shipped "
            "sample's event type (order.created)"
        ),
    ],
    for_each: Annotated[
        str | None, typer.Option(help="The call is made per element of this list (e.g. Lines)")
    ] = None,
    top: Annotated[int, typer.Option(min=1, max=10, help="Candidates shown per field")] = 3,
    write: Annotated[
        Path | None, typer.Option(help="Write a draft mapping (YAML) with each field's best candidate")
    ] = None,
    flow: Annotated[str, typer.Option(help="The draft's flow name")] = "draft",
    call: Annotated[str, typer.Option(help="The draft's call name")] = "call",
    trigger: Annotated[
        str | None, typer.Option(help="The draft's trigger (default: the sample's event type)")
    ] = None,
    rerank: Annotated[
        bool, typer.Option(help="Let the model of M3BNG_ASSIST_LLM_URL re-rank (when it is set)")
    ] = True,
) -> None:
    """Rank, for every input field of an M3 transaction, the sample's paths most likely to fill
    it, with the reasons and the conversion; optionally write a draft mapping. Sends nothing
    but the metadata read (MRS001MI, cached) and, when M3BNG_ASSIST_LLM_URL is set, the masked
    sample to that model."""
    from m3bng.assist import render
    from m3bng.assist import rerank as reranking
    from m3bng.assist import suggest as assist

    settings = _settings()
    data, event_type, source = _sample_data(sample, settings)
    if write is not None and (trigger or event_type) is None:
        _fail("--write needs --trigger: the sample does not say its event type")
    try:
        with _store_errors(settings):
            specs = asyncio.run(_m3_fields(settings, program, transaction))
    except M3bngError as exc:
        _fail(str(exc), exc)
    if specs is None:
        _fail("M3 is not configured: the suggestions need the transaction's field list (MRS001MI)")
    if not specs:
        _fail(f"M3 lists no input fields for {program}/{transaction}")
    pairs = assist.used_pairs(m.spec for m in _load_mappings(settings).values())
    found = assist.suggest(program, transaction, specs, data, for_each=for_each, pairs=pairs, top=top)
    endpoint = reranking.endpoint_of(settings) if rerank else None
    if endpoint is not None:
        typer.echo(asyncio.run(reranking.rerank(found, data, endpoint)))
    typer.echo(render.table(found), nl=False)
    if write is not None:
        chosen = str(trigger or event_type)
        text = render.draft_mapping(
            found, flow=flow, trigger=[chosen], call=call, for_each=for_each, source=source
        )
        problem = render.draft_problem(text)
        if problem is not None:
            _fail(f"the draft would not load ({problem}): check --flow, --call, --trigger")
        try:
            write.write_text(text, encoding="utf-8")
        except OSError as exc:
            _fail(f"cannot write {str(write)!r}: {exc.strerror or exc}", exc)
        typer.echo(f"draft mapping written to {write}: review it, then `m3bng mappings check`")


def _operation(call: CallSpec | BngCallSpec) -> str:
    from m3bng.mapping.schema import CallSpec

    if isinstance(call, CallSpec):
        return f"{call.program}/{call.transaction}"
    return f"{call.method} {call.path}"


@webhook_app.command("send")
def webhook_send(
    event_type: Annotated[str, typer.Argument(help="Event type, e.g. order.created")],
    data: Annotated[
        str | None,
        typer.Argument(help="The event's data as JSON, or @file.json (default: the documented example)"),
    ] = None,
    url: Annotated[str | None, typer.Option(help="Default: this service's /webhooks/bng")] = None,
    message_id: Annotated[str | None, typer.Option("--id", help="webhook-id (default: random)")] = None,
) -> None:
    """Sign an event with the configured (or sandbox) secret and POST it, like BNG does."""
    import json
    import time
    import uuid

    import httpx

    from m3bng.connectors.bng.signatures import sign_standard
    from m3bng.runtime import webhook_secrets

    settings = _settings(webhook_secrets=True)
    from m3bng.connectors.bng.samples import sample

    if data is None:
        try:
            data = json.dumps(sample(event_type))
        except KeyError:
            typer.echo(f"no example for {event_type!r}: give the data as JSON", err=True)
            raise typer.Exit(2) from None
    text = _read_file(data[1:], "data file").decode("utf-8", "replace") if data.startswith("@") else data
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        typer.echo(f"data is not valid JSON: {exc}", err=True)
        raise typer.Exit(2) from None
    body = json.dumps(
        {"type": event_type, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "data": payload}
    ).encode()
    msg_id = message_id or f"msg_{uuid.uuid4().hex}"
    ts = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_standard(webhook_secrets(settings)[0], msg_id, ts, body),
    }
    target = url or f"http://{settings.host}:{settings.port}/webhooks/bng"
    try:
        response = httpx.post(target, content=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        _fail(f"cannot reach {target}: {reason} (is `m3bng serve` running there?)", exc)
    typer.echo(f"{response.status_code} {response.text}")
    raise typer.Exit(0 if response.is_success else 1)


# -- mapping versions (ops/mapping_versions.py, docs/mapping-studio.md) ------------------------------

bundle_app = typer.Typer(help="Bundles of mapping versions, to promote them to another installation.")
mappings_app.add_typer(bundle_app, name="bundle")


@mappings_app.command("export")
def mappings_export(
    folder: Annotated[Path, typer.Argument(help="Folder to write the YAML files to (created if missing).")],
) -> None:
    """Write the live mapping versions from the store back as YAML files (for version control)."""
    from m3bng.ops import mapping_versions

    settings = _settings()
    _check_store(settings, migrate_first=False)

    async def run() -> int:
        async with _connected(settings) as (sessions, _connectors):
            written = await mapping_versions.export_files(sessions, folder)
        if not written:
            typer.echo(
                "the store holds no mapping versions yet (they are imported when serve or worker starts)",
                err=True,
            )
            return 1
        for path in written:
            typer.echo(f"wrote {path}")
        return 0

    raise typer.Exit(_run_command(settings, run()))


@bundle_app.command("export")
def bundle_export(
    file: Annotated[Path, typer.Argument(help="The bundle file to write (JSON).")],
    flow: Annotated[
        list[str] | None, typer.Option("--flow", help="Only this flow (repeat); default: all.")
    ] = None,
) -> None:
    """Write the live versions (or those of --flow) as a bundle: a manifest with each text's sha256."""
    import json

    from m3bng.ops import mapping_versions

    settings = _settings()
    _check_store(settings, migrate_first=False)

    async def run() -> int:
        async with _connected(settings) as (sessions, _connectors), sessions() as session:
            bundle = await mapping_versions.export_bundle(session, flow or ())
        try:
            file.write_text(json.dumps(bundle, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        except OSError as exc:
            _fail(f"cannot write bundle {str(file)!r}: {exc.strerror or exc}", exc)
        flows = ", ".join(f"{e['flow']} v{e['version']}" for e in bundle["manifest"]["flows"])
        typer.echo(f"wrote {file}: {flows}")
        return 0

    raise typer.Exit(_run_command(settings, run()))


@bundle_app.command("import")
def bundle_import(
    file: Annotated[Path, typer.Argument(help="A bundle written by `m3bng mappings bundle export`.")],
) -> None:
    """Check a bundle (checksums, validation, and M3's field metadata when M3 is configured) and
    land its mappings as drafts, to be published here through the API."""
    import json

    from m3bng.ops import mapping_versions

    settings = _settings()
    raw = _read_file(file, "bundle")
    try:
        bundle = json.loads(raw)
    except ValueError as exc:
        _fail(f"bundle {str(file)!r} is not JSON: {exc}", exc)
    _check_store(settings, migrate_first=False)

    async def run() -> int:
        async with _connected(settings) as (sessions, connectors):
            check = mapping_versions.metadata_check(connectors.m3_metadata)
            if check is None:
                typer.echo("M3 not configured: metadata checks skipped", err=True)
            try:
                drafts = await mapping_versions.import_bundle(
                    sessions, settings.mappings_folder, bundle, author="cli", check=check
                )
            except mapping_versions.InvalidMapping as exc:
                for problem in exc.problems:
                    typer.echo(problem, err=True)
                return 1
        for draft in drafts:
            typer.echo(f"draft {draft.flow} v{draft.version}  [{draft.content_hash[:12]}]  {draft.comment}")
        return 0

    raise typer.Exit(_run_command(settings, run()))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
