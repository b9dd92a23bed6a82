"""Durable ingest benchmark (issues 2 and 15): ``POST /webhooks/bng`` against the framework floor.

The question is what the durable path (signature check, validation, one committed insert) costs
over FastAPI itself, so every target is measured in the same run on the same machine: a bare
FastAPI endpoint that parses the same JSON and answers 200 (the floor), m3bng on a SQLite file,
and m3bng on a fresh PostgreSQL database. Each server is its own uvicorn process (one, like
production's API process). Rounds interleave the targets (floor, sqlite, postgresql, floor, …)
so that load from other work on a shared machine falls on all of them alike, and medians over
rounds are reported with their spread.

    .venv/bin/python bench/ingest.py [--rounds 3] [--seconds 15] [--concurrency 64] [--threads 2]
                                     [--only floor,sqlite,postgresql] [--requests 400000]
                                     [--pg-dsn DSN] [--py-spy FILE] [--compare DIR]

The load generator is wrk (``apt-get install wrk``), a compiled client, with ``bench/ingest.lua``:
on two cores a Python client takes CPU the server needs (docs/benchmarks.md). The default run is
``wrk -t2 -c64 -d15s --latency`` against each target. Before each measurement this process signs
enough new events (unique webhook-id, timestamp now, well inside the 300 s tolerance) for the
whole measurement and writes them, one file per wrk thread, as complete HTTP requests; the
script sends each once, in order. The floor gets the same requests from the same script, cycled
(it stores nothing, so a repeat costs it what any request does). Every request must be answered
202 by m3bng (a 200 is a duplicate id: the run fails) and 200 by the floor; at the end, the rows
stored must lie between the 202s counted and the requests sent (wrk drops the answers still in
flight when its time is up).

Besides rates and wrk's latency percentiles, each measurement reports CPU time per request of
the server process, of the PostgreSQL backends serving it and of wrk (from /proc), and how many
cores other work on the machine kept busy meanwhile: the noise, on a shared machine.
``--compare DIR`` adds a target running another checkout's code (``DIR/src``) on PostgreSQL, in
the same rounds: a server-side change measured side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import asyncpg
import uvloop
from fastapi import FastAPI, Request, Response

TARGETS = ("floor", "sqlite", "postgresql")
PG_TARGETS = ("postgresql", "compare")  # compare: PostgreSQL with another checkout's code
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # a bench-only key, never a real sender's
PATH = "/webhooks/bng"
DEFAULT_PG_DSN = os.environ.get("M3BNG_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
WRK_SCRIPT = Path(__file__).with_name("ingest.lua")
WARMUP_SECONDS = 2
MIN_RATE = 5000  # req/s: pre-signed requests for at least this rate (see budget_for)
FLOOR_REQUESTS = 50_000
RESPONSE_TIMEOUT = 30.0  # seconds; wrk counts an answer this late as a timeout, a socket error
START_TIMEOUT = 60.0
TICKS = os.sysconf("SC_CLK_TCK")
GOAL_RATIO = 0.7  # issue 15: PostgreSQL at concurrency 64, against the floor in the same run
GOAL_P99_MS = 30.0


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
    from m3bng.flows.runtime import FlowRegistry
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
    source: Path | None = None  # another checkout's src/ (--compare), imported before ours
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        command = [sys.executable, __file__, "--serve", self.target, "--port", str(self.port)]
        env = dict(os.environ)
        if self.source is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.source), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [*command, "--database-url", self.database_url],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
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


# --- pre-signed requests (bench/e2e.py sends them too, with read_status) -------------------


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


# --- the load: wrk with bench/ingest.lua -------------------------------------------------------


def find_wrk() -> str:
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit(
            "bench/ingest.py drives the load with wrk, which is not on PATH; install it with\n"
            "  apt-get install wrk        (Debian, Ubuntu; brew install wrk on macOS)"
        )
    return exe


def write_requests(requests: Sequence[bytes], prefix: Path, threads: int) -> None:
    """One file per wrk thread (``PREFIX.0``, ``PREFIX.1``, …): each request preceded by a line
    with its length, thread i taking every threads-th request from i on."""
    for thread in range(threads):
        with open(f"{prefix}.{thread}", "wb") as out:
            for request in requests[thread::threads]:
                out.write(b"%d\n" % len(request))
                out.write(request)


def remove_requests(prefix: Path, threads: int) -> None:
    for thread in range(threads):
        Path(f"{prefix}.{thread}").unlink()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_cpu() -> float:
    """CPU seconds all cores have been busy since boot (/proc/stat: all but idle and iowait)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICKS


