"""``GET /api/v1/stats``: bucketed throughput and errors, status counts, backlog, dead letters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.api.ops.stats import compute_stats
from m3bng.store.models import DeadLetter, Event
from tests.integration.ops.conftest import Ops
from tests.support.ops import bearer

NOW = datetime(2026, 11, 24, 10, 7, 30, tzinfo=UTC)


async def test_stats_over_the_api(ops: Ops) -> None:
    done = await ops.settle(await ops.send("order.created"))
    assert done.status == "done", done.last_error
    await ops.dead_order()

    response = await ops.read.get("/api/v1/stats", params={"hours": 24})
    assert response.status_code == 200, response.text
    stats = response.json()
    assert stats["bucket_seconds"] == 3600
    assert len(stats["buckets"]) == 24
    starts = [datetime.fromisoformat(b["start"]) for b in stats["buckets"]]
    assert all(b - a == timedelta(hours=1) for a, b in pairwise(starts))
    assert starts[-1] <= datetime.now(UTC) < starts[-1] + timedelta(hours=1)
    assert sum(b["received"] for b in stats["buckets"]) == 2
    assert sum(b["done"] for b in stats["buckets"]) == 1
    assert sum(b["dead"] for b in stats["buckets"]) == 1
    assert stats["status_counts"]["done"] == 1
    assert stats["status_counts"]["dead"] == 1
    assert stats["status_counts"]["pending"] == 0
    assert stats["dead_letters"] == 1
    assert stats["backlog"] == 0

    short = (await ops.read.get("/api/v1/stats", params={"hours": 2})).json()
    assert short["bucket_seconds"] == 300
    assert len(short["buckets"]) == 24
    week = (await ops.read.get("/api/v1/stats", params={"hours": 168})).json()
    assert week["bucket_seconds"] == 3 * 3600
    assert len(week["buckets"]) == 56


async def test_stats_refuses_bad_windows_and_anonymous_callers(ops: Ops) -> None:
    for hours in ("0", "169", "soon"):
        response = await ops.read.get("/api/v1/stats", params={"hours": hours})
        assert response.status_code == 422, hours
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert "hours" in error["message"]
    assert (await ops.client.get("/api/v1/stats")).status_code == 401
    response = await ops.client.get("/api/v1/stats", headers=bearer("m3bng_ops_wrong"))
    assert response.status_code == 401


def _event(n: int, status: str, received: datetime, finished: datetime | None) -> Event:
    return Event(
        source="bng",
        external_id=f"msg_{n}",
        event_type="order.created",
        business_key=f"SO-{n}",
        payload={"n": n},
        correlation_id=f"corr-{n}",
        status=status,
        attempts=1,
        next_attempt_at=received,
        received_at=received,
        updated_at=finished or received,
        finished_at=finished,
        checkpoint={},
    )


async def test_buckets_are_aligned_and_counted_in_the_database(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """Runs on both backends: the bucket expression is the one dialect-specific piece of SQL."""
    minute = timedelta(minutes=1)
    current = datetime(2026, 11, 24, 10, 5, tzinfo=UTC)  # the bucket holding NOW (5-minute buckets)
    async with sessions() as session, session.begin():
        events = [
            _event(1, "done", current + minute, current + 2 * minute),  # last bucket, both ways
            _event(
                2, "done", current - 5 * minute, current
            ),  # received one bucket earlier, done on a boundary
            _event(3, "dead", current - 61 * minute, current - 60 * minute),
            _event(4, "skipped", current - 30 * minute, current - 29 * minute),
            _event(5, "pending", current - 3 * minute, None),
            _event(6, "processing", current - 3 * minute, None),
            _event(7, "done", NOW - timedelta(hours=3), NOW - timedelta(hours=3)),  # before the window
        ]
        session.add_all(events)
        await session.flush()
        session.add(
            DeadLetter(
                event_id=events[2].id, reason="permanent_error", attempts=1, created_at=current - 60 * minute
            )
        )
        session.add(
            DeadLetter(
                event_id=events[6].id,
                reason="permanent_error",
                attempts=1,
                created_at=NOW - timedelta(hours=3),
                resolved_at=NOW - timedelta(hours=3),
                resolution="replayed",
            )
        )

    async with sessions() as session:
        stats = await compute_stats(session, hours=2, now=NOW)

    assert stats.bucket_seconds == 300
    assert len(stats.buckets) == 24
    assert stats.buckets[-1].start == current
    assert stats.buckets[0].start == current - 23 * 5 * minute
    by_start = {b.start: b for b in stats.buckets}
    assert (by_start[current].received, by_start[current].done) == (1, 2)
    assert by_start[current - 5 * minute].received == 3  # events 2, 5 and 6 (received at -3 min)
    assert by_start[current - 60 * minute].dead == 1
    assert by_start[current - 30 * minute].skipped == 1
    assert sum(b.received for b in stats.buckets) == 6  # event 7 is outside the window
    assert sum(b.done for b in stats.buckets) == 2
    assert sum(b.dead for b in stats.buckets) == 1
    assert stats.status_counts == {
        "pending": 1,
        "processing": 1,
        "done": 3,
        "dead": 1,
        "discarded": 0,
        "skipped": 1,
        "held": 0,  # every status is counted, those with no event too
    }
    assert stats.backlog == 2
    assert stats.dead_letters == 1  # the resolved one does not count
