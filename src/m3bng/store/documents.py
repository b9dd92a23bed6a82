"""What m3bng knows of each object on both sides: BNG id ⇄ M3 key cross-references, the newest
document version applied (stale checks), and what BNG holds (echo checks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.store.db import driver_connection, on_postgresql, single_statement
from m3bng.store.fenced import Deferred, Part, json_text, naive_utc
from m3bng.store.models import DEFAULT_INSTANCE, BngState, CrossReference, DocumentVersion
from m3bng.store.sql import dialect_name, insert_ignore, upsert, upserts, utcnow

_XREFS = cast(Table, CrossReference.__table__)
_BNG_STATE = cast(Table, BngState.__table__)
# Built once (Core, bound per call): these run for most events a worker applies.
_GET_XREF = select(_XREFS.c.m3_key).where(
    _XREFS.c.instance == bindparam("instance"),
    _XREFS.c.entity == bindparam("entity"),
    _XREFS.c.bng_id == bindparam("bng_id"),
)
_PUT_BNG_STATE = upserts(
    _BNG_STATE, ["instance", "entity", "bng_id"], ["data", "origin", "event_id", "updated_at"]
)

# Every key below is per BNG instance (instances.py): the same BNG id in two instances is two
# objects, each with its own link to M3.


async def get_xref(
    session: AsyncSession, entity: str, bng_id: str, *, instance: str = DEFAULT_INSTANCE
) -> str | None:
    """The M3 key BNG's ``bng_id`` was last applied to, if m3bng has seen the object before."""
    result = await session.execute(_GET_XREF, {"instance": instance, "entity": entity, "bng_id": bng_id})
    return result.scalar_one_or_none()


# ``get_xref`` on asyncpg's connection: a flow reads two or three links per event, and through a
# session each read cost more CPU than the database's work for it (docs/benchmarks.md).
_PG_GET_XREF = (
    "SELECT m3_key FROM xrefs WHERE instance = $1::text AND entity = $2::text AND bng_id = $3::text"
)


async def read_xref(
    sessions: async_sessionmaker[AsyncSession], entity: str, bng_id: str, *, instance: str = DEFAULT_INSTANCE
) -> str | None:
    """``get_xref`` as a read of its own, outside any transaction: on PostgreSQL one statement on
    the driver (store/db.driver_connection), elsewhere in a ``single_statement`` session."""
    if on_postgresql(sessions):
        async with driver_connection(sessions) as driver:
            found: str | None = await driver.fetchval(_PG_GET_XREF, instance, entity, bng_id)
            return found
    async with single_statement(sessions) as session:
        return await get_xref(session, entity, bng_id, instance=instance)


async def get_xref_by_m3(
    session: AsyncSession, entity: str, m3_key: str, *, instance: str = DEFAULT_INSTANCE
) -> str | None:
    result = await session.execute(
        select(CrossReference.bng_id).where(
            CrossReference.instance == instance,
            CrossReference.entity == entity,
            CrossReference.m3_key == m3_key,
        )
    )
    return result.scalar_one_or_none()


async def bng_ids_of(
    session: AsyncSession, entity: str, m3_keys: Sequence[str], *, instance: str
) -> dict[str, str]:
    """The BNG ids of many M3 keys at once (a page of a load): M3 key → BNG id, where linked."""
    rows = await session.execute(
        select(CrossReference.m3_key, CrossReference.bng_id).where(
            CrossReference.instance == instance,
            CrossReference.entity == entity,
            CrossReference.m3_key.in_(list(m3_keys)),
        )
    )
    return {m3_key: bng_id for m3_key, bng_id in rows}


async def instances_of_m3(session: AsyncSession, entity: str, m3_key: str) -> list[str]:
    """The instances that hold a link to this M3 object: where its changes (an order's status,
    a customer's address) go back to."""
    result = await session.execute(
        select(CrossReference.instance)
        .where(CrossReference.entity == entity, CrossReference.m3_key == m3_key)
        .order_by(CrossReference.instance)
    )
    return list(result.scalars())


