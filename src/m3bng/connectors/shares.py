"""Limits that hold for the whole installation, not per process: the M3 concurrency cap and
BNG's concurrency and rate, shared by every worker process on one PostgreSQL.

M3 allows a tenant so many calls at once and BNG so many requests per second per client,
whatever number of m3bng worker processes run. Each process therefore holds a *share* of each
limit, recorded in ``limit_shares`` and renewed every ``PERIOD``; the shares move when
processes start, stop or die (store/limits.take_share says why they never add up to more than
the limit). A process:

* starts with nothing, and grows into its fair share as the others give theirs up;
* shrinks its gate first and records the smaller share afterwards, so it never uses more than
  its recorded share;
* stops using its share when it could not renew it in time (a database outage): its row may
  have expired and been handed on;
* gives its share back when it stops; a process that dies keeps its share until the row
  expires (``ttl``: longer than a call may take, so that the calls it left running at M3 are
  over before another process reuses their slots).

The price is one small transaction per limit per second per process, and a new process that
waits a moment for its share: the costs of never overrunning M3 and BNG.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.observability import metrics
from m3bng.store import limits

log = structlog.get_logger(__name__)

PERIOD = 1.0  # seconds between renewals (and rebalancing)
MARGIN = 1.0  # stop using a share this long before it could have expired


@dataclass
class SharedLimit:
    """One limit this process takes a share of; ``grow``/``shrink`` resize its local gate."""

    name: str  # m3.concurrency, bng.concurrency, bng.rate
    total: int
    ttl: float  # seconds a share outlives its holder's last renewal
    grow: Callable[[int], Awaitable[None]]
    shrink: Callable[[int], Awaitable[None]]
    holding: int = 0  # the size of the local gate now (≤ the recorded share)
    valid_until: float = field(default=0.0)  # monotonic: the recorded share cannot have expired before


class ShareKeeper:
    """Takes, renews and rebalances this process's share of every limit, one task per limit."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], holder: str, limits: list[SharedLimit]
    ) -> None:
        self.sessions = sessions
        self.holder = holder
        self.limits = limits
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, stop: asyncio.Event) -> None:
        """Close the local gates, take a first share of each limit (before any call is made),
        then keep the shares up to date in the background until ``stop``."""
        for limit in self.limits:
            await limit.shrink(0)
            limit.holding = 0
            await self.turn(limit)
        self._tasks = [
            asyncio.create_task(self._keep(limit, stop), name=f"share-{limit.name}") for limit in self.limits
        ]

    async def stop(self) -> None:
        """After the workers drained: give every share back at once."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for limit in self.limits:
            with contextlib.suppress(Exception):
                await limit.shrink(0)
                async with self.sessions.begin() as session:
                    await limits.drop_share(session, limit.name, self.holder)

    async def _keep(self, limit: SharedLimit, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=PERIOD)
            if not stop.is_set():
                await self.turn(limit)

    async def turn(self, limit: SharedLimit) -> None:
        """Renew; grow into what was granted; shrink toward the fair share (recorded next turn)."""
        asked = time.monotonic()
        try:
            async with self.sessions.begin() as session:
                grant = await limits.take_share(
                    session, limit.name, self.holder, limit.total, limit.ttl, holding=limit.holding
                )
        except Exception as exc:  # the database is away: keep the share while it is surely ours
            log.warning("limits.renew_failed", limit=limit.name, error=repr(exc)[:300])
            if limit.holding and time.monotonic() > limit.valid_until - MARGIN:
                log.error("limits.share_suspended", limit=limit.name, reason="could not renew in time")
                await limit.shrink(0)
                limit.holding = 0
                metrics.LIMIT_SHARE.labels(limit.name).set(0)
            return
        limit.valid_until = asked + limit.ttl
        before = limit.holding
        if grant.slots > limit.holding:
            await limit.grow(grant.slots)
            limit.holding = grant.slots
        if grant.fair < limit.holding:
            await limit.shrink(grant.fair)  # waits for calls in flight above the new size
            limit.holding = grant.fair
        if limit.holding != before:
            log.info(
                "limits.share_changed",
                limit=limit.name,
                slots=limit.holding,
                of=limit.total,
                processes=grant.holders,
            )
        metrics.LIMIT_SHARE.labels(limit.name).set(limit.holding)
