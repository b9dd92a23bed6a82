"""Durable ingestion: an inbound event is committed before anybody is told it was received."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.observability import metrics, tracing
from m3bng.store import queries
from m3bng.store.queries import NewEvent

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class IngestResult:
    event_id: int
    duplicate: bool
    correlation_id: str


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
) -> IngestResult:
    """Store one inbound event exactly once per (source, external_id) and commit it.

    The caller acknowledges the sender only after this returns; if it raises, the sender gets an
    error and retries, and nothing was half-written (one statement, one transaction).
    """
    cid = correlation_id or uuid.uuid4().hex
    new = NewEvent(
        source=source,
        external_id=external_id,
        event_type=event_type,
        payload=payload,
        business_key=business_key,
        correlation_id=cid,
    )
    with tracing.span("ingest", correlation_id=cid, source=source, event_type=event_type):
        async with sessions.begin() as session:
            event_id, created = await queries.insert_event_once(session, new)
    metrics.observe_received(source, event_type, duplicate=not created)
    if created:
        log.info(
            "event.received",
            event_id=event_id,
            source=source,
            event_type=event_type,
            external_id=external_id,
            correlation_id=cid,
        )
        if notifier is not None:
            notifier.notify()
    else:
        log.info("event.duplicate", event_id=event_id, source=source, external_id=external_id)
    return IngestResult(event_id=event_id, duplicate=not created, correlation_id=cid)