async def put_xref(
    session: AsyncSession, entity: str, bng_id: str, m3_key: str, *, instance: str = DEFAULT_INSTANCE
) -> None:
    """Link ``bng_id`` ⇄ ``m3_key``, replacing an older link of either id.

    Both directions are unique: an M3 key that BNG re-used for another object (or a BNG id that
    was re-pointed) moves, rather than leaving two rows that disagree.

    Safe under concurrency: many events link the same pair at once (every order of one customer
    links the customer). A plain delete-then-insert made all but one of them fail on the unique
    key and retry; the inserts are ``ON CONFLICT DO NOTHING``, so a concurrent writer of the same
    link (or, in a true race between two different links, the one that committed first) stands.
    A new link, the common case, is that insert alone.
    """
    now = utcnow()
    row = {
        "instance": instance,
        "entity": entity,
        "bng_id": bng_id,
        "m3_key": m3_key,
        "created_at": now,
        "updated_at": now,
    }
    # The usual case, a new object: one statement. Either unique key taken: look closer.
    if (await session.execute(insert_ignore(session, _XREFS, row).returning(_XREFS.c.id))).first():
        return
    same = await session.execute(
        select(CrossReference.id).where(
            CrossReference.instance == instance,
            CrossReference.entity == entity,
            CrossReference.bng_id == bng_id,
            CrossReference.m3_key == m3_key,
        )
    )
    if same.first() is not None:  # already linked: nothing to move
        return
    await session.execute(
        delete(CrossReference).where(
            CrossReference.instance == instance,
            CrossReference.entity == entity,
            (CrossReference.bng_id == bng_id) | (CrossReference.m3_key == m3_key),
        )
    )
    await session.execute(insert_ignore(session, _XREFS, row))


# ``put_xref`` as one write of a fenced write's statement on PostgreSQL (store/fenced.py): what
# holds either id under another link is deleted, then the link inserted unless it is there. The
# insert reads the delete's count, so it runs after it and sees those rows gone.
_XREF_MOVE = (
    """DELETE FROM xrefs WHERE instance = $1::text AND entity = $2::text
       AND (bng_id = $3::text OR m3_key = $4::text) AND NOT (bng_id = $3::text AND m3_key = $4::text)
       RETURNING id""",
    """INSERT INTO xrefs (instance, entity, bng_id, m3_key, created_at, updated_at)
       SELECT $1::text, $2::text, $3::text, $4::text, $5::timestamp, $5::timestamp
       WHERE (SELECT count(*) FROM __prev__) >= 0
       ON CONFLICT DO NOTHING""",
)


def deferred_xref(entity: str, bng_id: str, m3_key: str, *, instance: str = DEFAULT_INSTANCE) -> Deferred:
    """``put_xref``, deferred to the flow's next durable write (FlowContext.defer)."""
    part = Part(
        _XREF_MOVE, (instance, entity, bng_id, m3_key, naive_utc(utcnow())), ("xrefs", instance, entity)
    )
    return Deferred(lambda session: put_xref(session, entity, bng_id, m3_key, instance=instance), part)


@dataclass(frozen=True)
class DocumentVersionRow:
    variation_id: int | None
    created_at: datetime | None
    event_id: int | None


async def get_document_version(session: AsyncSession, noun: str, key: str) -> DocumentVersionRow | None:
    row = (
        await session.execute(
            select(DocumentVersion.variation_id, DocumentVersion.created_at, DocumentVersion.event_id).where(
                DocumentVersion.noun == noun, DocumentVersion.document_key == key
            )
        )
    ).one_or_none()
    return None if row is None else DocumentVersionRow(*row)


async def put_document_version(
    session: AsyncSession,
    noun: str,
    key: str,
    *,
    variation_id: int | None,
    created_at: datetime | None,
    event_id: int,
) -> None:
    await session.execute(
        upsert(
            session,
            DocumentVersion.__table__,
            ["noun", "document_key"],
            {
                "noun": noun,
                "document_key": key,
                "variation_id": variation_id,
                "created_at": created_at,
                "event_id": event_id,
                "updated_at": utcnow(),
            },
        )
    )


