"""``m3bng sim …``: the simulators as standalone servers (demos, tests, benchmarks)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

sim_app = typer.Typer(help="Simulators of M3 (and later BNG) as standalone servers.", no_args_is_help=True)


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

    from m3bng.sim import m3 as sim

    config = sim.M3SimConfig(seed_file=seed, faults=sim.Faults(latency_ms=latency_ms, error_rate=error_rate))
    base_url = f"http://{host}:{port}"
    if write_ionapi is not None:
        sim.write_ionapi(write_ionapi, base_url, config)
        typer.echo(f"wrote {write_ionapi} for {base_url} (set M3BNG_IONAPI_FILE to use it)", err=True)
    typer.echo(
        f"M3 simulator: {base_url}/{config.ti}/M3/m3api-rest  control: {base_url}/_sim/state", err=True
    )
    uvicorn.run(sim.create_app(config), host=host, port=port, log_level="warning", access_log=False)
