"""Periodic jobs that exactly one process of many runs per interval (poller, alerts, retention).

Every process that runs workers starts the same jobs; a row per job in ``scheduler_leases``
decides which of them does the work. The holder renews its lease each time it runs, so the job
stays with one process (which matters for the alerter: it reports that process's circuit
breakers) until that process stops; its lease then expires and another process takes over. No
cron and no second scheduler: a job cannot stall for good because its runner died (the
complaint in procrastinate #1408).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.store import control as control_store
from m3bng.store.sql import utcnow

log = structlog.get_logger(__name__)

# How often an idle process looks whether the job's turn has come (at most).
MAX_WAKE_SECONDS = 5.0


async def take_turn(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    owner: str,
    interval: float,
    *,
    now: datetime | None = None,
) -> bool:
    """Take the job's lease when it is free (or ours, or expired) and the interval has passed.

    One transaction, one conditional UPDATE (``store.control.take_lease``): two processes asking
    at once cannot both win.
    """
    now = now or utcnow()
    async with sessions.begin() as session:
        return await control_store.take_lease(
            session,
            name,
            owner,
            now=now,
            ran_before=now - timedelta(seconds=interval),
            # Long enough to survive one slow run; short enough that a dead holder's job moves
            # to another process within a few intervals.
            expires_at=now + timedelta(seconds=interval * 2 + 60),
        )


class ScheduledJob:
    """``work`` every ``interval`` seconds, in whichever process holds the lease ``name``.

    ``expected`` are the errors a run may meet in normal operation (a target that is down): they
    are logged as warnings; anything else as an error. Either way the loop goes on, and the next
    run comes at the next interval.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        sessions: async_sessionmaker[AsyncSession],
        work: Callable[[], Awaitable[object]],
        *,
        owner: str | None = None,
        expected: tuple[type[Exception], ...] = (),
    ) -> None:
        self.name, self.interval, self.sessions, self.work = name, interval, sessions, work
        self.owner = owner or f"{name}-{uuid.uuid4().hex[:12]}"
        self.expected = expected

    async def take_turn(self) -> bool:
        return await take_turn(self.sessions, self.name, self.owner, self.interval)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if await self.take_turn():
                    await self.work()
            except self.expected as exc:
                log.warning("scheduler.job_failed", job=self.name, error=str(exc)[:300])
            except Exception as exc:
                log.error("scheduler.job_crashed", job=self.name, error=repr(exc)[:500])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(self.interval, MAX_WAKE_SECONDS))