def thread_count(pid: int) -> int:
    """Threads of a process, 0 once it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


async def wrk_started(pid: int, threads: int) -> None:
    """Wait until wrk runs all its threads (or has exited)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not 0 < thread_count(pid) <= threads:
            return
        await asyncio.sleep(0.005)


def children_cpu() -> float:
    """CPU time of this process's children that have exited: around one wrk run, wrk's whole."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Measurement:
    target: str
    concurrency: int
    round: int
    seconds: float
    responses: int  # complete answers (wrk drops those still in flight when its time is up)
    sent: int  # requests handed to wrk, in flight at the end included
    wrapped: int  # times a thread ran out of pre-signed requests and started over
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    latency_us: dict[str, float]  # wrk's percentiles over every answer
    cpu: dict[str, float]  # seconds over the measurement: server, wrk, postgresql, others

    @property
    def expected(self) -> int:
        """The floor answers 200; m3bng 202 for a new event (200 would be a duplicate)."""
        return 200 if self.target == "floor" else 202

    @property
    def accepted(self) -> int:
        return self.statuses.get(self.expected, 0)

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds

    @property
    def failures(self) -> int:
        return self.responses - self.accepted + sum(self.socket_errors.values())

    def percentile(self, q: int) -> float:
        """wrk's percentile in milliseconds."""
        return self.latency_us[f"p{q}"] / 1000

    def cpu_us(self, part: str) -> float | None:
        """CPU microseconds per accepted request of one part (None when not measured)."""
        if part not in self.cpu or not self.accepted:
            return None
        return self.cpu[part] / self.accepted * 1e6

    @property
    def others(self) -> float:
        """Cores busy with work outside this run, on average over the measurement."""
        return self.cpu["others"] / self.seconds


