"""The ``m3bng`` command: serve, worker, db. Settings come from M3BNG_* variables or .env."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Annotated

import structlog
import typer

from m3bng.config import Settings, SettingsError, load_settings
from m3bng.observability.logging import configure_logging

app = typer.Typer(help="m3bng: integration service between Infor M3 and BNG.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")

log = structlog.get_logger("m3bng.cli")


def _settings(**overrides: object) -> Settings:
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        typer.echo(f"m3bng: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _sandbox_banner(settings: Settings) -> None:
    line = "=" * 78
    typer.secho(
        f"{line}\n"
        "  SANDBOX MODE: no M3 (.ionapi) and no BNG configured.\n"
        "  m3bng runs with built-in stand-ins and is NOT connected to any real system.\n"
        f"  Store: {settings.database_url}\n"
        f"  Listening on http://{settings.host}:{settings.port}  (OpenAPI: /docs)\n"
        "  Set M3BNG_IONAPI_FILE and M3BNG_BNG_BASE_URL for production (see .env.example).\n"
        f"{line}",
        fg=typer.colors.YELLOW,
        bold=True,
        err=True,
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (M3BNG_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (M3BNG_PORT).")] = None,
    workers: Annotated[
        bool | None,
        typer.Option("--workers/--no-workers", help="Run workers in-process (M3BNG_RUN_WORKERS)."),
    ] = None,
) -> None:
    """Run the HTTP API with in-process workers."""
    import uvicorn

    from m3bng.app import create_app

    settings = _settings(host=host, port=port, run_workers=workers)
    if settings.sandbox:
        _sandbox_banner(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
    )


@app.command()
def worker(
    once: Annotated[bool, typer.Option(help="Process what is due now, then exit.")] = False,
) -> None:
    """Run workers only (scale-out: any number of these on one PostgreSQL)."""
    settings = _settings()
    raise typer.Exit(asyncio.run(_run_worker(settings, once=once)))


async def _run_worker(settings: Settings, *, once: bool) -> int:
    from m3bng.runtime import Runtime

    runtime = Runtime.build(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runtime.start(workers=False)
        from m3bng.inbox.worker import Worker

        worker = Worker(settings, runtime.sessions, runtime.registry)
        if once:
            await worker.run_until_idle(timeout=3600)
        else:
            await worker.run(stop)
    finally:
        await runtime.engine.dispose()
    return 0


def _migrate(direction: str, revision: str) -> None:
    from m3bng.store import migrate
    from m3bng.store.db import create_engine

    settings = _settings()

    async def run() -> None:
        engine = create_engine(settings)
        try:
            await getattr(migrate, direction)(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(run())
    typer.echo(f"database at {revision}")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    _migrate("upgrade", revision)


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, e.g. base.")]) -> None:
    """Revert migrations down to REVISION."""
    _migrate("downgrade", revision)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
