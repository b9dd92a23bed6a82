"""Storefront price reads (issue 21): a 20-item ``POST /api/v1/storefront/prices``, cold and warm.

The M3 simulator answers every MI call after ``--latency-ms`` (20 ms: a near tenant), m3bng runs
as production does (one uvicorn process, SQLite store, INFO logs as JSON), and wrk drives the
load with ``bench/storefront.lua``: a compiled client, since on two cores a Python one takes
CPU the server needs (docs/benchmarks.md). Each server is its own process.

    .venv/bin/python bench/storefront.py [--seconds 10] [--concurrency 1,16,64] [--latency-ms 20]
                                         [--m3-cap 8] [--share 0.25] [--modes cold,warm,floor]

* **cold**: every request asks its 20 items at a quantity never asked before, so every line
  misses the cache and the request costs one bulk MI POST of 20 GetPriceLine (single flight
  cannot help: no two requests share a key);
* **warm**: every request asks the same 20 items, primed once: all hits, no M3 call;
* **floor**: the warm requests against a bare ASGI app on the same uvicorn that answers as many
  bytes (``serve_floor``): the HTTP stack's own cost, which a warm read cannot get under.

For each run the M3 calls are counted by the simulator (``/_sim/stats``): HTTP calls (bulk
POSTs) and GetPriceLine transactions, per request answered.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).parent
WRK_SCRIPT = HERE / "storefront.lua"
TOKEN = "m3bng_ops_bench-storefront-token-0123456789abcdef"  # bench only
CUSTOMER = "BNG-NORDIC"
# 20 items: the simulator's 4 priced ones and 16 more added to its price list for the bench.
EXTRA = [f"BENCH-{n:02d}" for n in range(16)]
ITEMS = ["BIKE-100", "BIKE-200", "HELMET-1", "TUBE-26", *EXTRA]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_sim(port: int) -> None:
    import uvicorn

    from m3bng.sim.m3 import create_app

    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_app(port: int, database_url: str, ionapi: str, cap: int, share: float) -> None:
    import uvicorn

    from m3bng.app import create_app
    from m3bng.config import Settings
    from m3bng.flows.runtime import FlowRegistry
    from m3bng.observability.logging import configure_logging
    from m3bng.ops.tokens import hash_token

    settings = Settings(
        database_url=database_url,
        ionapi_file=Path(ionapi),
        migrate_on_start=True,
        run_workers=False,
        webhook_secrets=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        bng_base_url="http://127.0.0.1:9",
        bng_api_key="bench-unused",
        ops_tokens=[f"storefront storefront:read {hash_token(TOKEN)}"],
        m3_max_concurrency=cap,
        storefront_m3_share=share,
        storefront_m3_wait_seconds=30,  # measure M3's answer, not the stale fallback
        log_level="INFO",
        log_format="json",
    )
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings, registry=FlowRegistry(), run_workers=False)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, log_config=None)


def serve_floor(port: int, size: int) -> None:
    """The HTTP floor: a bare ASGI app on the same uvicorn (uvloop, httptools) that reads the
    request body and answers ``size`` fixed bytes, as a warm price answer is sent. What a warm
    read cannot get under in this process, whatever m3bng does."""
    import uvicorn

    body = b'{"floor":"' + b"x" * max(0, size - 12) + b'"}'
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, log_config=None)


def spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("wb")
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


async def wait_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                await client.get(url)
                return
            await asyncio.sleep(0.1)
    tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-3000:]
    raise RuntimeError(f"{url} did not come up:\n{tail}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


async def link_customer(database_url: str) -> None:
    from m3bng.config import Settings
    from m3bng.store import documents
    from m3bng.store.db import create_engine, session_factory

    engine = create_engine(Settings(database_url=database_url))
    try:
        async with session_factory(engine)() as session, session.begin():
            await documents.put_xref(session, "customer", CUSTOMER, "10001")
    finally:
        await engine.dispose()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (/proc): the server's cost per request,
    which other work on a shared machine does not inflate the way it inflates latency."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, mode: str, concurrency: int, seconds: int, run: int) -> dict[str, Any]:
    threads = min(2, concurrency)
    command = [
        "/usr/bin/wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "30s",
        "-s",
        str(WRK_SCRIPT),
        url,
        "--",
        mode,
        CUSTOMER,
        TOKEN,
        ",".join(ITEMS),
        str(run),  # cold: quantities no earlier run asked
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("M3BNG-WRK "))
    result: dict[str, Any] = json.loads(line.removeprefix("M3BNG-WRK "))
    result["command"] = " ".join([*command[:-6], "--", mode, CUSTOMER, "$TOKEN", "$ITEMS", str(run)])
    return result


async def floor(options: argparse.Namespace, url: str, work: Path, rows: list[dict[str, Any]]) -> None:
    """The warm read's wrk runs against ``serve_floor`` answering as many bytes as m3bng does."""
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"customer": CUSTOMER, "items": [{"item": i} for i in ITEMS]}
        answer = await client.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
        answer.raise_for_status()
    port = free_port()
    server = spawn(
        ["--serve", "floor", "--port", str(port), "--size", str(len(answer.content))], work / "floor.log"
    )
    try:
        floor_url = f"http://127.0.0.1:{port}/api/v1/storefront/prices"
        await wait_up(floor_url, server, work / "floor.log")
        for concurrency in options.concurrency:
            cpu = cpu_seconds(server.pid)
            result = wrk(floor_url, "warm", concurrency, options.seconds, len(rows))
            cpu = cpu_seconds(server.pid) - cpu
            lat = result["latency_us"]
            row = {
                "mode": "floor",
                "concurrency": concurrency,
                "requests": result["responses"],
                "ok": result["statuses"].get("200", 0),
                "rate": round(result["responses"] / (result["duration_us"] / 1e6), 1),
                "p50_ms": lat["p50"] / 1000,
                "p90_ms": lat["p90"] / 1000,
                "p99_ms": lat["p99"] / 1000,
                "max_ms": lat["max"] / 1000,
                "answer_bytes": len(answer.content),
                "server_cpu_ms_per_request": round(cpu * 1000 / max(result["responses"], 1), 3),
                "load_average": os.getloadavg()[0],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        stop(server)


async def main(options: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="m3bng-bench-storefront-"))
    sim_port, app_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    sim = spawn(["--serve", "sim", "--port", str(sim_port)], work / "sim.log")
    app = None
    try:
        await wait_up(f"{sim_url}/_sim/stats", sim, work / "sim.log")
        from m3bng.sim.m3 import M3SimConfig, write_ionapi

        ionapi = work / "sim.ionapi"
        write_ionapi(ionapi, sim_url, M3SimConfig())
        async with httpx.AsyncClient(base_url=sim_url, timeout=10) as control:
            seed = {
                "items": [{"ITNO": i, "ITDS": i, "UNMS": "PCS", "STAT": "20"} for i in EXTRA],
                "prices": [
                    {"PRRF": "B2B-SE", "CUCD": "SEK", "ITNO": i, "SAPR": 100 + n} for n, i in enumerate(EXTRA)
                ],
            }
            (await control.post("/_sim/seed", json=seed)).raise_for_status()
            (await control.put("/_sim/faults", json={"latency_ms": options.latency_ms})).raise_for_status()
            database_url = f"sqlite+aiosqlite:///{work}/m3bng.db"
            app_args = ["--serve", "app", "--port", str(app_port), "--database-url", database_url]
            app_args += [
                "--ionapi",
                str(ionapi),
                "--m3-cap",
                str(options.m3_cap),
                "--share",
                str(options.share),
            ]
            app = spawn(app_args, work / "app.log")
            await wait_up(f"http://127.0.0.1:{app_port}/health/live", app, work / "app.log")
            await link_customer(database_url)
            url = f"http://127.0.0.1:{app_port}/api/v1/storefront/prices"
            rows: list[dict[str, Any]] = []
            for mode in options.modes:
                if mode == "floor":
                    await floor(options, url, work, rows)
                    continue
                for concurrency in options.concurrency:
                    if mode == "warm":  # prime: one request for the 20 items at quantity 1
                        async with httpx.AsyncClient(timeout=30) as client:
                            body = {"customer": CUSTOMER, "items": [{"item": i} for i in ITEMS]}
                            primed = await client.post(
                                url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}
                            )
                            primed.raise_for_status()
                            assert all(p["error"] is None for p in primed.json()["prices"]), primed.text
                    before = (await control.get("/_sim/stats")).json()
                    cpu = cpu_seconds(app.pid)
                    result = wrk(url, mode, concurrency, options.seconds, len(rows))
                    cpu = cpu_seconds(app.pid) - cpu
                    after = (await control.get("/_sim/stats")).json()
                    answered = result["statuses"].get("200", 0)
                    calls = after["mi_calls"] - before["mi_calls"]
                    lines = after.get("OIS320MI/GetPriceLine", 0) - before.get("OIS320MI/GetPriceLine", 0)
                    lat = result["latency_us"]
                    row = {
                        "mode": mode,
                        "concurrency": concurrency,
                        "requests": result["responses"],
                        "ok": answered,
                        "rate": round(result["responses"] / (result["duration_us"] / 1e6), 1),
                        "p50_ms": lat["p50"] / 1000,
                        "p90_ms": lat["p90"] / 1000,
                        "p99_ms": lat["p99"] / 1000,
                        "max_ms": lat["max"] / 1000,
                        "m3_http_calls": calls,
                        "m3_transactions": lines,
                        "m3_calls_per_request": round(calls / max(answered, 1), 3),
                        "max_in_flight_at_m3": after["max_in_flight"],
                        "server_cpu_ms_per_request": round(cpu * 1000 / max(result["responses"], 1), 3),
                        "load_average": os.getloadavg()[0],
                        "statuses": result["statuses"],
                        "errors": result["errors"],
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
            print("command:", rows and result["command"])
    finally:
        if app is not None:
            stop(app)
        stop(sim)


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", choices=["sim", "app", "floor"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--database-url")
    parser.add_argument("--ionapi")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=lambda v: [int(x) for x in v.split(",")], default=[1, 16, 64])
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--modes", type=lambda v: v.split(","), default=["cold", "warm"])
    parser.add_argument("--m3-cap", type=int, default=8)
    parser.add_argument("--share", type=float, default=0.25)
    parser.add_argument("--size", type=int, default=0)  # --serve floor: bytes of its answer
    options = parser.parse_args()
    if options.serve == "sim":
        serve_sim(options.port)
    elif options.serve == "floor":
        serve_floor(options.port, options.size)
    elif options.serve == "app":
        serve_app(options.port, options.database_url, options.ionapi, options.m3_cap, options.share)
    else:
        if os.environ.get("PYTHONHASHSEED") is None:
            os.environ["PYTHONHASHSEED"] = "0"
        asyncio.run(main(options))


if __name__ == "__main__":
    cli()
