"""Durable ingest benchmark (issue 2): ``POST /webhooks/bng`` against the framework floor.

The question is what the durable path (signature check, validation, one committed insert) costs
over FastAPI itself, so every target is measured in the same run on the same machine: a bare
FastAPI endpoint that parses the same JSON and answers 200 (the floor), m3bng on a SQLite file,
and m3bng on a fresh PostgreSQL database. Each server is its own uvicorn process (one, like
production's API process); this process is the load generator. Rounds interleave the targets
(floor, sqlite, postgresql, floor, …) so that load from other work on a shared machine falls on
all of them alike, and medians over rounds are reported with their spread.

    .venv/bin/python bench/ingest.py [--rounds 3] [--seconds 3] [--concurrency 1,16,64]
                                     [--only floor,sqlite,postgresql] [--requests 30000] [--pg-dsn DSN]
                                     [--py-spy FILE]

Every measurement runs for a fixed time (``--seconds``) rather than a fixed count, so that the
floor, which answers ten times faster, is not timed over a fraction of a second.

The load generator speaks HTTP/1.1 keep-alive over raw asyncio streams with requests signed
before the clock starts: an httpx client spends more CPU per request than the floor server does,
and on two cores it would measure itself (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import asyncpg
import uvloop
from fastapi import FastAPI, Request, Response

TARGETS = ("floor", "sqlite", "postgresql")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # a bench-only key, never a real sender's
PATH = "/webhooks/bng"
DEFAULT_PG_DSN = os.environ.get("M3BNG_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
WARMUP_REQUESTS = 500
RESPONSE_TIMEOUT = 30.0  # seconds; a stuck server fails the run instead of hanging it
START_TIMEOUT = 60.0


# --- the servers (each runs in its own process: `bench/ingest.py --serve TARGET`) -------------


def floor_app() -> FastAPI:
    """The framework floor: the same route, body read and JSON parse, then 200 and nothing else."""
    app = FastAPI()

    @app.post(PATH)
    async def receive(request: Request) -> Response:
        json.loads(await request.body())
        return Response(b"{}", status_code=200, media_type="application/json")

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    return app


def m3bng_app(database_url: str) -> FastAPI:
    """The real app as production builds it, minus the in-process workers (ingest alone)."""
    from m3bng.app import create_app
    from m3bng.config import Settings
    from m3bng.inbox.flows import FlowRegistry
    from m3bng.observability.logging import configure_logging

    settings = Settings(
        database_url=database_url,
        webhook_secrets=[SECRET],
        migrate_on_start=True,
        run_workers=False,
        # Configured as production is (not sandbox mode, so no simulator is mounted); with no
        # workers nothing ever calls this address.
        bng_base_url="http://127.0.0.1:9",
        bng_api_key="bench-unused",
        log_level="INFO",
        log_format="json",
    )
    configure_logging(settings.log_level, settings.log_format)  # what `m3bng serve` does
    # Ingest runs no flow: the registry only admits plugin event types, and order.created has
    # a model. An empty one keeps the bench independent of the flows and mappings being built.
    return create_app(settings, registry=FlowRegistry(), run_workers=False)


def serve(target: str, port: int, database_url: str) -> None:
    import uvicorn

    app = floor_app() if target == "floor" else m3bng_app(database_url)
    # The same uvicorn options as `m3bng serve` (cli.py).
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, log_config=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    target: str
    database_url: str
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        command = [sys.executable, __file__, "--serve", self.target, "--port", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "--database-url", self.database_url],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                break
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            await asyncio.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the {self.target} server did not start on port {self.port}:\n{tail}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log is not None:
            self._log.close()


# --- PostgreSQL: one fresh database per run, dropped at the end --------------------------------


def pg_urls(dsn: str) -> tuple[str, str, str]:
    """(database name, its asyncpg DSN, its SQLAlchemy URL) for a new, uniquely named database."""
    name = f"m3bng_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    base = dsn.rsplit("/", 1)[0]
    return name, f"{base}/{name}", f"{base.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"


async def pg_admin(dsn: str, sql: str) -> None:
    try:
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise SystemExit(
            f"PostgreSQL is not reachable at {dsn} ({exc}); start it with\n"
            "  pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n"
            "or leave it out with --only floor,sqlite"
        ) from None
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def stored_events(target: str, database: str) -> int:
    """Rows in ``events``: every 202 must be one committed row, or the run measured nothing."""
    if target == "sqlite":
        with contextlib.closing(sqlite3.connect(database)) as conn:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    conn = await asyncpg.connect(database, timeout=10)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM events"))
    finally:
        await conn.close()


# --- the load generator ------------------------------------------------------------------------


def signed_requests(count: int, port: int) -> list[bytes]:
    """``count`` complete HTTP requests, each a new event (unique webhook-id and order id)."""
    from m3bng.connectors.bng.samples import sample
    from m3bng.connectors.bng.signatures import sign_standard

    data = sample("order.created")
    now = int(time.time())
    stamp = datetime.now(UTC).isoformat()
    requests = []
    for _ in range(count):
        message_id = f"msg_{uuid.uuid4().hex}"
        data["OrderID"] = f"SO-{message_id[4:16]}"
        body = json.dumps({"type": "order.created", "timestamp": stamp, "data": data}).encode()
        head = (
            f"POST {PATH} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"webhook-id: {message_id}\r\nwebhook-timestamp: {now}\r\n"
            f"webhook-signature: {sign_standard(SECRET, message_id, now, body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


async def read_status(reader: asyncio.StreamReader) -> int:
    """Read one whole response and return its status (servers here always send content-length)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return int(status_line.split(b" ", 2)[1])


