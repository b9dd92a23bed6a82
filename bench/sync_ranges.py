"""Key ranges on a clock of rounds (issue 17): how close ``m3bng sync``'s key ranges
(src/m3bng/sync_ranges.py) come to the cap-bound limit, whatever the machine is doing.

Every list call takes exactly one round; the list answers from an in-memory index like M3's. The
cap-bound limit is ``readers`` pages a round, so a load of N records cannot take fewer than
N ÷ (page × readers) rounds. What the ranges lose against it: the first page, read alone; the
rounds the ranges take to spread over the list; each range's last page when it is cut short at
the next range's first key; split keys that find nothing. The wall-clock load adds M3's own time
per call and m3bng's start (bench/sync.py, docs/benchmarks.md).

    .venv/bin/python bench/sync_ranges.py

prints one line per key shape and reader count: rounds, the bound, their ratio, calls (one scan
takes one a page) and the ranges made.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import random
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT / "src") not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT / "src"))

from m3bng.sync_ranges import RangeReader  # noqa: E402

Answer = tuple[list[tuple[str, dict[str, Any]]], bool]


async def rounds(keys: list[str], page_size: int, readers: int) -> tuple[int, int, RangeReader]:
    """(rounds, calls, the reader) for a load of ``keys``; checks every key was read once."""
    ordered = sorted(set(keys))
    now, calls, order = 0, 0, itertools.count()
    due: list[tuple[int, int, asyncio.Future[Answer], Answer]] = []

    async def read_from(start: str, inclusive: bool) -> Answer:
        nonlocal calls
        calls += 1
        at = bisect.bisect_left(ordered, start)
        page = ordered[at : at + page_size]
        kept: list[tuple[str, dict[str, Any]]] = [
            (k, {}) for k in page if (k >= start if inclusive else k > start)
        ]
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        heapq.heappush(due, (now + 1, next(order), answer, (kept, len(page) >= page_size)))
        return await answer

    reader = RangeReader(read_from, first_key="", readers=readers, page_size=page_size)
    read: list[str] = []

    async def load() -> None:
        async for page in reader.pages():
            read.extend(k for k, _ in page.records)

    task = asyncio.ensure_future(load())
    while not task.done():
        for _ in range(50):  # the reader takes what arrived and starts its next calls
            await asyncio.sleep(0)
        if due and not task.done():
            now = due[0][0]
            while due and due[0][0] == now:
                _, _, answer, result = heapq.heappop(due)
                answer.set_result(result)
    await task
    if sorted(read) != ordered:
        raise AssertionError(f"{len(read)} keys read, {len(ordered)} in the list")
    return now, calls, reader


def shapes() -> list[tuple[str, list[str]]]:
    rng = random.Random(5)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    simulator = ["BIKE-100", "BIKE-200", "HELMET-1", "TUBE-26"]  # the M3 simulator's own items
    return [
        ("B-0000000 … (bench/sync.py)", [f"B-{n:07d}" for n in range(100_000)] + simulator),
        ("10000 … 109999 (numbers)", [str(10_000 + n) for n in range(100_000)]),
        ("hexadecimal", [f"{n:x}" for n in range(100_000)]),
        ("random, 8 of A-Z 0-9", ["".join(rng.choice(alphabet) for _ in range(8)) for _ in range(100_000)]),
        (
            "5 prefixes × 20,000",
            [f"{p}-{n:05d}" for p in ("ACC", "BIKE", "HELM", "TUBE", "X9") for n in range(20_000)],
        ),
        (
            "90,000 A… + 10,000 Z…",
            [f"A{n:06d}" for n in range(90_000)] + [f"Z{n:04d}" for n in range(10_000)],
        ),
    ]


def main() -> int:
    page = 500
    print("| keys | readers | rounds | bound | ratio | calls (one scan) | ranges | splits dropped |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, keys in shapes():
        for readers in (2, 4, 8):
            taken, calls, reader = asyncio.run(rounds(keys, page, readers))
            bound = len(set(keys)) / page / readers
            scan = -(-len(set(keys)) // (page - 1))
            print(
                f"| {label} | {readers} | {taken} | {bound:.1f} | {bound / taken:.3f} | {calls} ({scan}) "
                f"| {len(reader.segments)} | {reader.splits_dropped} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