async def run_wrk(
    args: argparse.Namespace,
    server: Server,
    count: int,
    concurrency: int,
    seconds: int,
    round_no: int,
    workdir: Path,
    pg_backends: Callable[[], Awaitable[list[int]]] | None,
) -> Measurement:
    """Sign ``count`` new events, then let wrk send them over ``concurrency`` keep-alive
    connections for ``seconds`` (closed loop: each connection sends its next request as soon as
    the answer to the last one is complete, so the rate is what the server sustains)."""
    threads = min(args.threads, concurrency)
    prefix = workdir / f"requests-{server.target}"
    requests = signed_requests(count, server.port)
    write_requests(requests, prefix, threads)
    del requests
    command = [
        *(args.wrk, "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds}s"),
        *("--latency", "--timeout", f"{int(RESPONSE_TIMEOUT)}s", "-s", str(WRK_SCRIPT)),
        *(f"http://127.0.0.1:{server.port}{PATH}", "--", str(prefix)),
    ]
    assert server.process is not None
    backends = await pg_backends() if pg_backends else []
    wrk_before = children_cpu()
    wrk = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(seconds + RESPONSE_TIMEOUT + 30):
        # The CPU readings start once wrk has read the requests (its Lua init, about 2 µs a
        # request, before its own clock starts): it starts thread i right after init i.
        await wrk_started(wrk.pid, threads)
        before = {
            "server": cpu_seconds(server.process.pid),
            "wrk": cpu_seconds(wrk.pid),
            "postgresql": sum(map(cpu_seconds, backends)),
            "machine": machine_cpu(),
        }
        out, err = await wrk.communicate()
    cpu = {
        "server": cpu_seconds(server.process.pid) - before["server"],
        "wrk": children_cpu() - wrk_before - before["wrk"],
    }
    if pg_backends:
        # Backends that were there before and those the pool opened meanwhile.
        cpu["postgresql"] = sum(map(cpu_seconds, await pg_backends())) - before["postgresql"]
    # Everything else the machine ran meanwhile (other test runs on a shared machine): the noise.
    cpu["others"] = max(0.0, machine_cpu() - before["machine"] - sum(cpu.values()))
    remove_requests(prefix, threads)
    line = next((ln for ln in out.decode().splitlines() if ln.startswith("M3BNG-WRK ")), None)
    if wrk.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed ({wrk.returncode}): {' '.join(command)}\n{out.decode()}{err.decode()}"
        )
    result = json.loads(line.removeprefix("M3BNG-WRK "))
    return Measurement(
        target=server.target,
        concurrency=concurrency,
        round=round_no,
        seconds=result["duration_us"] / 1e6,
        responses=result["responses"],
        sent=result["sent"],
        wrapped=result["wrapped"],
        statuses={int(status): n for status, n in result["statuses"].items()},
        socket_errors={kind: n for kind, n in result["errors"].items() if kind != "status" and n},
        latency_us=result["latency_us"],
        cpu=cpu,
    )


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
        "| target | concurrency | req/s | p50 ms | p99 ms | ratio to floor "
        "| CPU µs/req: server | PostgreSQL | wrk | other work, cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency in concurrencies:
        for target in targets:
            runs = [m for m in results if m.target == target and m.concurrency == concurrency]
            if not runs:
                continue
            ratios = [m.rate / floor[concurrency, m.round] for m in runs if (concurrency, m.round) in floor]
            cpu = []
            for part in ("server", "postgresql", "wrk"):
                values = [v for m in runs if (v := m.cpu_us(part)) is not None]
                cpu.append(f"{statistics.median(values):.0f}" if values else "–")
            lines.append(
                f"| {target} | {concurrency} | {spread([m.rate for m in runs], '.0f')} "
                f"| {spread([m.percentile(50) for m in runs], '.1f')} "
                f"| {spread([m.percentile(99) for m in runs], '.1f')} "
                f"| {spread(ratios, '.2f') if ratios else '–'} | {' | '.join(cpu)} "
                f"| {spread([m.others for m in runs], '.2f')} |"
            )
    return "\n".join(lines)


def verdict(results: list[Measurement]) -> str | None:
    """The goal (issue 15): PostgreSQL at concurrency 64 ≥ 0.7 of the floor, p99 under 30 ms."""
    floor = {m.round: m.rate for m in results if m.target == "floor" and m.concurrency == 64}
    pg = [m for m in results if m.target == "postgresql" and m.concurrency == 64 and m.round in floor]
    if not pg:
        return None
    ratio = statistics.median(m.rate / floor[m.round] for m in pg)
    p99 = statistics.median(m.percentile(99) for m in pg)
    met = ratio >= GOAL_RATIO and p99 < GOAL_P99_MS
    return (
        f"Goal (PostgreSQL, concurrency 64: ratio ≥ {GOAL_RATIO:.2f}, p99 < {GOAL_P99_MS:.0f} ms): "
        f"ratio {ratio:.2f}, p99 {p99:.1f} ms: {'met' if met else 'NOT met'}"
    )


# --- the run -----------------------------------------------------------------------------------


