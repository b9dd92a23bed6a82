"""Storing a received BOD exactly once, by ION's messageId *and* by BODID.

ION delivers at least once and retries a delivery under the same messageId; the same BOD can
also arrive twice under different messageIds (re-published, or sent through two connection
points). So a BOD is a duplicate when either its messageId (table ``ion_messages``) or its BODID
(the event's external id) was seen before. The event row and its ``ion_messages`` row are
written in one transaction, and racing deliveries are settled, by
:func:`m3bng.store.ion.insert_bod_once` (its docstring says how); this module derives the keys
and reports the outcome.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.connectors.ion.bod import ParsedBod
from m3bng.observability import metrics, tracing
from m3bng.store.ion import insert_bod_once
from m3bng.store.queue import NewEvent

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


async def ingest_bod(
    sessions: async_sessionmaker[AsyncSession],
    parsed: ParsedBod,
    *,
    payload: dict[str, Any],
    message_id: str | None,
    notifier: Notifier | None = None,
    instances: Sequence[str] = (),
) -> BodIngestResult:
    """Store one BOD unless its messageId or BODID is known, and commit before returning.
    ``instances``: the BNG instances it goes to, an event each (flows/routing.py)."""
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
        stored = await insert_bod_once(sessions, new, message_id=message_id, instances=instances)
        if stored.duplicate_by is not None:
            return _duplicate(stored.event_id, cid, message_id, stored.duplicate_by)
    for instance in instances or (new.instance,):  # an event each
        metrics.observe_received(SOURCE, parsed.bod_type, duplicate=False, instance=instance)
    log.info(
        "event.received",
        event_id=stored.event_id,
        source=SOURCE,
        event_type=parsed.bod_type,
        external_id=new.external_id,
        message_id=message_id,
        instances=list(instances) or None,
        correlation_id=cid,
    )
    if notifier is not None:
        notifier.notify()
    return BodIngestResult(event_id=stored.event_id, duplicate=False, correlation_id=cid)


def _duplicate(event_id: int, cid: str, message_id: str | None, by: str) -> BodIngestResult:
    metrics.observe_received(SOURCE, "", duplicate=True)
    log.info("event.duplicate", event_id=event_id, source=SOURCE, message_id=message_id, by=by)
    return BodIngestResult(event_id=event_id, duplicate=True, correlation_id=cid)
