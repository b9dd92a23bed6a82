"""Short retries of one store transaction, for the writes that cannot wait for the next claim.

A worker records an event's outcome, and a flow the row of a step that failed, right when they
happen; a database restart or a dropped connection at that moment should cost a second or two,
not the record. Both go through ``ride_out_blips`` (tenacity, like the connectors' in-call
retries): a fresh transaction per try, 0.2 s, 0.4 s, 0.8 s … between tries, each failure
logged. It gives up by raising the last error: what is lost then is the caller's to decide (the
worker leaves the lease to expire, a flow drops a step row but never a call's result).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

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

    def failed(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(log_as, **about, attempt=state.attempt_number, error=repr(exc)[:500])

    async def once() -> T:
        async with sessions.begin() as session:
            return await write(session)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=FIRST_WAIT_SECONDS, exp_base=2),
        retry=retry_if_exception_type(Exception),
        after=failed,
        reraise=True,
    )
    return await retrying(once)
