"""End-to-end benchmark (issue 7): BNG orders per second, from webhook to confirmed M3 order.

Every part runs as in production, each its own process (tests/support/cluster.py): the API
(``m3bng serve --no-workers``), P worker processes (``m3bng worker``), the M3 simulator with a
fixed latency per MI call, on a fresh PostgreSQL database. This process is the load generator.

An order is the documented example (three lines): M3 sees MMS200MI/GetItmBasic per line (the
item check), OIS100MI/AddBatchHead, AddBatchLine per line and Confirm; the customer is looked up
once and then known. With an M3 concurrency cap C (calls in flight at M3, whatever the number of
worker processes) and L seconds per call, no client can confirm more than

    C / (calls per order × L) orders per second,

the **limit** each run is compared with. Calls per order are counted at the simulator, not
assumed. Each run:

1. **warm-up**: C orders, not timed (connections, OAuth token, the metadata cache);
2. **saturated**: a backlog of orders sent as fast as the API takes them; throughput is the
   number confirmed over the time from the first receipt to the last confirmation. CPU time of
   the API and worker processes over this phase, divided by the orders, is the cost per order
   (waiting on M3 costs no CPU);
3. **paced**: orders sent at half the rate just measured, for latency without a queue: the time
   from the webhook's receipt (``received_at``) to the confirmed order (``finished_at``), p50
   and p99. Peak and idle RSS come from /proc.

Checks that fail the run: every order confirmed exactly once in M3 (by its CUOR), every event
done, and the simulator never saw more than C calls at once.

    .venv/bin/python bench/e2e.py [--caps 8,32] [--workers 1] [--scale-out 1,2,4] [--latency-ms 20]
                                  [--seconds 6] [--rounds 3] [--pg-dsn DSN] [--py-spy FILE]
                                  [--compare DIR]

``--compare DIR`` runs every configuration a second time with the API and workers of another
checkout (``git worktree add /tmp/before <commit>``), in the same rounds: before and after
side by side.

``--scale-out`` repeats the largest cap with each number of worker processes. Rounds interleave
the configurations, so load from other work on a shared machine falls on all of them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: bench/ is sys.path[0], not the repo
    sys.path.insert(0, str(REPO_ROOT))

import asyncpg  # noqa: E402
import uvloop  # noqa: E402
from sqlalchemy import func, select  # noqa: E402
from tests.support.cluster import Cluster, ClusterConfig, Process, orders_by_reference  # noqa: E402

from bench.ingest import SECRET, read_status, signed_requests  # noqa: E402
from m3bng.store.models import Event  # noqa: E402

DEFAULT_PG_DSN = os.environ.get("M3BNG_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
TICKS = os.sysconf("SC_CLK_TCK")
SETTLE_TIMEOUT = 600.0
SATURATED_RATE_CAP = 80.0  # orders/s: the backlog is sized for the limit, or this, if lower


# --- one process's CPU and memory, from /proc ----------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def memory_mb(pid: int, key: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


def cpu_of(processes: Sequence[Process]) -> float:
    return sum(cpu_seconds(p.pid) for p in processes)


# --- load --------------------------------------------------------------------------------------


async def send(port: int, requests: list[bytes], *, connections: int, rate: float | None) -> list[int]:
    """Send every request over ``connections`` keep-alive connections: as fast as answered
    (``rate`` None) or started at a steady ``rate`` per second; returns the statuses."""
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    statuses: list[int] = []
    started = time.monotonic()

    async def one(n: int, request: bytes) -> None:
        if rate:
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        reader, writer = await pool.get()
        try:
            writer.write(request)
            statuses.append(await read_status(reader))
        finally:
            pool.put_nowait((reader, writer))

    try:
        await asyncio.gather(*(one(n, r) for n, r in enumerate(requests)))
    finally:
        while not pool.empty():
            pool.get_nowait()[1].close()
    return statuses


@dataclass
class Run:
    code: str  # "this" or "compare" (--compare)
    cap: int
    workers: int
    round: int
    latency_ms: float
    calls_per_order: float = 0.0
    orders: int = 0
    seconds: float = 0.0
    paced_latencies: list[float] = field(default_factory=list)  # seconds, sorted
    saturated_latencies: list[float] = field(default_factory=list)
    cpu_ms_per_order: float = 0.0  # API + workers
    sim_cpu_ms_per_order: float = 0.0
    max_in_flight: int = 0
    idle_rss: dict[str, float] = field(default_factory=dict)
    peak_rss: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.orders / self.seconds if self.seconds else 0.0

    @property
    def limit(self) -> float:
        return self.cap / (self.calls_per_order * self.latency_ms / 1000) if self.calls_per_order else 0.0

    @property
    def ratio(self) -> float:
        return self.rate / self.limit if self.limit else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    return values[max(0, math.ceil(q * len(values)) - 1)] * 1000 if values else math.nan


async def timings(cluster: Cluster, after_id: int) -> tuple[list[float], float, int]:
    """(receipt → confirmation seconds per event, span first receipt → last confirmation, count)."""
    async with cluster.engine.connect() as conn:
        rows = (
            await conn.execute(select(Event.received_at, Event.finished_at).where(Event.id > after_id))
        ).all()
    latencies = sorted((done - got).total_seconds() for got, done in rows if done is not None)
    span = (max(d for _, d in rows if d) - min(g for g, _ in rows)).total_seconds() if rows else 0.0
    return latencies, span, len(rows)


async def last_event_id(cluster: Cluster) -> int:
    async with cluster.engine.connect() as conn:
        return int((await conn.execute(select(func.coalesce(func.max(Event.id), 0)))).scalar_one())


async def one_run(
    args: argparse.Namespace,
    code: str,
    cap: int,
    workers: int,
    round_no: int,
    folder: Path,
    database_url: str,
) -> Run:
    run = Run(code, cap, workers, round_no, args.latency_ms)
    share = max(1, cap // workers)  # what each process gets of the cap (connectors/shares.py)
    settings = {
        "M3BNG_WEBHOOK_SECRETS": SECRET,
        "M3BNG_M3_MAX_CONCURRENCY": str(cap),  # the installation's cap, shared by the workers
        "M3BNG_WORKER_CONCURRENCY": str(max(8, math.ceil(share * 1.5))),
        "M3BNG_WORKER_POLL_INTERVAL": "0.05",
        "M3BNG_M3_TIMEOUT": "10",
    }
    cluster = Cluster(
        ClusterConfig(
            database_url,
            workers=workers,
            m3_latency_ms=args.latency_ms,
            settings=settings,
            code=args.compare if code == "compare" else None,
        ),
        folder,
    )
    async with cluster:
        ours = [cluster.api, *cluster.workers]
        await asyncio.sleep(1.0)
        run.idle_rss = {
            "api": memory_mb(cluster.api.pid, "VmRSS"),
            "worker": memory_mb(cluster.workers[0].pid, "VmRSS"),
        }
        # 1. warm-up
        await send(cluster.api_port, signed_requests(cap, cluster.api_port), connections=8, rate=None)
        await cluster.wait_settled(cap, SETTLE_TIMEOUT)
        before = await cluster.m3_stats()
        per_order = (before["mi_calls"] - before.get("MRS001MI/LstFields", 0)) / cap
        limit = cap / (per_order * args.latency_ms / 1000)
        # 2. saturated: a backlog, as fast as the API takes it
        count = max(50, int(min(limit, SATURATED_RATE_CAP) * args.seconds))
        requests = signed_requests(count, cluster.api_port)
        mark = await last_event_id(cluster)
        stats_before = await cluster.m3_stats()
        cpu_before, sim_before = cpu_of(ours), cpu_seconds(cluster.m3.pid)
        first = round_no == 1 and cap == args.caps[-1] and workers == 1 and code == "this"
        with py_spy(args.py_spy, cluster.workers[0], first):
            statuses = await send(cluster.api_port, requests, connections=32, rate=None)
            await cluster.wait_settled(cap + count, SETTLE_TIMEOUT)
        cpu_after, sim_after = cpu_of(ours), cpu_seconds(cluster.m3.pid)
        stats = await cluster.m3_stats()
        run.saturated_latencies, run.seconds, run.orders = await timings(cluster, mark)
        run.calls_per_order = (stats["mi_calls"] - stats_before["mi_calls"]) / count
        run.cpu_ms_per_order = (cpu_after - cpu_before) * 1000 / count
        run.sim_cpu_ms_per_order = (sim_after - sim_before) * 1000 / count
        # 3. paced at half the rate just measured: latency without a queue
        half = max(run.rate / 2, 1.0)
        paced = max(20, int(half * args.seconds / 2))
        mark = await last_event_id(cluster)
        statuses += await send(
            cluster.api_port, signed_requests(paced, cluster.api_port), connections=16, rate=half
        )
        await cluster.wait_settled(cap + count + paced, SETTLE_TIMEOUT)
        run.paced_latencies, _, _ = await timings(cluster, mark)
        stats = await cluster.m3_stats()
        run.max_in_flight = int(stats["max_in_flight"])
        run.peak_rss = {
            "api": memory_mb(cluster.api.pid, "VmHWM"),
            "worker": max(memory_mb(w.pid, "VmHWM") for w in cluster.workers),
        }
        # the checks
        total = cap + count + paced
        counts = await cluster.status_counts()
        if counts != {"done": total}:
            run.problems.append(f"events {counts}, expected {total} done")
        if any(s not in (200, 202) for s in statuses):
            run.problems.append(f"non-2xx answers: {sorted(set(statuses))}")
        by_reference = orders_by_reference(await cluster.m3_state())
        doubles = {ref: ornos for ref, ornos in by_reference.items() if len(ornos) != 1}
        if doubles or len(by_reference) != total:
            run.problems.append(f"{len(by_reference)} orders in M3 for {total} sent; doubles {doubles}")
        if run.max_in_flight > cap:
            run.problems.append(f"M3 saw {run.max_in_flight} calls at once; the cap is {cap}")
    return run


@contextlib.contextmanager
def py_spy(output: str | None, process: Process, active: bool) -> Iterator[None]:
    """Sample one worker with py-spy during the saturated phase of the first largest-cap run."""
    if not output or not active:
        yield
        return
    exe = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    if exe is None:
        raise SystemExit("--py-spy needs py-spy (.venv/bin/pip install py-spy)")
    fmt = {".txt": "raw", ".json": "speedscope"}.get(Path(output).suffix, "flamegraph")
    command = [exe, "record", "--pid", str(process.pid), "--rate", "200", "--nonblocking", "--format", fmt]
    spy = subprocess.Popen([*command, "--output", output], stdout=subprocess.DEVNULL)
    time.sleep(1)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)


# --- the report --------------------------------------------------------------------------------


def spread(values: Sequence[float], fmt: str) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    mid = format(statistics.median(values), fmt)
    if min(values) == max(values):
        return mid
    return f"{mid} ({format(min(values), fmt)}–{format(max(values), fmt)})"


def report(runs: list[Run]) -> str:
    lines = [
        "| code | M3 cap C | workers | calls/order | limit orders/s | orders/s | ratio to limit "
        "| max calls at M3 | p50 / p99 ms at ½ that rate | p50 / p99 ms saturated "
        "| CPU ms/order (m3bng) | CPU ms/order (M3 sim) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    configs = sorted({(r.cap, r.workers, r.code) for r in runs})
    for cap, workers, code in configs:
        rs = [r for r in runs if (r.cap, r.workers, r.code) == (cap, workers, code)]
        lines.append(
            f"| {code} | {cap} | {workers} | {spread([r.calls_per_order for r in rs], '.1f')} "
            f"| {spread([r.limit for r in rs], '.0f')} | {spread([r.rate for r in rs], '.1f')} "
            f"| {spread([r.ratio for r in rs], '.2f')} | {max(r.max_in_flight for r in rs)} "
            f"| {spread([percentile(r.paced_latencies, 0.5) for r in rs], '.0f')} / "
            f"{spread([percentile(r.paced_latencies, 0.99) for r in rs], '.0f')} "
            f"| {spread([percentile(r.saturated_latencies, 0.5) for r in rs], '.0f')} / "
            f"{spread([percentile(r.saturated_latencies, 0.99) for r in rs], '.0f')} "
            f"| {spread([r.cpu_ms_per_order for r in rs], '.1f')} "
            f"| {spread([r.sim_cpu_ms_per_order for r in rs], '.1f')} |"
        )
    lines += [
        "",
        "| code | M3 cap C | workers | idle RSS MB api / worker | peak RSS MB api / worker |",
        "|---|---:|---:|---:|---:|",
    ]
    for cap, workers, code in configs:
        rs = [r for r in runs if (r.cap, r.workers, r.code) == (cap, workers, code)]
        idle = [spread([r.idle_rss[part] for r in rs], ".0f") for part in ("api", "worker")]
        peak = [spread([r.peak_rss[part] for r in rs], ".0f") for part in ("api", "worker")]
        lines.append(f"| {code} | {cap} | {workers} | {' / '.join(idle)} | {' / '.join(peak)} |")
    return "\n".join(lines)


# --- the run -----------------------------------------------------------------------------------


async def pg_admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def bench(args: argparse.Namespace) -> int:
    configs = [(cap, args.workers) for cap in args.caps]
    configs += [(args.caps[-1], p) for p in args.scale_out if (args.caps[-1], p) not in configs]
    runs: list[Run] = []
    base = args.pg_dsn.rsplit("/", 1)[0]
    with tempfile.TemporaryDirectory(prefix="m3bng-e2e-") as tmp:
        codes = ["this", "compare"] if args.compare else ["this"]
        for round_no in range(1, args.rounds + 1):
            for cap, workers, code in [(c, w, k) for c, w in configs for k in codes]:
                name = f"m3bng_e2e_{os.getpid()}_{round_no}_{cap}_{workers}_{code}"
                await pg_admin(args.pg_dsn, f'CREATE DATABASE "{name}"')
                url = f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
                try:
                    run = await one_run(args, code, cap, workers, round_no, Path(tmp) / name, url)
                finally:
                    await pg_admin(args.pg_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                runs.append(run)
                print(
                    f"round {round_no} {code:<7} C={cap:<3} workers={workers} {run.rate:6.1f} orders/s "
                    f"(limit {run.limit:.0f}, ratio {run.ratio:.2f}) p99 at half that "
                    f"{percentile(run.paced_latencies, 0.99):.0f} ms, {run.cpu_ms_per_order:.1f} CPU ms/order"
                    + (f"  PROBLEMS: {run.problems}" if run.problems else ""),
                    file=sys.stderr,
                    flush=True,
                )
    print(report(runs))
    problems = [p for r in runs for p in r.problems]
    if problems:
        print(f"\nFAILED: {problems}", file=sys.stderr)
        return 1
    total = sum(r.orders for r in runs)
    print(f"\nEvery order confirmed exactly once ({total} timed), the cap never exceeded.")
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ints = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--caps", type=ints, default=[8, 32], help="M3 concurrency caps (default 8,32)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for every cap (default 1)")
    parser.add_argument(
        "--scale-out",
        type=ints,
        default=[1, 2, 4],
        help="worker processes for the largest cap (default 1,2,4)",
    )
    parser.add_argument("--latency-ms", type=float, default=20.0, help="M3 latency per call (default 20)")
    parser.add_argument("--seconds", type=float, default=6.0, help="rough length of each timed phase")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every configuration (default 3)")
    parser.add_argument("--pg-dsn", default=DEFAULT_PG_DSN, help="admin DSN; a fresh database per run")
    parser.add_argument("--py-spy", metavar="FILE", help="profile a worker of the first largest-cap run")
    parser.add_argument(
        "--compare", type=Path, metavar="DIR", help="also run the API and workers of this checkout"
    )
    args = parser.parse_args(argv)
    if min(args.caps + args.scale_out + [args.workers, args.rounds]) < 1 or args.latency_ms <= 0:
        parser.error("caps, workers, rounds and latency must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    return uvloop.run(bench(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
