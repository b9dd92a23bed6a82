"""ION's messageIds (``ion_messages``), written in the same transaction as the event of the BOD
they delivered. A BOD is a duplicate when either its messageId or its BODID (the event's
external id) was seen before; ``connectors/ion/ingest.py`` says why both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.store import queue, sql
from m3bng.store.models import IonMessage
from m3bng.store.queue import NewEvent

DuplicateBy = Literal["messageId", "BODID"]


@dataclass(frozen=True)
class StoredBod:
    """The event holding the BOD, and what made it a duplicate (None: stored by this call)."""

    event_id: int
    duplicate_by: DuplicateBy | None


async def event_for_message(session: AsyncSession, message_id: str) -> int | None:
    """The event stored for ``message_id``, if ION delivered it before: a retried delivery must
    be answered with the first one's event, not stored again."""
    result = await session.execute(select(IonMessage.event_id).where(IonMessage.message_id == message_id))
    return result.scalar_one_or_none()


async def insert_bod_once(
    sessions: async_sessionmaker[AsyncSession],
    new: NewEvent,
    *,
    message_id: str | None,
    instances: Sequence[str] = (),
) -> StoredBod:
    """Store the BOD's event and its messageId unless either the messageId or the BODID is
    known, and commit before returning.

    It takes the session factory because it needs its own transactions: the event row and its
    ``ion_messages`` row are written in one, so there is never an event without its messageId or
    the reverse, and losing a race means reading the winner in a second one.

    Concurrency: two deliveries racing with the same BODID are settled by ``insert_event_once``
    (ON CONFLICT DO NOTHING; the loser reads the winner's id). Two racing with the same messageId
    but different BODIDs both insert an event; the second to insert the ``ion_messages`` row hits
    its primary key (PostgreSQL waits for the first transaction, then raises), rolls its whole
    transaction back, event included, and answers "duplicate" with the winner's event id.
    SQLite serialises writers (BEGIN IMMEDIATE), so there the check before the insert already
    sees the winner. Any other integrity error, or one without a messageId, is raised.

    ``instances``: the BNG instances the BOD goes to (flows/routing.py), one event each, all in
    the same transaction (``new.instance`` when empty). The BODID is a duplicate only when every
    instance holds it already; the first event stands for the delivery.
    """
    news = [replace(new, instance=i) for i in instances] or [new]
    try:
        async with sessions.begin() as session:
            known = await event_for_message(session, message_id) if message_id else None
            if known is not None:
                return StoredBod(known, "messageId")
            results = await queue.insert_events_once(session, news)
            event_id = next((i for i, created in results if created), results[0][0])
            if not any(created for _, created in results):
                return StoredBod(event_id, "BODID")
            if message_id:
                await session.execute(
                    insert(IonMessage).values(
                        message_id=message_id, event_id=event_id, received_at=sql.utcnow()
                    )
                )
    except IntegrityError:
        if not message_id:
            raise
        # Lost the race for this messageId (the winner carried another BODID): the rollback
        # removed our event too, so nothing of this delivery is stored.
        async with sessions() as session:
            winner = await event_for_message(session, message_id)
        if winner is None:
            raise
        return StoredBod(winner, "messageId")
    return StoredBod(event_id, None)
