"""Workers: claim due events under a lease, run their flow, record the outcome.

Durable retries live in the events table (``next_attempt_at``), never in a sleeping coroutine:
a worker can die at any instant and the schedule survives it. Leases are renewed by a heartbeat
while a flow runs; a worker that dies stops renewing, its lease expires, and the claim query
hands the event to whichever worker asks next.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import uuid
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.connectors import Connectors
from m3bng.errors import Held, PermanentError, ProcessingError, Skipped, TargetUnavailable
from m3bng.flows.runtime import FlowContext, FlowRegistry, LeaseLost
from m3bng.inbox.retry import RetryPolicy
from m3bng.instances import DEFAULT, Instances
from m3bng.observability import metrics, tracing
from m3bng.ops.controls import PausedFlows
from m3bng.ops.keys import event_keys
from m3bng.store import anomalies, queue
from m3bng.store.queue import ClaimedEvent

log = structlog.get_logger(__name__)

MAX_ERROR_CHARS = 4000
# Tries of an outcome write (0.2 s, 0.4 s, 0.8 s, 1.6 s between them) before the lease is left
# to expire: a database restart rarely takes longer, and the event is not lost either way.
OUTCOME_WRITE_ATTEMPTS = 5


# Called after an event is dead-lettered (the ConfirmBOD to ION): event, reason, error text.
DeadLetterHook = Callable[[ClaimedEvent, str, str], Awaitable[None]]


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """One worker: up to ``concurrency`` events in flight, each under its own lease."""

    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        registry: FlowRegistry,
        *,
        worker_id: str | None = None,
        policy: RetryPolicy | None = None,
        connectors: Connectors | None = None,
        on_dead_letter: DeadLetterHook | None = None,
        instances: Instances | None = None,
    ) -> None:
        """``instances``: the installation's BNG instances; the worker claims only their events,
        fairly between them (store/queue.py). None: every event, as one instance."""
        self.settings = settings
        self.instances = instances
        self._turn = 0  # which instance goes first among equals in the next claim
        self.on_dead_letter = on_dead_letter
        self.sessions = sessions
        self.registry = registry
        self.connectors = connectors or Connectors()
        self.worker_id = worker_id or new_worker_id()
        self.policy = policy or RetryPolicy(settings.retry_schedule, settings.retry_jitter)
        self.wakeup = asyncio.Event()
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._lost: set[int] = set()
        self._stopping = False
        self.paused = PausedFlows(sessions, registry)

    # -- main loop --------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker.started", worker_id=self.worker_id, concurrency=self.settings.worker_concurrency)
        heartbeat = asyncio.create_task(self._heartbeat(), name="lease-heartbeat")
        try:
            while not stop.is_set():
                # Cleared before the claim, not after: an ingest notification that arrives while
                # the claim query runs (it may not see that event yet) must still wake the wait
                # below, instead of leaving the event pending for a whole poll interval.
                self.wakeup.clear()
                claimed = await self._claim_free_slots()
                if claimed and len(self._inflight) < self.settings.worker_concurrency:
                    continue  # there may be more due work: ask again at once
                await self._wait(stop)
        finally:
            self._stopping = True
            await self._drain()
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            log.info("worker.stopped", worker_id=self.worker_id)

    async def run_until_idle(self, timeout: float = 30.0) -> None:
        """Process everything that is due now, then return (tests, `m3bng worker --once`)."""
        async with asyncio.timeout(timeout):
            while True:
                claimed = await self._claim_free_slots()
                if not claimed and not self._inflight:
                    return
                if self._inflight:
                    await asyncio.wait(list(self._inflight.values()), return_when=asyncio.FIRST_COMPLETED)

    async def _claim_free_slots(self) -> int:
        free = self.settings.worker_concurrency - len(self._inflight)
        if free <= 0:
            return 0
        try:
            paused = await self.paused.event_types()
            instances = await self._claimable_instances()
            request = queue.ClaimRequest(
                self.worker_id,
                free,
                self.settings.lease_seconds,
                paused_types=sorted(paused),
                busy=sorted(self._inflight),
                instances=instances,
            )
            events = await queue.claim(self.sessions, request)
        except Exception as exc:  # database restarting, network blip: keep the worker alive
            log.warning("worker.claim_failed", error=repr(exc)[:MAX_ERROR_CHARS])
            await asyncio.sleep(min(self.settings.worker_poll_interval * 4, 5.0))
            return 0
        for event in events:
            task = asyncio.create_task(self._process(event), name=f"event-{event.id}")
            self._inflight[event.id] = task
            task.add_done_callback(self._task_done(event.id))
        return len(events)

    async def _claimable_instances(self) -> list[str]:
        """The instances not paused, each claim starting with the next one, so that among
        instances with due work none is always last (the fairness bound, docs/instances.md).
        Without an instances file only ``default``: events of an instance that was removed from
        the file wait for it, never going to the default instance's BNG or company instead."""
        paused = await self.paused.instances()
        configured = self.instances.ids if self.instances is not None else [DEFAULT]
        ids = [i for i in configured if i not in paused]
        if len(ids) > 1:
            self._turn = (self._turn + 1) % len(ids)
            ids = ids[self._turn :] + ids[: self._turn]
        return ids

    def _task_done(self, event_id: int) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._inflight.pop(event_id, None)
            self.wakeup.set()

        return done

    async def _wait(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.create_task(self.wakeup.wait()), asyncio.create_task(stop.wait())]
        try:
            await asyncio.wait(
                waiters, timeout=self.settings.worker_poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _heartbeat(self) -> None:
        interval = max(self.settings.lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            ids = list(self._inflight)
            if not ids:
                continue
            try:
                async with self.sessions.begin() as session:
                    held = await queue.renew_leases(session, self.worker_id, ids, self.settings.lease_seconds)
            except Exception as exc:
                log.warning("worker.heartbeat_failed", error=repr(exc)[:MAX_ERROR_CHARS])
                continue
            for lost in set(ids) - held:
                task = self._inflight.get(lost)
                if task is not None:
                    # Another worker owns the event now: stop working on it here, so that two
                    # workers never carry on calling M3 for the same event.
                    log.warning("worker.lease_lost", event_id=lost)
                    self._lost.add(lost)
                    task.cancel()

    async def _drain(self) -> None:
        """Graceful shutdown: let in-flight events finish, then hand back the leases of the rest."""
        if not self._inflight:
            return
        log.info("worker.draining", inflight=len(self._inflight))
        _done, pending = await asyncio.wait(
            list(self._inflight.values()), timeout=self.settings.shutdown_grace_seconds
        )
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    # -- one event --------------------------------------------------------------------------------

    async def _process(self, event: ClaimedEvent) -> None:
        structlog.contextvars.bind_contextvars(
            correlation_id=event.correlation_id, event_id=event.id, event_type=event.event_type
        )
        with tracing.span(
            "process",
            correlation_id=event.correlation_id,
            event_id=event.id,
            event_type=event.event_type,
            attempt=event.attempts,
        ):
            await self._process_traced(event)

    async def _process_traced(self, event: ClaimedEvent) -> None:
        flow = self.registry.get(event.source, event.event_type)
        ctx = FlowContext(
            event=event,
            owner=self.worker_id,
            sessions=self.sessions,
            connectors=self.connectors.for_instance(event.instance),
        )
        try:
            if event.attempts > self.policy.max_attempts:
                # Claimed again and again without an outcome: each time the worker died or hung
                # (a poison event). Stop here instead of killing workers forever.
                await self._dead(
                    ctx,
                    "retries_exhausted",
                    PermanentError(
                        f"claimed {event.attempts - 1} times without an outcome "
                        "(the worker died or stalled while processing it each time)"
                    ),
                )
                return
            if flow is None and event.source == "ion":
                # ION publishes whatever its document flow holds; a noun nobody maps is normal,
                # not a failure to fix. Kept (replayable once a flow exists), not dead-lettered.
                raise Skipped(
                    f"unsupported BOD {event.event_type}: no flow handles it", error_class="unsupported"
                )
            if flow is None:
                await self._dead(
                    ctx,
                    "no_flow",
                    PermanentError(f"no flow handles {event.source} event type {event.event_type!r}"),
                )
                return
            log.info("event.processing", attempt=event.attempts)
            await flow(ctx)
        except asyncio.CancelledError:
            if event.id in self._lost:
                self._lost.discard(event.id)
                log.warning("event.abandoned", reason="lease lost to another worker")
                await ctx.flush_quietly()
                raise
            await self._finish(
                ctx, queue.rescheduled(delay_seconds=0, error_class=None, error=None, refund_attempt=True)
            )
            log.info("event.released", reason="shutdown")
            raise
        except LeaseLost:
            log.warning("event.lease_lost")
            await ctx.flush_quietly()
        except Skipped as exc:
            if await self._finish(
                ctx, queue.skipped(reason=str(exc)[:MAX_ERROR_CHARS], error_class=exc.error_class)
            ):
                metrics.observe_outcome(event.source, event.event_type, "skipped", instance=event.instance)
                log.info("event.skipped", reason=str(exc), error_class=exc.error_class)
        except Held as exc:
            await self._hold(ctx, exc)
        except PermanentError as exc:
            await self._dead(ctx, "permanent_error", exc)
        except TargetUnavailable as exc:
            await self._finish(
                ctx,
                queue.rescheduled(
                    # Jittered, so that events held back by one outage do not all return at once.
                    delay_seconds=(exc.retry_after or 30.0)
                    * (1 + random.uniform(0, self.settings.retry_jitter)),
                    error_class=exc.error_class,
                    error=str(exc)[:MAX_ERROR_CHARS],
                    refund_attempt=True,
                ),
            )
            metrics.observe_outcome(
                event.source, event.event_type, "waiting", exc.error_class, instance=event.instance
            )
            log.info("event.waiting_for_target", target=exc.target, retry_after=exc.retry_after)
        except Exception as exc:
            await self._retry_or_dead(ctx, exc)
        else:
            if await self._finish(ctx, queue.done()):
                metrics.observe_outcome(event.source, event.event_type, "done", instance=event.instance)
                log.info("event.done", attempts=event.attempts)
        finally:
            structlog.contextvars.unbind_contextvars("correlation_id", "event_id", "event_type")

    async def _hold(self, ctx: FlowContext, exc: Held) -> None:
        """Store the event as ``held`` with its findings, in the outcome's own write: a hold
        on record always has the figures that made it."""
        event_id = ctx.event.id
        ctx.defer(anomalies.deferred_findings(event_id, exc.flow, exc.findings))
        if await self._finish(ctx, queue.held(reason=str(exc)[:MAX_ERROR_CHARS])):
            metrics.observe_outcome(
                ctx.event.source, ctx.event.event_type, "held", instance=ctx.event.instance
            )
            log.warning("event.held", reason=str(exc))

    async def _retry_or_dead(self, ctx: FlowContext, exc: Exception) -> None:
        error_class = exc.error_class if isinstance(exc, ProcessingError) else "internal"
        retry_after = exc.retry_after if isinstance(exc, ProcessingError) else None
        delay = self.policy.next_delay(ctx.event.attempts, retry_after)
        if delay is None:
            await self._dead(ctx, "retries_exhausted", exc)
            return
        message = _describe(exc)
        await self._finish(
            ctx, queue.rescheduled(delay_seconds=delay, error_class=error_class, error=message)
        )
        metrics.observe_outcome(
            ctx.event.source, ctx.event.event_type, "retry", error_class, instance=ctx.event.instance
        )
        log.warning(
            "event.retry_scheduled",
            attempt=ctx.event.attempts,
            delay_seconds=round(delay, 3),
            error_class=error_class,
            error=message,
        )

    async def _dead(self, ctx: FlowContext, reason: str, exc: Exception) -> None:
        error_class = exc.error_class if isinstance(exc, ProcessingError) else "internal"
        message = _describe(exc)
        if await self._finish(
            ctx,
            queue.dead(
                reason=reason, error_class=error_class, error=message, failed_step_id=ctx.last_failed_step_id
            ),
        ):
            metrics.observe_outcome(
                ctx.event.source, ctx.event.event_type, "dead", error_class, instance=ctx.event.instance
            )
            log.error("event.dead_lettered", reason=reason, error_class=error_class, error=message)
            if self.on_dead_letter is not None:
                try:
                    await self.on_dead_letter(ctx.event, reason, message)
                except Exception as exc:  # the dead letter stands; the hook's failure is logged
                    log.error("event.dead_letter_hook_failed", error=repr(exc)[:500])

    async def _finish(self, ctx: FlowContext, outcome: queue.Outcome) -> bool:
        """Record an outcome, fenced by the lease, with the flow's last step row and the keys ops
        search by (BNG id, ORNO, BODID, ...). A few quick retries ride out a database blip; if
        the store stays unreachable the lease expires and the event runs again later."""
        event = ctx.event
        keys = event_keys(
            source=event.source,
            external_id=event.external_id,
            business_key=event.business_key,
            payload=event.payload,
            checkpoint=event.checkpoint,
        )
        try:
            written = await ctx.store_outcome(
                outcome, keys, attempts=OUTCOME_WRITE_ATTEMPTS, log_as="event.outcome_write_failed"
            )
        except Exception:  # each try is logged; the lease expiring is the way out
            return False
        if not written:
            log.warning("event.lease_lost", outcome=outcome.name)
        return written


def _describe(exc: Exception) -> str:
    text = str(exc) if isinstance(exc, ProcessingError) else f"{type(exc).__name__}: {exc}"
    return text[:MAX_ERROR_CHARS]
