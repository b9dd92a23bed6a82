"""The ``m3bng`` command: serve, worker, db. Settings come from M3BNG_* variables or .env."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import typer

from m3bng.config import Settings, SettingsError, load_settings
from m3bng.errors import M3bngError

if TYPE_CHECKING:
    from m3bng.mapping import Mapping
    from m3bng.mapping.schema import BngCallSpec, CallSpec
from m3bng.observability.logging import configure_logging
from m3bng.ops.cli import ops_app
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
        f"  Dashboard: http://{settings.host}:{settings.port}/ui  (ops:admin token in "
        "m3bng-sandbox.ops-token)\n"
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
    try:
        application = create_app(settings)
    except M3bngError as exc:
        typer.echo(f"m3bng: {exc}", err=True)
        raise typer.Exit(2) from None
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        log_config=None,  # uvicorn's records go through our JSON logging (observability/logging.py)
        # HTTP requests (ingest) are short; the workers' own grace period follows in the lifespan.
        timeout_graceful_shutdown=5,
    )


@app.command()
def worker(
    once: Annotated[bool, typer.Option(help="Process what is due now, then exit.")] = False,
) -> None:
    """Run workers only (scale-out: any number of these on one PostgreSQL)."""
    settings = _settings()
    if settings.worker_metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port, addr=settings.host)
    try:
        raise typer.Exit(_run_loop(_run_worker(settings, once=once)))
    except M3bngError as exc:
        typer.echo(f"m3bng: {exc}", err=True)
        raise typer.Exit(2) from None


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

    runtime = Runtime.build(settings)
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


@m3_app.command("check")
def m3_check() -> None:
    """Check the M3 connection: token, MNS150MI GetUserData (company, division, user defaults)."""
    settings = _settings()

    async def run() -> int:
        from m3bng.runtime import build_connectors
        from m3bng.store.db import create_engine, session_factory

        engine = create_engine(settings)
        connectors = build_connectors(settings, session_factory(engine))
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
            typer.echo(f"M3 check failed: {exc}", err=True)
            return 1
        finally:
            await connectors.aclose()
            await engine.dispose()

    raise typer.Exit(asyncio.run(run()))


def _load_mappings(settings: Settings) -> dict[str, Mapping]:
    """The mappings folder, or one line naming the file and problem (exit 1)."""
    from m3bng.mapping import MappingFileError, load_mappings

    try:
        return load_mappings(settings.mappings_dir)
    except MappingFileError as exc:
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
        raise typer.Exit(asyncio.run(_check_against_m3(settings, mappings)))


async def _check_against_m3(settings: Settings, mappings: dict[str, Mapping]) -> int:
    from m3bng.connectors.m3.client import COMPANY_FIELDS
    from m3bng.mapping.schema import CallSpec
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
    failures = 0
    try:
        if connectors.m3_metadata is None:
            typer.echo("M3 not configured: metadata checks skipped")
            return 0
        for mapping in mappings.values():
            for name, call in mapping.spec.calls.items():
                if not isinstance(call, CallSpec):
                    continue  # a BNG request: no M3 metadata to check it against
                try:
                    specs = await connectors.m3_metadata.fields(call.program, call.transaction)
                except M3bngError as exc:
                    typer.echo(f"??  {mapping.flow}.{name}: metadata not reachable: {exc}")
                    continue
                for field_name, rule in call.fields.items():
                    spec = specs.get(field_name)
                    if spec is None:
                        failures += 1
                        typer.echo(
                            f"ERR {mapping.flow}.{name}: {field_name} is not an input field of "
                            f"{call.program}/{call.transaction}"
                        )
                    elif rule.max_length and spec.length and rule.max_length > spec.length:
                        failures += 1
                        typer.echo(
                            f"ERR {mapping.flow}.{name}: {field_name} max_length {rule.max_length} "
                            f"exceeds M3's {spec.length}"
                        )
                # CONO and DIVI are filled in at run time from the installation's company.
                missing = [
                    f
                    for f, s in specs.items()
                    if s.mandatory and f not in call.fields and f not in COMPANY_FIELDS
                ]
                if missing:
                    failures += 1
                    typer.echo(
                        f"ERR {mapping.flow}.{name}: mandatory in M3 but not mapped: {', '.join(missing)}"
                    )
    finally:
        await connectors.aclose()
        await engine.dispose()
    return 1 if failures else 0


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
    from pathlib import Path

    from m3bng.mapping import MappingError

    settings = _settings()
    mappings = _load_mappings(settings)
    if flow not in mappings:
        typer.echo(f"no flow {flow!r}; flows: {', '.join(sorted(mappings))}", err=True)
        raise typer.Exit(2)
    raw = Path(input_file).read_bytes()
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
        payload = json.loads(raw)
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
    from pathlib import Path

    import httpx

    from m3bng.connectors.bng.signatures import sign_standard
    from m3bng.runtime import webhook_secrets

    settings = _settings()
    from m3bng.connectors.bng.samples import sample

    if data is None:
        try:
            data = json.dumps(sample(event_type))
        except KeyError:
            typer.echo(f"no example for {event_type!r}: give the data as JSON", err=True)
            raise typer.Exit(2) from None
    text = Path(data[1:]).read_text() if data.startswith("@") else data
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
    response = httpx.post(target, content=body, headers=headers, timeout=10)
    typer.echo(f"{response.status_code} {response.text}")
    raise typer.Exit(0 if response.is_success else 1)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
