"""``m3bng sim …``: the simulators as standalone servers (demos, tests, benchmarks)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

sim_app = typer.Typer(help="Simulators of M3 and BNG as standalone servers.", no_args_is_help=True)


@sim_app.command("m3")
def m3(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8081,
    write_ionapi: Annotated[
        Path | None, typer.Option(help="Write an .ionapi file for this simulator.")
    ] = None,
    seed: Annotated[Path | None, typer.Option(help="Seed data (YAML), instead of the built-in seed.")] = None,
    latency_ms: Annotated[float, typer.Option(help="Added latency per MI call.")] = 0.0,
    error_rate: Annotated[float, typer.Option(help="Fraction of MI calls answered with HTTP 500.")] = 0.0,
) -> None:
    """Run the M3 simulator: ION API gateway layout, OAuth token endpoint, MI REST v1/v2."""
    import uvicorn

    from m3bng.cli.failures import bind, serve_on
    from m3bng.sim import m3 as sim

    config = sim.M3SimConfig(seed_file=seed, faults=sim.Faults(latency_ms=latency_ms, error_rate=error_rate))
    sock = bind(host, port)  # before the address is printed or an .ionapi file names it
    base_url = f"http://{host}:{port}"
    if write_ionapi is not None:
        sim.write_ionapi(write_ionapi, base_url, config)
        typer.echo(f"wrote {write_ionapi} for {base_url} (set M3BNG_IONAPI_FILE to use it)", err=True)
    typer.echo(
        f"M3 simulator: {base_url}/{config.ti}/M3/m3api-rest  control: {base_url}/_sim/state", err=True
    )
    app = sim.create_app(config)
    serve_on(uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)), sock)


@sim_app.command("bng")
def bng(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8082,
    api_key: Annotated[
        str | None, typer.Option(help="API key to accept (default: the sandbox key bng-sandbox-key).")
    ] = None,
    latency_ms: Annotated[float, typer.Option(help="Added latency per API call.")] = 0.0,
    rate_limit: Annotated[
        float, typer.Option(help="Requests per second per client before 429 (0: no limit).")
    ] = 0.0,
    webhook_url: Annotated[
        str | None, typer.Option(help="Send a signed webhook here after every change (auto-emit).")
    ] = None,
    webhook_secret: Annotated[
        str | None,
        typer.Option(help="Webhook signing secret (whsec_...), as in m3bng's M3BNG_WEBHOOK_SECRETS."),
    ] = None,
) -> None:
    """Run the BNG simulator: REST API under /api/v1, API key or OAuth2, fault injection, webhooks."""
    import uvicorn

    from m3bng.cli.failures import bind, serve_on
    from m3bng.sim import bng as sim

    if bool(webhook_url) != bool(webhook_secret):
        raise typer.BadParameter("--webhook-url and --webhook-secret go together")
    config = sim.BngSimConfig(
        api_key=api_key or sim.DEFAULT_API_KEY,
        faults=sim.Faults(latency_ms=latency_ms, rate_limit_per_second=rate_limit),
        webhooks=sim.WebhookTarget(url=webhook_url, secret=webhook_secret, enabled=bool(webhook_url)),
    )
    sock = bind(host, port)  # before the address is printed
    base_url = f"http://{host}:{port}"
    typer.echo(
        f"BNG simulator: {base_url}{sim.API_PREFIX}  control: {base_url}/_sim/state\n"
        f"  auth: header {config.api_key_header} (--api-key), or OAuth2 client credentials at "
        f"{base_url}/oauth/token (client id {config.client_id})",
        err=True,
    )
    app = sim.create_app(config)
    serve_on(uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)), sock)