@dataclass
class Measurement:
    target: str
    concurrency: int
    round: int
    seconds: float
    latencies: list[float]  # seconds, sorted, 2xx only
    statuses: dict[int, int]

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile in milliseconds."""
        return self.latencies[max(0, math.ceil(q * len(self.latencies)) - 1)] * 1000

    @property
    def failures(self) -> int:
        return sum(n for status, n in self.statuses.items() if not 200 <= status < 300)


async def run_load(
    target: str, port: int, count: int, concurrency: int, round_no: int, seconds: float | None = None
) -> Measurement:
    """Send up to ``count`` pre-signed requests over ``concurrency`` keep-alive connections,
    stopping after ``seconds`` if given.

    Connections are opened and requests signed before the clock starts; each connection sends
    its next request as soon as the previous response is complete (closed loop), so the rate is
    what the server sustains at that concurrency.
    """
    requests = signed_requests(count, port)
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    todo: Iterator[bytes] = iter(requests)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    clock = time.perf_counter
    deadline = math.inf

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for request in todo:
            started = clock()
            writer.write(request)
            status = await read_status(reader)
            elapsed = clock() - started
            statuses[status] = statuses.get(status, 0) + 1
            if 200 <= status < 300:
                latencies.append(elapsed)
            if started >= deadline:
                return

    gc.collect()
    gc.disable()  # the load generator's own pauses would show up as server latency
    try:
        started = clock()
        if seconds is not None:
            deadline = started + seconds
        async with asyncio.timeout((seconds or count) + RESPONSE_TIMEOUT):
            await asyncio.gather(*(client(r, w) for r, w in conns))
        elapsed = clock() - started
    finally:
        gc.enable()
        for _, writer in conns:
            writer.close()
    latencies.sort()
    return Measurement(target, concurrency, round_no, elapsed, latencies, statuses)


# --- the report --------------------------------------------------------------------------------


def spread(values: Sequence[float], fmt: str) -> str:
    """Median, and the range over rounds when there is more than one."""
    mid = format(statistics.median(values), fmt)
    if min(values) == max(values):
        return mid
    return f"{mid} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def report(results: list[Measurement], targets: Sequence[str], concurrencies: Sequence[int]) -> str:
    floor = {(m.concurrency, m.round): m.rate for m in results if m.target == "floor"}
    lines = [
        "| target | concurrency | req/s | p50 ms | p99 ms | ratio to floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for concurrency in concurrencies:
        for target in targets:
            runs = [m for m in results if m.target == target and m.concurrency == concurrency]
            if not runs:
                continue
            ratios = [m.rate / floor[concurrency, m.round] for m in runs if (concurrency, m.round) in floor]
            lines.append(
                f"| {target} | {concurrency} | {spread([m.rate for m in runs], '.0f')} "
                f"| {spread([m.percentile(0.50) for m in runs], '.1f')} "
                f"| {spread([m.percentile(0.99) for m in runs], '.1f')} "
                f"| {spread(ratios, '.2f') if ratios else '–'} |"
            )
    return "\n".join(lines)


def verdict(results: list[Measurement]) -> str | None:
    """The issue's target: PostgreSQL at concurrency 64 ≥ 0.5 of the floor, p99 under 50 ms."""
    floor = {m.round: m.rate for m in results if m.target == "floor" and m.concurrency == 64}
    pg = [m for m in results if m.target == "postgresql" and m.concurrency == 64 and m.round in floor]
    if not pg:
        return None
    ratio = statistics.median(m.rate / floor[m.round] for m in pg)
    p99 = statistics.median(m.percentile(0.99) for m in pg)
    met = ratio >= 0.5 and p99 < 50
    return (
        f"Target (PostgreSQL, concurrency 64: ratio ≥ 0.50, p99 < 50 ms): ratio {ratio:.2f}, "
        f"p99 {p99:.1f} ms: {'met' if met else 'NOT met'}"
    )


# --- the run -----------------------------------------------------------------------------------