@contextlib.contextmanager
def py_spy(output: str | None, server: Server | None) -> Iterator[None]:
    """Sample one server with py-spy while the measurements run (idle time is left out, so
    narrow the run with --only/--concurrency to the case you want to see)."""
    if not output:
        yield
        return
    exe = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if exe is None or server is None or server.process is None:
        raise SystemExit("--py-spy needs py-spy (.venv/bin/pip install py-spy)")
    fmt = {".txt": "raw", ".json": "speedscope"}.get(Path(output).suffix, "flamegraph")
    command = [exe, "record", "--pid", str(server.process.pid), "--rate", "200", "--nonblocking"]
    spy = subprocess.Popen([*command, "--format", fmt, "--output", output], stdout=subprocess.DEVNULL)
    time.sleep(1)  # py-spy attaches before the first measurement starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


def budget_for(target: str, fastest: float, seconds: int, cap: int) -> int:
    """Pre-signed requests for one measurement of ``target``.

    m3bng must never see an id twice: 1.5 times what the fastest rate seen so far in the run
    (usually the floor's, which m3bng does not exceed) would use, and at least MIN_RATE a second.
    The floor stores nothing and answers a repeat as it answers anything else, so its requests
    are cycled: FLOOR_REQUESTS of them.
    """
    if target == "floor":
        return min(cap, FLOOR_REQUESTS)
    return min(cap, math.ceil(max(fastest * 1.5, MIN_RATE) * seconds))


async def measure(
    args: argparse.Namespace,
    servers: dict[str, Server],
    workdir: Path,
    pg_backends: dict[str, Callable[[], Awaitable[list[int]]]],
) -> list[Measurement]:
    """Warm every server up, then the rounds: per concurrency, each target in turn."""
    fastest = 0.0  # req/s, any target
    results: list[Measurement] = []
    for target, server in servers.items():
        backends = pg_backends.get(target)
        count = budget_for(target, fastest, WARMUP_SECONDS, args.requests)
        warm = await run_wrk(args, server, count, 16, WARMUP_SECONDS, 0, workdir, backends)
        if warm.failures or (warm.wrapped and target != "floor"):
            raise RuntimeError(
                f"{target}: warm-up answered {warm.statuses}, socket errors {warm.socket_errors}"
            )
        results.append(warm)
        fastest = max(fastest, warm.rate)
    for round_no in range(1, args.rounds + 1):
        for concurrency in args.concurrency:
            for target, server in servers.items():
                backends = pg_backends.get(target)
                count = budget_for(target, fastest, args.seconds, args.requests)
                m = await run_wrk(args, server, count, concurrency, args.seconds, round_no, workdir, backends)
                results.append(m)
                fastest = max(fastest, m.rate)
                problems = []
                if m.failures:
                    problems.append(f"NOT {m.expected}: {m.statuses} {m.socket_errors}")
                if m.wrapped and target != "floor":
                    problems.append(f"ran out of pre-signed requests ({count}), ids repeated")
                print(
                    f"round {round_no} c={concurrency:<3} {target:<10} {m.rate:8.0f} req/s  "
                    f"p50 {m.percentile(50):6.1f} ms  p99 {m.percentile(99):6.1f} ms  "
                    f"CPU/req: server {m.cpu_us('server') or 0:4.0f} µs, wrk {m.cpu_us('wrk') or 0:3.0f} µs  "
                    f"others {m.others:.2f} cores" + (f"  {'; '.join(problems)}" if problems else ""),
                    file=sys.stderr,
                    flush=True,
                )
    return results


def pg_backend_lister(admin_dsn: str, database: str) -> Callable[[], Awaitable[list[int]]] | None:
    """A function listing the PostgreSQL backends serving ``database``, for their CPU time from
    /proc; None unless PostgreSQL runs on this machine."""
    if urllib.parse.urlsplit(admin_dsn).hostname not in ("127.0.0.1", "localhost", "::1", None):
        return None

    async def backends() -> list[int]:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)
        finally:
            await conn.close()
        return [int(row["pid"]) for row in rows]

    return backends


