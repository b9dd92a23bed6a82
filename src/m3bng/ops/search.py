"""The read side of the ops API: transactions, one transaction's whole story, dead letters, the
audit log. The queries are ``m3bng.store.search``; this adds the opaque cursor and what is not
SQL. HTTP shapes and masking live in ``m3bng.api.ops``.

Every list pages by keyset on the id, newest first, so a row that arrives while someone pages
never shifts the pages being walked (``m3bng.store.search``). The cursor handed out is the id,
made opaque (``m3bng.ops.filters``); a cursor this API did not hand out is a ``FilterError``.

Filters are :class:`~m3bng.ops.filters.EventFilter`, the same object bulk replay stores, so "the
dead letters this list shows" and "the events a bulk replay with this filter replays" are one set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.mapping import Mapping as MappingFile
from m3bng.ops.filters import EventFilter, FilterError, decode_cursor, encode_cursor
from m3bng.store import search as store
from m3bng.store.models import AuditEntry, DeadLetter, Event
from m3bng.store.search import (
    DeadLetterGroup,
    EventDetail,
    KeysetPage,
    Resolved,
    dead_letter_summary,
    get_event,
    load_event_detail,
)
from m3bng.timestamps import iso_utc

__all__ = [
    "DeadLetterGroup",
    "EventDetail",
    "Page",
    "Resolved",
    "dead_letter_summary",
    "find_audit_entries",
    "find_dead_letters",
    "find_events",
    "get_event",
    "load_event_detail",
    "mapping_for",
    "parse_timestamp",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def parse_timestamp(name: str, value: str | None) -> datetime | None:
    """ISO 8601 (``2026-11-24``, ``2026-11-24T10:00:00Z``, ``…+01:00``); no zone means UTC."""
    if value is None or not value.strip():
        return None
    moment = iso_utc(value.strip())
    if moment is None:
        raise FilterError(
            f"{name}: {value!r} is not an ISO 8601 timestamp (e.g. 2026-11-24T10:00:00Z or 2026-11-24)"
        )
    return moment


def _page(keyset: KeysetPage[T]) -> Page[T]:
    next_before = keyset.next_before
    return Page(keyset.items, None if next_before is None else encode_cursor(next_before))


# -- transactions ---------------------------------------------------------------------------------


async def find_events(
    session: AsyncSession, flt: EventFilter, *, limit: int, cursor: str | None = None
) -> Page[Event]:
    return _page(await store.find_events(session, flt, limit=limit, before=decode_cursor(cursor)))


def mapping_for(mappings: Mapping[str, MappingFile], source: str, event_type: str) -> MappingFile | None:
    """The mapping file whose ``trigger:`` handles this event type from this source, as loaded now."""
    for mapping in mappings.values():
        if event_type in mapping.spec.trigger and mapping.spec.event_source == source:
            return mapping
    return None


# -- dead letters ---------------------------------------------------------------------------------


async def find_dead_letters(
    session: AsyncSession,
    flt: EventFilter,
    *,
    resolved: Resolved = "false",
    limit: int,
    cursor: str | None = None,
) -> Page[tuple[DeadLetter, Event]]:
    page = await store.find_dead_letters(
        session, flt, resolved=resolved, limit=limit, before=decode_cursor(cursor)
    )
    return _page(page)


# -- audit log ------------------------------------------------------------------------------------


async def find_audit_entries(
    session: AsyncSession,
    *,
    action: Sequence[str] = (),
    actor: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int,
    cursor: str | None = None,
) -> Page[AuditEntry]:
    page = await store.find_audit_entries(
        session,
        action=action,
        actor=actor,
        target_type=target_type,
        target_id=target_id,
        since=since,
        until=until,
        limit=limit,
        before=decode_cursor(cursor),
    )
    return _page(page)
