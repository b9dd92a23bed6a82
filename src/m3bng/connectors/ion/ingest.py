"""Storing a received BOD exactly once, by ION's messageId *and* by BODID.

ION delivers at least once and retries a delivery under the same messageId; the same BOD can
also arrive twice under different messageIds (re-published, or sent through two connection
points). So a BOD is a duplicate when either its messageId (table ``ion_messages``) or its BODID
(the event's external id) was seen before. The event row and its ``ion_messages`` row are
written in one transaction: there is never an event without its messageId or the reverse.

Concurrency: two deliveries racing with the same BODID are settled by
``insert_event_once`` (ON CONFLICT DO NOTHING; the loser reads the winner's id). Two racing
with the same messageId but different BODIDs both insert an event; the second to insert the
``ion_messages`` row hits its primary key (PostgreSQL waits for the first transaction, then
raises), rolls its whole transaction back, event included, and answers "duplicate" with the
winner's event id. SQLite serialises writers (BEGIN IMMEDIATE), so there the check before the
insert already sees the winner.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.connectors.ion.bod import ParsedBod
from m3bng.observability import metrics, tracing
from m3bng.store import queries
from m3bng.store.models import IonMessage
from m3bng.store.queries import NewEvent

log = structlog.get_logger(__name__)

SOURCE = "ion"
_MAX_EXTERNAL_ID = 255


class Notifier(Protocol):
    def notify(self) -> None: ...


@dataclass(frozen=True)
class BodIngestResult:
    event_id: int
    duplicate: bool
    correlation_id: str


def external_id(parsed: ParsedBod, message_id: str | None) -> str:
    """The event's dedup key: the BODID (hashed when longer than the column)."""
    if parsed.bodid:
        if len(parsed.bodid) <= _MAX_EXTERNAL_ID:
            return parsed.bodid
        return "bodid-sha256:" + hashlib.sha256(parsed.bodid.encode()).hexdigest()
    if message_id:
        return "msg:" + message_id
    return "sha256:" + hashlib.sha256(parsed.xml.encode()).hexdigest()


def business_key(parsed: ParsedBod) -> str | None:
    """One FIFO queue per document: ``SalesOrder:770_AAA:1000123``."""
    if not parsed.document_id:
        return None
    key = f"{parsed.noun}:{parsed.accounting_entity or ''}:{parsed.document_id}"
    return key if len(key) <= _MAX_EXTERNAL_ID else key[:_MAX_EXTERNAL_ID]


async def _event_for_message(session: AsyncSession, message_id: str) -> int | None:
    result = await session.execute(select(IonMessage.event_id).where(IonMessage.message_id == message_id))
    return result.scalar_one_or_none()


async def ingest_bod(
    sessions: async_sessionmaker[AsyncSession],
    parsed: ParsedBod,
    *,
    payload: dict[str, Any],
    message_id: str | None,
    notifier: Notifier | None = None,
) -> BodIngestResult:
    """Store one BOD unless its messageId or BODID is known, and commit before returning."""
    cid = uuid.uuid4().hex
    new = NewEvent(
        source=SOURCE,
        external_id=external_id(parsed, message_id),
        event_type=parsed.bod_type,
        payload=payload,
        business_key=business_key(parsed),
        correlation_id=cid,
    )
    with tracing.span("ingest", correlation_id=cid, source=SOURCE, event_type=parsed.bod_type):
        try:
            async with sessions.begin() as session:
                known = await _event_for_message(session, message_id) if message_id else None
                if known is not None:
                    return _duplicate(known, cid, message_id, "messageId")
                event_id, created = await queries.insert_event_once(session, new)
                if not created:
                    return _duplicate(event_id, cid, message_id, "BODID")
                if message_id:
                    await session.execute(
                        insert(IonMessage).values(
                            message_id=message_id, event_id=event_id, received_at=queries.utcnow()
                        )
                    )
        except IntegrityError:
            if not message_id:
                raise
            # Lost the race for this messageId (the winner carried another BODID): the rollback
            # removed our event too, so nothing of this delivery is stored.
            async with sessions() as session:
                winner = await _event_for_message(session, message_id)
            if winner is None:
                raise
            return _duplicate(winner, cid, message_id, "messageId")
    metrics.observe_received(SOURCE, parsed.bod_type, duplicate=False)
    log.info(
        "event.received",
        event_id=event_id,
        source=SOURCE,
        event_type=parsed.bod_type,
        external_id=new.external_id,
        message_id=message_id,
        correlation_id=cid,
    )
    if notifier is not None:
        notifier.notify()
    return BodIngestResult(event_id=event_id, duplicate=False, correlation_id=cid)


def _duplicate(event_id: int, cid: str, message_id: str | None, by: str) -> BodIngestResult:
    metrics.observe_received(SOURCE, "", duplicate=True)
    log.info("event.duplicate", event_id=event_id, source=SOURCE, message_id=message_id, by=by)
    return BodIngestResult(event_id=event_id, duplicate=True, correlation_id=cid)