@contextlib.contextmanager
def py_spy(output: str | None, server: Server | None) -> Iterator[None]:
    """Sample the PostgreSQL server with py-spy while the measurements run (idle time is left
    out, so narrow the run with --only/--concurrency to the case you want to see)."""
    if not output:
        yield
        return
    exe = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if exe is None or server is None or server.process is None:
        raise SystemExit("--py-spy needs py-spy (.venv/bin/pip install py-spy) and the postgresql target")
    fmt = {".txt": "raw", ".json": "speedscope"}.get(Path(output).suffix, "flamegraph")
    command = [exe, "record", "--pid", str(server.process.pid), "--rate", "200", "--nonblocking"]
    spy = subprocess.Popen([*command, "--format", fmt, "--output", output], stdout=subprocess.DEVNULL)
    time.sleep(1)  # py-spy attaches before the first measurement starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


async def measure(args: argparse.Namespace, servers: dict[str, Server]) -> list[Measurement]:
    """Warm every server up, then the rounds: per concurrency, each target in turn."""
    budget: dict[str, int] = {}
    results: list[Measurement] = []
    for target, server in servers.items():
        warm = await run_load(target, server.port, WARMUP_REQUESTS, 16, 0)
        if warm.failures:
            raise RuntimeError(f"{target}: warm-up answered {warm.statuses}")
        results.append(warm)
        # Enough pre-signed requests to fill the time three times over at the warm-up rate.
        budget[target] = min(args.requests, max(500, math.ceil(warm.rate * args.seconds * 3)))
    for round_no in range(1, args.rounds + 1):
        for concurrency in args.concurrency:
            for target, server in servers.items():
                m = await run_load(target, server.port, budget[target], concurrency, round_no, args.seconds)
                results.append(m)
                print(
                    f"round {round_no} c={concurrency:<3} {target:<10} {m.rate:8.0f} req/s  "
                    f"p50 {m.percentile(0.5):6.1f} ms  p99 {m.percentile(0.99):6.1f} ms"
                    + (f"  NON-2xx: {m.statuses}" if m.failures else "")
                    + ("  (ran out of pre-signed requests)" if m.sent == budget[target] else ""),
                    file=sys.stderr,
                    flush=True,
                )
    return results


async def bench(args: argparse.Namespace) -> int:
    targets = [t for t in TARGETS if t in args.only]
    with tempfile.TemporaryDirectory(prefix="m3bng-bench-") as tmp:
        sqlite_file = Path(tmp) / "store.db"
        pg_name, pg_dsn, pg_url = pg_urls(args.pg_dsn)
        urls = {"floor": "", "sqlite": f"sqlite+aiosqlite:///{sqlite_file}", "postgresql": pg_url}
        stores = {"sqlite": str(sqlite_file), "postgresql": pg_dsn}
        if "postgresql" in targets:
            await pg_admin(args.pg_dsn, f'CREATE DATABASE "{pg_name}"')
        servers = {t: Server(t, urls[t], Path(tmp) / f"{t}.log") for t in targets}
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():
                await server.wait_ready()
            with py_spy(args.py_spy, servers.get("postgresql")):
                results = await measure(args, servers)
            stored = {t: await stored_events(t, stores[t]) for t in targets if t != "floor"}
        finally:
            for server in servers.values():
                server.stop()
            if "postgresql" in targets:
                await pg_admin(args.pg_dsn, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
    timed = [m for m in results if m.round > 0]
    print(report(timed, targets, args.concurrency))
    line = verdict(timed)
    if line:
        print(f"\n{line}")
    failures = sum(m.failures for m in results)
    accepted = {t: sum(len(m.latencies) for m in results if m.target == t) for t in stored}
    if failures or stored != accepted:
        print(f"\nFAILED: {failures} non-2xx answers; rows stored {stored}, 2xx {accepted}", file=sys.stderr)
        return 1
    print(f"\nEvery 2xx was one committed row: {stored} events stored.")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all targets (default 3)")
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="timed seconds per target, concurrency and round"
    )
    parser.add_argument(
        "--requests", type=int, default=30000, help="at most this many requests per measurement"
    )
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(c) for c in s.split(",")],
        default=[1, 16, 64],
        help="comma-separated concurrencies (default 1,16,64)",
    )
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=list(TARGETS),
        help="comma-separated targets from floor,sqlite,postgresql (ratios need floor)",
    )
    parser.add_argument("--pg-dsn", default=DEFAULT_PG_DSN, help="admin DSN; a fresh database is made")
    parser.add_argument(
        "--py-spy", metavar="FILE", help="profile the postgresql server into FILE (.svg, .txt raw, .json)"
    )
    parser.add_argument("--serve", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(TARGETS)
    if unknown:
        parser.error(f"--only: unknown target(s) {', '.join(sorted(unknown))}")
    if min(args.rounds, args.requests, *args.concurrency) < 1 or args.seconds <= 0:
        parser.error("--rounds, --seconds, --requests and --concurrency must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.database_url)
        return 0
    return uvloop.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