_DOCUMENT_VERSION_UPSERT = """INSERT INTO document_versions
    (noun, document_key, variation_id, created_at, event_id, updated_at)
VALUES ($1::text, $2::text, $3::bigint, $4::timestamp, $5::bigint, $6::timestamp)
ON CONFLICT (noun, document_key) DO UPDATE SET variation_id = excluded.variation_id,
    created_at = excluded.created_at, event_id = excluded.event_id, updated_at = excluded.updated_at"""


def deferred_document_version(
    noun: str, key: str, *, variation_id: int | None, created_at: datetime | None, event_id: int
) -> Deferred:
    """``put_document_version``, deferred to the flow's next durable write."""
    args = (noun, key, variation_id, naive_utc(created_at), event_id, naive_utc(utcnow()))
    return Deferred(
        lambda session: put_document_version(
            session, noun, key, variation_id=variation_id, created_at=created_at, event_id=event_id
        ),
        Part((_DOCUMENT_VERSION_UPSERT,), args, ("document_versions", noun, key)),
    )


async def get_bng_state(
    session: AsyncSession,
    entity: str,
    bng_id: str,
    *,
    not_from_event: int | None = None,
    instance: str = DEFAULT_INSTANCE,
) -> dict[str, Any] | None:
    """What BNG holds for the object as far as m3bng knows.

    ``not_from_event``: ignore a state that this event itself recorded on an earlier attempt;
    an event must not take its own unfinished work for an echo.
    """
    result = await session.execute(
        select(BngState.data, BngState.event_id).where(
            BngState.instance == instance, BngState.entity == entity, BngState.bng_id == bng_id
        )
    )
    row = result.one_or_none()
    if row is None or (not_from_event is not None and row.event_id == not_from_event):
        return None
    return row.data if isinstance(row.data, dict) else None


async def put_bng_state(
    session: AsyncSession,
    entity: str,
    bng_id: str,
    data: dict[str, Any],
    *,
    origin: str,
    event_id: int,
    instance: str = DEFAULT_INSTANCE,
) -> None:
    row = {
        "instance": instance,
        "entity": entity,
        "bng_id": bng_id,
        "data": data,
        "origin": origin,
        "event_id": event_id,
    }
    await session.execute(_PUT_BNG_STATE[dialect_name(session)], {**row, "updated_at": utcnow()})


_BNG_STATE_UPSERT = """INSERT INTO bng_state (instance, entity, bng_id, data, origin, event_id, updated_at)
VALUES ($1::text, $2::text, $3::text, $4::text::jsonb, $5::text, $6::bigint, $7::timestamp)
ON CONFLICT (instance, entity, bng_id) DO UPDATE SET data = excluded.data, origin = excluded.origin,
    event_id = excluded.event_id, updated_at = excluded.updated_at"""


def deferred_bng_state(
    entity: str,
    bng_id: str,
    data: dict[str, Any],
    *,
    origin: str,
    event_id: int,
    instance: str = DEFAULT_INSTANCE,
) -> Deferred:
    """``put_bng_state``, deferred to the flow's next durable write."""
    args = (instance, entity, bng_id, json_text(data), origin, event_id, naive_utc(utcnow()))
    return Deferred(
        lambda session: put_bng_state(
            session, entity, bng_id, data, origin=origin, event_id=event_id, instance=instance
        ),
        Part((_BNG_STATE_UPSERT,), args, ("bng_state", instance, entity, bng_id)),
    )


async def delete_bng_state(
    session: AsyncSession, entity: str, bng_id: str, *, instance: str = DEFAULT_INSTANCE
) -> None:
    await session.execute(
        delete(BngState).where(
            BngState.instance == instance, BngState.entity == entity, BngState.bng_id == bng_id
        )
    )
