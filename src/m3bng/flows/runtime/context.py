"""The context a flow receives: its claimed event, checkpoints, deferred writes and step records.

It gives a flow the two things that make it safe to run more than once:
``async with ctx.step(...) as step:`` records the outbound call made inside the block (request,
response, duration, outcome), and ``ctx.checkpoint(...)`` persists keys obtained from completed
steps (a temporary ORNO, a new CUNO) so that a retry or replay resumes instead of starting over.
The call itself is written inline in the block, so a reader goes from the flow to the client
without a callback in between.

**Writes ride together.** A worker's CPU goes mostly to the store (docs/benchmarks.md), and a
flow used to commit a transaction for every step row, every checkpoint, the mapping version and
each cross-reference. Now the writes that need not stand alone are *deferred* (``defer``,
``note``, a successful step's row) and stored in one transaction with the flow's next durable
write, whichever comes first:

* a durable checkpoint (``checkpoint`` / ``save_checkpoint``): the keys a call returned;
* a call that may change the target (``step(..., flush=True)``, the default): everything
  recorded so far is stored before it leaves, so what the flow knew and did before a write is
  on record even if the worker dies during it (a flow that has made its own durable mark for a
  run of writes, such as the order lines, passes ``flush=False`` for them);
* the event's outcome (done, retry, dead letter), written by the worker with ``write_pending``.

A read-only call (a lookup) therefore costs no transaction of its own: its step row goes with
the next write. A failed or interrupted step is written at once (a dead letter points at it).
A worker killed between a read and the next write loses that read's step row, never a
checkpoint or an effect: the next attempt repeats the read.

**On PostgreSQL a durable write is one statement** (store/fenced.py): the fenced UPDATE and
what rides with it as the parts of one statement on asyncpg's connection, atomic without
``BEGIN`` and ``COMMIT``: one round trip instead of one per statement plus two. A deferred
write made with a statement form (``store.fenced.Deferred``: the cross-reference, what BNG
holds, the version applied) rides in it; one without (a plain callable) sends that durable
write through a transaction as on SQLite.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.connectors import Connectors
from m3bng.errors import M3bngError, ProcessingError
from m3bng.observability import metrics, tracing
from m3bng.store import events, queue
from m3bng.store.blips import retry_blips, ride_out_blips
from m3bng.store.db import driver_connection, on_postgresql
from m3bng.store.fenced import Deferred, FencedWrite, one_statement, steps_part
from m3bng.store.models import StepStatus
from m3bng.store.queue import ClaimedEvent
from m3bng.store.sql import utcnow

T = TypeVar("T")
log = structlog.get_logger(__name__)
PendingWrite = Callable[[AsyncSession], Awaitable[Any]]
# What a write takes from the context: the deferred writes, the steps' rows, whether the
# checkpoints changed, the event columns asked for.
_Taken = tuple[list[Deferred], list[dict[str, Any]], bool, dict[str, Any]]
# Tries of a step row's write: fewer than an outcome's, as the flow is waiting on it.
STEP_WRITE_ATTEMPTS = 3


class LeaseLost(M3bngError):
    """This worker no longer owns the event: another worker took it over after the lease ran out."""


@dataclass
class FlowContext:
    event: ClaimedEvent
    owner: str
    sessions: async_sessionmaker[AsyncSession]
    connectors: Connectors = field(default_factory=Connectors)
    last_failed_step_id: int | None = field(default=None, init=False)
    _pending: list[Deferred] = field(default_factory=list, init=False)
    _steps: list[dict[str, Any]] = field(default_factory=list, init=False)  # successful steps' rows
    _dirty: bool = field(default=False, init=False)  # checkpoints changed since last stored
    _event_columns: dict[str, Any] = field(default_factory=dict, init=False)  # e.g. mapping_hash

    @property
    def payload(self) -> Any:
        return self.event.payload

    @property
    def checkpoints(self) -> dict[str, Any]:
        return self.event.checkpoint

    # -- checkpoints and deferred writes ------------------------------------------------------

    async def checkpoint(self, key: str, value: Any) -> None:
        """Persist a key obtained by a completed step, fenced by this worker's lease."""
        self.event.checkpoint[key] = value
        await self.save_checkpoint(key)

    def note(self, **values: Any) -> None:
        """Checkpoint values that need not be durable on their own (they can be worked out
        again: a customer number found by lookup, "items checked"); stored with the next write.
        ``None`` removes a key."""
        for key, value in values.items():
            if value is None:
                self.event.checkpoint.pop(key, None)
            else:
                self.event.checkpoint[key] = value
        self._dirty = True

    def defer(self, write: PendingWrite | Deferred) -> None:
        """A write stored with the flow's next durable write (module docstring): a ``Deferred``
        rides in its one statement on PostgreSQL, a plain callable makes it a transaction."""
        self._pending.append(write if isinstance(write, Deferred) else Deferred(write))

    def set_on_event(self, **columns: Any) -> None:
        """Columns of the event's own row (the mapping version applied), set by the next fenced
        write of that row: a checkpoint or the outcome, in the same UPDATE."""
        self._event_columns.update(columns)

    def event_row(self) -> dict[str, Any]:
        """What the outcome's fenced UPDATE sets besides the outcome: the checkpoints as they are
        (whether or not a write stored them already, so a retried outcome carries them too) and
        the columns ``set_on_event`` asked for."""
        return {**self._event_columns, "checkpoint": self.event.checkpoint}

    async def save_checkpoint(self, what: object) -> None:
        """Store ``checkpoints`` as they are now, fenced by the lease, with everything deferred.
        Raises LeaseLost (the deferred rows are stored anyway) when another worker owns the
        event now."""
        self._dirty = True
        if not await self._flush_once():
            raise LeaseLost(f"event {self.event.id}: lease lost before checkpoint {what!r}")

    async def flush(self) -> None:
        """Store what is deferred now (before a call that may change the target)."""
        if (
            self._pending or self._steps or self._dirty or self._event_columns
        ) and not await self._flush_once():
            raise LeaseLost(f"event {self.event.id}: lease lost")

    async def _flush_once(self) -> bool:
        return await self._write(None, None)

    async def store_outcome(
        self, outcome: queue.Outcome, keys: dict[str, str], *, attempts: int, log_as: str
    ) -> bool:
        """The event's ``outcome`` with everything deferred and the event row (``event_row``),
        fenced by the lease, and once fenced the ``keys`` ops search by; tried ``attempts``
        times (``store/blips.py``). False when another worker owns the event now."""
        return await retry_blips(lambda: self._write(outcome, keys), attempts=attempts, log_as=log_as)

    async def _write(self, outcome: queue.Outcome | None, keys: dict[str, str] | None) -> bool:
        """One durable write: what is deferred, the successful steps' rows and the event row's
        fenced UPDATE (the checkpoints if changed, or ``outcome``). On PostgreSQL one statement
        on the driver's connection (module docstring), elsewhere a transaction."""
        if not (on_postgresql(self.sessions) and one_statement([w.part for w in self._pending])):
            async with self.sessions.begin() as session:
                if outcome is None:
                    return await self.write_pending(session)
                return await self._outcome_in(session, outcome, keys or {})
        event_row = outcome is None
        taken = self._take(event_row=event_row)
        pending, steps, dirty, columns = taken
        parts = [w.part for w in pending if w.part is not None]
        if steps:
            parts.append(steps_part(steps))
        if outcome is not None:
            values: dict[str, Any] | None = {**self.event_row(), **outcome.values}
        elif dirty or columns:
            values = queue.checkpoint_values(self.event.checkpoint if dirty else None, columns)
        else:
            values = None
        write = FencedWrite(
            self.event.id,
            self.owner,
            values,
            parts,
            refund_attempt=outcome is not None and outcome.refund_attempt,
            keys=keys,
            dead_letter=outcome.dead_letter if outcome is not None else None,
        )
        try:
            async with driver_connection(self.sessions) as driver:
                return await write.run(driver)
        except BaseException:
            self._give_back(taken, event_row=event_row)
            raise

    async def _outcome_in(self, session: AsyncSession, outcome: queue.Outcome, keys: dict[str, str]) -> bool:
        """``_write`` of an outcome in a transaction: the deferred rows, then the outcome with
        the checkpoints in one fenced UPDATE, and with it the keys."""
        await self.write_pending(session, event_row=False)
        outcome = replace(outcome, values={**self.event_row(), **outcome.values})
        written = await queue.write_outcome(session, self.event.id, self.owner, outcome)
        if written:
            await events.index_event_keys(session, self.event.id, keys)
        return written

    def _take(self, *, event_row: bool) -> _Taken:
        """What is deferred, handed to a write and cleared here (``_give_back`` if it fails)."""
        taken = (self._pending, self._steps, self._dirty, self._event_columns)
        self._pending, self._steps = [], []
        if event_row:
            self._dirty, self._event_columns = False, {}
        return taken

    def _give_back(self, taken: _Taken, *, event_row: bool) -> None:
        """A failed write's share, kept for the next one (before what was deferred since)."""
        pending, steps, dirty, columns = taken
        self._pending, self._steps = pending + self._pending, steps + self._steps
        if event_row:
            self._dirty, self._event_columns = dirty or self._dirty, {**columns, **self._event_columns}

    async def write_pending(self, session: AsyncSession, *, event_row: bool = True) -> bool:
        """Add everything deferred, and the checkpoints if changed, to the caller's transaction:
        the deferred writes, the successful steps' rows in one statement, and one fenced UPDATE
        of the event row. ``event_row=False`` leaves that UPDATE to the caller (an outcome sets
        ``event_row()`` in its own).

        Returns False when the event-row write found the lease taken (the worker's outcome
        write, fenced the same way, then says so too). If this fails, the writes are kept for
        the next transaction.
        """
        taken = self._take(event_row=event_row)
        pending, steps, dirty, columns = taken
        try:
            for write in pending:
                await write(session)
            await events.record_steps(session, steps)
            if event_row and (dirty or columns):
                checkpoint = self.event.checkpoint if dirty else None
                return await queue.save_checkpoint(
                    session, self.event.id, self.owner, checkpoint, row=columns
                )
            return True
        except BaseException:
            self._give_back(taken, event_row=event_row)
            raise

    async def flush_quietly(self) -> None:
        """Store what is deferred, riding out a database blip; for a flow that ends without an
        outcome of its own (its lease was lost): the step rows are facts either way."""
        if await self._ride_out_blips(self.write_pending, rows=len(self._pending) + len(self._steps)) is None:
            self._pending.clear()
            self._steps.clear()

    async def _ride_out_blips(self, write: Callable[[AsyncSession], Awaitable[T]], **about: Any) -> T | None:
        """``write`` (with whatever is deferred) in a transaction of its own, tried
        ``STEP_WRITE_ATTEMPTS`` times (``store/blips.py``); None when the store stayed unreachable
        (logged with ``about``). Step rows are given up then, never a call's result: failing here
        would make the flow retry a call that already took effect."""
        try:
            return await ride_out_blips(
                self.sessions, write, attempts=STEP_WRITE_ATTEMPTS, log_as="step.record_failed", **about
            )
        except Exception:
            log.error("step.record_lost", **about)
            return None

    # -- steps ----------------------------------------------------------------------------------

    def step(
        self, name: str, *, target: str, operation: str, request: Any, flush: bool = True
    ) -> StepRecorder:
        """Record the outbound call made in the ``async with`` block as one step, whatever its
        outcome; the block sets ``step.response`` to what the row should show of the answer.

        ``flush=False`` for a call that only reads (or is covered by the flow's own durable
        mark): nothing deferred is stored before it.
        """
        return StepRecorder(self, name, target=target, operation=operation, request=request, flush=flush)

    async def _record(self, row: dict[str, Any]) -> int | None:
        """Store a failed or interrupted step now (a dead letter points at it), with whatever
        is deferred; its id, or None when the store stayed unreachable."""

        async def write(session: AsyncSession) -> int:
            await self.write_pending(session)
            return await events.record_step(session, **row)

        return await self._ride_out_blips(write, step=row["name"], status=row["status"])