async def bench(args: argparse.Namespace) -> int:
    targets = [t for t in TARGETS if t in args.only] + (["compare"] if args.compare else [])
    on_pg = [t for t in targets if t in PG_TARGETS]
    with tempfile.TemporaryDirectory(prefix="m3bng-bench-") as tmp:
        sqlite_file = Path(tmp) / "store.db"
        urls = {"floor": "", "sqlite": f"sqlite+aiosqlite:///{sqlite_file}"}
        stores = {"sqlite": str(sqlite_file)}
        pg_names = {}
        for target in on_pg:
            pg_names[target], stores[target], urls[target] = pg_urls(args.pg_dsn)
            await pg_admin(args.pg_dsn, f'CREATE DATABASE "{pg_names[target]}"')
        servers = {t: Server(t, urls[t], Path(tmp) / f"{t}.log") for t in targets}
        if args.compare:
            servers["compare"].source = args.compare / "src"
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():
                await server.wait_ready()
            backends = {t: lister for t in on_pg if (lister := pg_backend_lister(args.pg_dsn, pg_names[t]))}
            profiled = servers.get("postgresql") if len(servers) > 1 else next(iter(servers.values()))
            with py_spy(args.py_spy, profiled):
                results = await measure(args, servers, Path(tmp), backends)
            stored = {t: await stored_events(t, stores[t]) for t in targets if t != "floor"}
        finally:
            for server in servers.values():
                server.stop()
            for name in pg_names.values():
                await pg_admin(args.pg_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    timed = [m for m in results if m.round > 0]
    print(report(timed, targets, args.concurrency))
    line = verdict(timed)
    if line:
        print(f"\n{line}")
    failures = sum(m.failures for m in results)
    wrapped = sum(m.wrapped for m in results if m.target != "floor")
    accepted = {t: sum(m.accepted for m in results if m.target == t) for t in stored}
    sent = {t: sum(m.sent for m in results if m.target == t) for t in stored}
    if failures or wrapped or any(not accepted[t] <= stored[t] <= sent[t] for t in stored):
        print(
            f"\nFAILED: {failures} wrong answers or socket errors, {wrapped} wraps of the pre-signed "
            f"requests; rows stored {stored}, 202 answers {accepted}, requests sent {sent}",
            file=sys.stderr,
        )
        return 1
    if stored:
        print(
            f"\nEvery 202 was a committed row: {stored} events stored, {accepted} answered 202, "
            f"{sent} sent (the rest were in flight when wrk stopped)."
        )
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all targets (default 3)")
    parser.add_argument(
        "--seconds",
        type=int,
        default=15,
        help="wrk's duration per target, concurrency and round (default 15)",
    )
    parser.add_argument(
        "--requests", type=int, default=400_000, help="at most this many pre-signed requests per measurement"
    )
    parser.add_argument(
        "--concurrency",
        type=lambda s: [int(c) for c in s.split(",")],
        default=[64],
        help="comma-separated concurrencies: wrk's connections (default 64)",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="wrk's threads (default 2, at most the connections)"
    )
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=list(TARGETS),
        help="comma-separated targets from floor,sqlite,postgresql (ratios need floor)",
    )
    parser.add_argument("--pg-dsn", default=DEFAULT_PG_DSN, help="admin DSN; a fresh database is made")
    parser.add_argument(
        "--py-spy",
        metavar="FILE",
        help="profile the postgresql server (or the one --only target) into FILE (.svg, .txt raw, .json)",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="DIR",
        help="also measure another checkout's m3bng (DIR/src) on PostgreSQL, as target 'compare'",
    )
    parser.add_argument("--serve", choices=[*TARGETS, "compare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(TARGETS)
    if unknown:
        parser.error(f"--only: unknown target(s) {', '.join(sorted(unknown))}")
    if args.compare is not None and not (args.compare / "src" / "m3bng").is_dir():
        parser.error(f"--compare: {args.compare}/src/m3bng is not there")
    if min(args.rounds, args.seconds, args.requests, args.threads, *args.concurrency) < 1:
        parser.error("--rounds, --seconds, --requests, --threads and --concurrency must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.database_url)
        return 0
    args.wrk = find_wrk()
    return uvloop.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
