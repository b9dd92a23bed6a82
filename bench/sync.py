"""Initial load benchmark and proof (issue 17): N customers and N items from the M3 simulator
into the BNG simulator with ``m3bng sync``, every part its own process on a fresh PostgreSQL
database (tests/support/cluster.py).

1. **customers, killed mid-run**: ``m3bng sync customers`` is SIGKILLed once a third of the
   records are enqueued, then run again to the end; every customer must be enqueued once.
2. **items, timed**: ``m3bng sync items`` from start to end. Its read rate is compared with the
   limit of a scan that pages by key, one list call at a time (the next page starts at the last
   key of the one before, so pages cannot be read in parallel): ``page size / M3 latency``
   records per second. The M3 cap plays no part: the load takes one of its slots.
3. **applied**: the time until the workers have applied every record to BNG (``PUT`` per
   record, through the same flows as the BODs); records per second, end to end.
4. **checks**: BNG holds every customer and item, field for field as the mapping writes them;
   a third ``m3bng sync customers`` enqueues nothing.

    .venv/bin/python bench/sync.py [--records 10000] [--latency-ms 20] [--page-size 500]
                                   [--workers 1] [--pg-dsn DSN]

``--read-only`` times the read alone (no proof, no workers): ``m3bng sync items`` on a store
emptied before each run, then once more over the unchanged data (which must enqueue nothing),
``--rounds`` times. ``--compare DIR`` runs each of those with the m3bng of another checkout too
(its ``src/`` first on ``PYTHONPATH``, its ``mappings/``), in alternation, against the same
simulators and database: the code before and after a change, side by side in one run.

    .venv/bin/python bench/sync.py --read-only --rounds 2 --compare /tmp/before
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: bench/ is sys.path[0], not the repo
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import uvloop  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402
from tests.support.cluster import Cluster, ClusterConfig  # noqa: E402

from bench.e2e import DEFAULT_PG_DSN, pg_admin  # noqa: E402
from m3bng.store.models import Event  # noqa: E402

SETTLE_TIMEOUT = 1800.0


def customer(n: int) -> dict[str, str]:
    return {
        "CUNO": f"B{n:07d}",
        "CUNM": f"Bench customer {n}",
        "CUA1": f"Street {n}",
        "TOWN": "Stockholm",
        "PONO": "11122",
        "CSCD": "SE",
        "MAIL": f"c{n}@example.test",
        "CUCD": "SEK",
        "STAT": "20",
    }


def item(n: int) -> dict[str, str]:
    return {"ITNO": f"B-{n:07d}", "ITDS": f"Bench item {n}", "UNMS": "EA", "ITGR": "WIDGETS", "STAT": "20"}


async def sync_events(cluster: Cluster, event_type: str) -> int:
    async with cluster.engine.connect() as conn:
        query = select(func.count()).select_from(Event).where(Event.event_type == event_type)
        return int((await conn.execute(query)).scalar_one())


async def sync(
    cluster: Cluster, *args: str, code: Path | None = None, env_extra: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    env = {**os.environ, **cluster.app_settings(), **(env_extra or {})}
    # As installed (pip compiles the package's bytecode): without it every command compiles
    # m3bng's modules again at its start, which no installation does.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if code is not None:  # another checkout's m3bng (--compare): its code and its mappings
        env["PYTHONPATH"] = str(code / "src")
        env["M3BNG_MAPPINGS_DIR"] = str(code / "mappings")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "m3bng",
        "sync",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finished(process: asyncio.subprocess.Process, what: str) -> str:
    return (await finished_both(process, what))[0]


async def finished_both(process: asyncio.subprocess.Process, what: str) -> tuple[str, str]:
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{what} failed ({process.returncode}): {err.decode()[-2000:]}")
    return out.decode().strip(), err.decode()


# The CLI's progress line: "items: 10,005 read, 1,234/s; …" (the rate since the run started,
# process start excluded)
PROGRESS = re.compile(r"^items: ([\d,]+) read.*?, ([\d,]+)/s", re.MULTILINE)

SUMMARY = re.compile(r"(\d+) read, enqueued (\d+) new")


async def timed_sync(
    cluster: Cluster, page: str, code: Path | None, env: dict[str, str]
) -> tuple[float, int, str]:
    """One ``m3bng sync items``: seconds from the command's start to its end, the run's own
    rate (its last progress line) and its summary line."""
    started = time.monotonic()
    process = await sync(cluster, "items", "--page-size", page, code=code, env_extra=env)
    out, err = await finished_both(process, "items")
    seconds = time.monotonic() - started
    rates = PROGRESS.findall(err)
    return seconds, int(rates[-1][1].replace(",", "")) if rates else 0, out.splitlines()[-1]


async def read_only(args: argparse.Namespace) -> int:
    """--read-only: the read timed, this checkout and --compare's in alternation (module doc)."""
    n, problems = args.records, []
    name = f"m3bng_sync_{os.getpid()}"
    base = args.pg_dsn.rsplit("/", 1)[0]
    await pg_admin(args.pg_dsn, f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
    codes: list[tuple[str, Path | None]] = [("this", None)]
    if args.compare:
        codes.append((f"compare ({args.compare})", args.compare))
    runs = [
        (f"{label}, {r} reader{'s' if r > 1 else ''}", code, r) for r in args.readers for label, code in codes
    ]
    rows: list[tuple[str, int, int, float, int, float, int]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="m3bng-sync-") as tmp:
            config = ClusterConfig(url, workers=0, m3_latency_ms=args.latency_ms)
            async with Cluster(config, Path(tmp)) as cluster, httpx.AsyncClient(timeout=120) as http:
                seed = {"items": [item(i) for i in range(n)]}
                (await http.post(f"{cluster.m3_url}/_sim/seed", json=seed)).raise_for_status()
                page = str(args.page_size)
                for round_ in range(1, args.rounds + 1):
                    for label, code, readers in runs:
                        env = {
                            "M3BNG_SYNC_READERS": str(readers),
                            "M3BNG_M3_MAX_CONCURRENCY": str(args.m3_cap),
                            "M3BNG_SHARED_LIMITS": "false",  # the load's process has the whole cap
                        }
                        async with cluster.engine.begin() as conn:  # a first load, every time
                            await conn.execute(text("TRUNCATE events, sync_records, sync_runs CASCADE"))
                        first, first_rate, summary = await timed_sync(cluster, page, code, env)
                        done = SUMMARY.search(summary)
                        if done is None or int(done[2]) != int(done[1]) or int(done[1]) < n:
                            problems.append(f"{label}, round {round_}: not every item enqueued: {summary}")
                        enqueued = await sync_events(cluster, "SyncItemMaster")
                        again, again_rate, summary = await timed_sync(cluster, page, code, env)
                        if "enqueued 0 new and 0 changed" not in summary:
                            problems.append(f"{label}, round {round_}, second run wrote: {summary}")
                        if await sync_events(cluster, "SyncItemMaster") != enqueued:
                            problems.append(f"{label}, round {round_}: the second run enqueued events")
                        rows.append((label, readers, round_, first, first_rate, again, again_rate))
                        print(
                            f"{label} round {round_}: first {first:.2f} s ({first_rate:,}/s in the run), "
                            f"unchanged {again:.2f} s ({again_rate:,}/s)",
                            flush=True,
                        )
    finally:
        await pg_admin(args.pg_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    scan = args.page_size / (args.latency_ms / 1000)
    print()
    print(
        f"{n:,} items, M3 latency {args.latency_ms:g} ms, page {args.page_size}, M3 cap {args.m3_cap}; "
        f"the cap-bound limit: readers × page ÷ latency = readers × {scan:,.0f} records/s"
    )
    print()
    print(
        "| code | round | bound | first load: start to end | ratio | the run's own rate | ratio "
        "| unchanged data: start to end | the run's own rate |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, readers, round_, first, first_rate, again, again_rate in rows:
        limit = min(readers, args.m3_cap) * scan
        print(
            f"| {label} | {round_} | {limit:,.0f}/s | {n / first:,.0f} records/s ({first:.2f} s) "
            f"| {n / first / limit:.3f} "
            f"| {first_rate:,} records/s | {first_rate / limit:.3f} "
            f"| {n / again:,.0f} records/s ({again:.2f} s) | {again_rate:,} records/s |"
        )
    if problems:
        print(f"\nFAILED: {problems}", file=sys.stderr)
        return 1
    return 0


async def bench(args: argparse.Namespace) -> int:
    n, problems = args.records, []
    name = f"m3bng_sync_{os.getpid()}"
    base = args.pg_dsn.rsplit("/", 1)[0]
    await pg_admin(args.pg_dsn, f'CREATE DATABASE "{name}"')
    url = f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        with tempfile.TemporaryDirectory(prefix="m3bng-sync-") as tmp:
            config = ClusterConfig(
                url,
                workers=args.workers,
                m3_latency_ms=args.latency_ms,
                settings={"M3BNG_BNG_RATE_LIMIT": str(args.bng_rate)},
            )
            async with Cluster(config, Path(tmp)) as cluster, httpx.AsyncClient(timeout=120) as http:
                seed = {"customers": [customer(i) for i in range(n)], "items": [item(i) for i in range(n)]}
                (await http.post(f"{cluster.m3_url}/_sim/seed", json=seed)).raise_for_status()
                page = str(args.page_size)

                # 1. customers, SIGKILLed a third of the way, then again to the end.
                killed = await sync(cluster, "customers", "--page-size", page)
                while await sync_events(cluster, "SyncCustomerPartyMaster") < n // 3:
                    if killed.returncode is not None:
                        raise RuntimeError("m3bng sync customers ended before it could be killed")
                    await asyncio.sleep(0.05)
                killed.send_signal(signal.SIGKILL)
                await killed.wait()
                cut = await sync_events(cluster, "SyncCustomerPartyMaster")
                rerun = await finished(await sync(cluster, "customers", "--page-size", page), "rerun")

                # 2. items, timed from the command's start to its end.
                started = time.monotonic()
                items_out = await finished(await sync(cluster, "items", "--page-size", page), "items")
                read_seconds = time.monotonic() - started

                # 3. applied: every event done.
                counts = await cluster.wait_settled(2 * n, SETTLE_TIMEOUT)
                async with cluster.engine.connect() as conn:
                    first, last = (
                        await conn.execute(
                            select(func.min(Event.received_at), func.max(Event.finished_at)).where(
                                Event.source == "sync"
                            )
                        )
                    ).one()
                assert first is not None and last is not None
                applied_seconds = (last - first).total_seconds()

                # 4. checks.
                held = await cluster.bng_state()
                customers_ok = all(
                    held["customers"].get(f"B{i:07d}", {}).get("CompanyName") == f"Bench customer {i}"
                    and held["customers"][f"B{i:07d}"].get("Email") == f"c{i}@example.test"
                    for i in range(n)
                )
                items_ok = all(
                    held["products"].get(f"B-{i:07d}", {}).get("Name") == f"Bench item {i}" for i in range(n)
                )
                async with cluster.engine.connect() as conn:
                    query = select(Event.business_key).where(Event.event_type == "SyncCustomerPartyMaster")
                    keys = [row[0] for row in await conn.execute(query)]
                third = await finished(await sync(cluster, "customers", "--page-size", page), "third run")
                if not customers_ok or not items_ok:
                    problems.append("BNG does not hold every record field for field")
                if len(keys) != len(set(keys)) or len(keys) < n:  # the seed has a few customers too
                    problems.append(f"{len(keys)} customer events for {len(set(keys))} customers")
                if "enqueued 0 new and 0 changed" not in third:
                    problems.append(f"third run wrote something: {third}")
                if counts.get("done", 0) < 2 * n:
                    problems.append(f"not every event done: {counts}")
    finally:
        await pg_admin(args.pg_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    limit = args.page_size / (args.latency_ms / 1000)
    read_rate = n / read_seconds
    bound = f"BNG limit {args.bng_rate:g}/s" if args.bng_rate else "no BNG limit"
    print(f"customers: killed at {cut} of {n} enqueued; the rerun: {rerun.splitlines()[-1]}")
    print(f"items: {items_out.splitlines()[-1]}")
    print(f"third run: {third.splitlines()[-1]}")
    print()
    print("| records | M3 latency | page | read (m3bng sync items) | limit page/latency | ratio | applied |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {n:,} | {args.latency_ms:g} ms | {args.page_size} "
        f"| {read_rate:,.0f} records/s ({read_seconds:.1f} s, process start included) "
        f"| {limit:,.0f} records/s | {read_rate / limit:.2f} "
        f"| {2 * n / applied_seconds:,.0f} records/s ({2 * n:,} in {applied_seconds:.1f} s; "
        f"{args.workers} worker process, {bound}) |"
    )
    if problems:
        print(f"\nFAILED: {problems}", file=sys.stderr)
        return 1
    print(
        f"\nAll {n:,} customers and {n:,} items in BNG, field for field; none twice; a third run wrote none."
    )
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument(
        "--records", type=int, default=10_000, help="customers and items each (default 10000)"
    )
    parser.add_argument("--latency-ms", type=float, default=20.0, help="M3 latency per call (default 20)")
    parser.add_argument("--page-size", type=int, default=500, help="records per M3 list call (default 500)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--bng-rate", type=float, default=0.0, help="M3BNG_BNG_RATE_LIMIT for the workers (default 0: none)"
    )
    parser.add_argument("--pg-dsn", default=DEFAULT_PG_DSN, help="admin DSN; a fresh database for the run")
    parser.add_argument(
        "--read-only", action="store_true", help="time the read alone, no proof and no workers (module doc)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="--read-only: runs of each code (default 1)")
    parser.add_argument(
        "--readers",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[4],
        help="--read-only: M3BNG_SYNC_READERS to time, comma-separated (default 4)",
    )
    parser.add_argument(
        "--m3-cap", type=int, default=8, help="M3BNG_M3_MAX_CONCURRENCY of the load (default 8)"
    )
    parser.add_argument(
        "--compare", type=Path, metavar="DIR", help="--read-only: also run the m3bng of this checkout"
    )
    args = parser.parse_args(argv)
    if min(args.records, args.page_size, args.workers, args.rounds) < 1 or args.latency_ms <= 0:
        parser.error("records, page size, workers, rounds and latency must be positive")
    if args.compare and not args.read_only:
        parser.error("--compare times the read alone: give --read-only too")
    if args.compare and not (args.compare / "src" / "m3bng").is_dir():
        parser.error(f"--compare {args.compare}: no src/m3bng there")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return uvloop.run(read_only(args) if args.read_only else bench(args))


if __name__ == "__main__":
    sys.exit(main())