def _jsonable(value: Any) -> bool:
    return value is None or isinstance(value, (dict, list, str, int, float, bool))


class StepRecorder:
    """One step row around one outbound call (``FlowContext.step``).

    A class, not a generator-based context manager: it runs for every MI call of every order,
    and its enter/exit are a quarter of the cost of ``contextlib``'s (docs/benchmarks.md).
    """

    __slots__ = (
        "_span",
        "_started",
        "_t0",
        "ctx",
        "flush",
        "name",
        "operation",
        "request",
        "response",
        "target",
    )

    def __init__(
        self, ctx: FlowContext, name: str, *, target: str, operation: str, request: Any, flush: bool
    ) -> None:
        self.ctx, self.name, self.target, self.operation = ctx, name, target, operation
        self.request, self.flush = request, flush
        self.response: Any = None
        self._span: AbstractContextManager[None] | None = None
        self._t0 = 0.0
        self._started = utcnow()

    async def __aenter__(self) -> StepRecorder:
        if self.flush:
            await self.ctx.flush()
        self._started = utcnow()
        self._t0 = time.perf_counter()
        if tracing.enabled():
            self._span = tracing.span(
                f"{self.target} {self.operation}",
                correlation_id=self.ctx.event.correlation_id,
                step=self.name,
                target=self.target,
                operation=self.operation,
            )
            self._span.__enter__()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._span is not None:
            self._span.__exit__(kind, exc, tb)
        elapsed = time.perf_counter() - self._t0
        status, error_class, error = StepStatus.OK.value, None, None
        if isinstance(exc, ProcessingError):
            status, error_class, error = StepStatus.FAILED.value, exc.error_class, str(exc)
        elif isinstance(exc, Exception):
            status, error_class, error = StepStatus.FAILED.value, "internal", repr(exc)
        elif exc is not None:  # cancelled mid-call (shutdown, lost lease): the target may have applied it
            status, error_class, error = (
                StepStatus.UNKNOWN.value,
                "cancelled",
                "interrupted before an answer came",
            )
        metrics.observe_outbound(self.target, self.operation, self.name, status, elapsed)
        response = self.response
        row = {
            "event_id": self.ctx.event.id,
            "attempt": self.ctx.event.attempts,
            "name": self.name,
            "target": self.target,
            "operation": self.operation,
            "request": self.request,
            "response": response if _jsonable(response) else repr(response),
            "status": status,
            "error_class": error_class,
            "error": error,
            "duration_ms": elapsed * 1000,
            "started_at": self._started,
        }
        if status == StepStatus.OK.value:
            self.ctx._steps.append(row)
        else:
            self.ctx.last_failed_step_id = await self.ctx._record(row)
