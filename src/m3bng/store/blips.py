"""Short retries of one store transaction, for the writes that cannot wait for the next claim.

A worker records an event's outcome, and a flow the row of a step that failed, right when they
happen; a database restart or a dropped connection at that moment should cost a second or two,
not the record. Both go through ``ride_out_blips`` (or ``retry_blips``, for PostgreSQL's
one-statement writes): a fresh try each time, 0.2 s, 0.4 s, 0.8 s … between tries, each failure
logged. It gives up by raising the last error: what is lost then is the caller's to decide (the
worker leaves the lease to expire, a flow drops a step row but never a call's result).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

T = TypeVar("T")
log = structlog.get_logger(__name__)

FIRST_WAIT_SECONDS = 0.2


async def ride_out_blips(
    sessions: async_sessionmaker[AsyncSession],
    write: Callable[[AsyncSession], Awaitable[T]],
    *,
    attempts: int,
    log_as: str,
    **about: Any,
) -> T:
    """``write`` in a transaction of its own, tried up to ``attempts`` times; each failure is
    logged as ``log_as`` with ``about``. Only ``Exception``: a cancellation goes through at once."""

    async def once() -> T:
        async with sessions.begin() as session:
            return await write(session)

    return await retry_blips(once, attempts=attempts, log_as=log_as, **about)


async def retry_blips(once: Callable[[], Awaitable[T]], *, attempts: int, log_as: str, **about: Any) -> T:
    """``once`` tried up to ``attempts`` times, as ``ride_out_blips``, for a write that opens its
    own connection (a flow's one-statement durable write on PostgreSQL, store/fenced.py).

    A plain loop, not tenacity: it runs for every outcome of every event, and building tenacity's
    retry state for a write that almost always succeeds the first time cost more than the loop."""
    for attempt in range(1, attempts + 1):
        try:
            return await once()
        except Exception as exc:
            log.warning(log_as, **about, attempt=attempt, error=repr(exc)[:500])
            if attempt >= attempts:
                raise
        await asyncio.sleep(FIRST_WAIT_SECONDS * 2 ** (attempt - 1))
    raise AssertionError("unreachable: the last try returns or raises")
