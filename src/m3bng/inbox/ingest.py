"""Durable ingestion: an inbound event is committed before anybody is told it was received."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.observability import metrics, tracing
from m3bng.store import queue
from m3bng.store.models import DEFAULT_INSTANCE
from m3bng.store.queue import NewEvent

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class IngestResult:
    event_id: int
    duplicate: bool
    correlation_id: str


class GroupCommit:
    """Events that arrive together are stored by one statement in one transaction.

    Most of a durable ingest's cost is the database round trips and the commit, not the insert
    itself (docs/benchmarks.md). Requests hand their event over and wait; one task stores
    whatever has queued up meanwhile as a batch, answers every request of the batch, and goes on
    with what queued up during that commit. Nothing waits on a timer: a lone request is stored
    at once, as before, and under load the batches grow by themselves. The rule stays "2xx only
    after commit": each request's answer waits for its batch's commit, and a batch that fails
    fails every request in it (their senders retry), with nothing half-stored.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, max_batch: int = 256) -> None:
        self.sessions = sessions
        self.max_batch = max_batch
        self._queue: list[tuple[NewEvent, asyncio.Future[tuple[int, bool]]]] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # for tests and the benchmark: how many commits stored how many events
        self.events = 0

    async def insert(self, new: NewEvent) -> tuple[int, bool]:
        """Store ``new`` once per (source, external_id); ``(event_id, created)`` once committed."""
        future: asyncio.Future[tuple[int, bool]] = asyncio.get_running_loop().create_future()
        self._queue.append((new, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="ingest-group-commit")
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            try:
                results = await queue.store_events(self.sessions, [new for new, _ in batch])
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            self.events += len(batch)
            received = []
            kinds: Counter[tuple[str, str, bool, str]] = Counter()
            for (new, _), (event_id, created) in zip(batch, results, strict=True):
                kinds[new.source, new.event_type, not created, new.instance] += 1
                if created:
                    received.append((new, event_id))
            # Counted once per batch and kind (a labelled counter per event was a per cent of a
            # webhook), before any of its requests is answered.
            for (source, event_type, duplicate, instance), count in kinds.items():
                metrics.observe_received(source, event_type, duplicate, instance, count)
            _log_received(received)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():  # its request may have gone (client disconnected)
                    future.set_result(result)


def _log_received(received: list[tuple[NewEvent, int]]) -> None:
    """One ``events.received`` line per committed batch, listing its events, where a line per
    event cost a tenth of a webhook's CPU (docs/benchmarks.md): the same facts, found by the
    same grep for an external id or a correlation id."""
    if received:
        log.info(
            "events.received",
            count=len(received),
            events=[
                {
                    "event_id": event_id,
                    "source": new.source,
                    "event_type": new.event_type,
                    "external_id": new.external_id,
                    "correlation_id": new.correlation_id,
                }
                for new, event_id in received
            ],
        )


class Notifier:
    """Wakes in-process workers as soon as an event is committed, instead of at the next poll."""

    def __init__(self) -> None:
        self._listeners: list[Any] = []

    def subscribe(self, listener: Any) -> None:
        self._listeners.append(listener)

    def notify(self) -> None:
        for listener in self._listeners:
            listener.set()


async def ingest_event(
    sessions: async_sessionmaker[AsyncSession],
    *,
    source: str,
    external_id: str,
    event_type: str,
    payload: Any,
    business_key: str | None,
    correlation_id: str | None = None,
    notifier: Notifier | None = None,
    group: GroupCommit | None = None,
    instance: str = DEFAULT_INSTANCE,
) -> IngestResult:
    """Store one inbound event exactly once per (source, external_id) and commit it.

    The caller acknowledges the sender only after this returns; if it raises, the sender gets an
    error and retries, and nothing was half-written (one statement, one transaction). With
    ``group``, the event is committed together with others arriving at the same time.
    """
    # 32 random hex digits, the shape of uuid4().hex, from the random module: an id to follow an
    # event by, not a secret, and without a UUID object and a getrandom() system call per webhook.
    cid = correlation_id or f"{random.getrandbits(128):032x}"
    new = NewEvent(
        source=source,
        external_id=external_id,
        event_type=event_type,
        payload=payload,
        business_key=business_key,
        correlation_id=cid,
        instance=instance,
    )
    with tracing.span("ingest", correlation_id=cid, source=source, event_type=event_type):
        if group is not None:
            event_id, created = await group.insert(new)
        else:
            async with sessions.begin() as session:
                event_id, created = await queue.insert_event_once(session, new)
    if group is None:  # the group commit counts its batch
        metrics.observe_received(source, event_type, duplicate=not created, instance=instance)
    if created:
        if group is None:  # the group commit logs its batch
            _log_received([(new, event_id)])
        if notifier is not None:
            notifier.notify()
    else:
        log.info("event.duplicate", event_id=event_id, source=source, external_id=external_id)
    return IngestResult(event_id=event_id, duplicate=not created, correlation_id=cid)
