"""Mapping versions and start-up conflicts: the SQL behind ops/mapping_versions.py.

Numbers are per flow and never reused. Two writers racing for the same number, or for the one
live row of a flow, meet a unique constraint; that surfaces here as ``VersionClash`` (no
SQLAlchemy type leaves the store) and the caller retries against the state that won.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.errors import Conflict
from m3bng.store.models import MappingConflict, MappingVersionRow
from m3bng.store.sql import upsert, utcnow

SOURCES = ("file", "studio", "bundle")
DRAFT, LIVE, SUPERSEDED = "draft", "live", "superseded"


class VersionClash(Conflict):
    """Another process wrote the same version number, or made another version live, first."""

    code = "version_clash"


@dataclass(frozen=True)
class Version:
    id: int
    flow: str
    version: int
    file_name: str
    text: str
    content_hash: str
    source: str
    state: str
    comment: str | None
    author: str
    file_hash: str | None
    based_on: int | None
    created_at: datetime
    published_at: datetime | None


@dataclass(frozen=True)
class ConflictRow:
    flow: str
    file_name: str
    file_hash: str
    content_hash: str
    live_version: int
    file_version: int | None
    detected_at: datetime


def _version(row: MappingVersionRow) -> Version:
    return Version(
        id=row.id,
        flow=row.flow,
        version=row.version,
        file_name=row.file_name,
        text=row.text,
        content_hash=row.content_hash,
        source=row.source,
        state=row.state,
        comment=row.comment,
        author=row.author,
        file_hash=row.file_hash,
        based_on=row.based_on,
        created_at=row.created_at,
        published_at=row.published_at,
    )


async def live_versions(session: AsyncSession) -> dict[str, Version]:
    rows = await session.scalars(select(MappingVersionRow).where(MappingVersionRow.state == LIVE))
    return {row.flow: _version(row) for row in rows}


async def live_version(session: AsyncSession, flow: str) -> Version | None:
    row = await session.scalar(
        select(MappingVersionRow).where(MappingVersionRow.flow == flow, MappingVersionRow.state == LIVE)
    )
    return _version(row) if row is not None else None


async def list_versions(session: AsyncSession, flow: str) -> list[Version]:
    """Newest first."""
    rows = await session.scalars(
        select(MappingVersionRow)
        .where(MappingVersionRow.flow == flow)
        .order_by(MappingVersionRow.version.desc())
    )
    return [_version(row) for row in rows]


async def get_version(session: AsyncSession, flow: str, version: int) -> Version | None:
    row = await session.scalar(
        select(MappingVersionRow).where(MappingVersionRow.flow == flow, MappingVersionRow.version == version)
    )
    return _version(row) if row is not None else None


async def find_by_hash(session: AsyncSession, content_hash: str) -> Version | None:
    """The version an event's ``mapping_hash`` names: of several with the same text (a rollback
    copies one), the one published last, else the newest."""
    row = await session.scalar(
        select(MappingVersionRow)
        .where(MappingVersionRow.content_hash == content_hash)
        .order_by(MappingVersionRow.published_at.desc().nulls_last(), MappingVersionRow.id.desc())
        .limit(1)
    )
    return _version(row) if row is not None else None


async def last_from_file(session: AsyncSession, flow: str) -> Version | None:
    """The newest version known to have been in the mapping file (imported from it or found in it)."""
    row = await session.scalar(
        select(MappingVersionRow)
        .where(MappingVersionRow.flow == flow, MappingVersionRow.file_hash.is_not(None))
        .order_by(MappingVersionRow.version.desc())
        .limit(1)
    )
    return _version(row) if row is not None else None


async def draft_counts(session: AsyncSession) -> dict[str, int]:
    rows = await session.execute(
        select(MappingVersionRow.flow, func.count())
        .where(MappingVersionRow.state == DRAFT)
        .group_by(MappingVersionRow.flow)
    )
    return {flow: int(count) for flow, count in rows}


async def publication_mark(session: AsyncSession) -> tuple[int, datetime | None]:
    """Changes whenever any version is published: (how many ever were, the latest time). Cheap
    enough for every worker process to ask every few seconds."""
    row = (
        await session.execute(
            select(func.count(MappingVersionRow.published_at), func.max(MappingVersionRow.published_at))
        )
    ).one()
    return int(row[0]), row[1]


async def add_version(
    session: AsyncSession,
    *,
    flow: str,
    file_name: str,
    text: str,
    content_hash: str,
    source: str,
    state: str,
    author: str,
    comment: str | None = None,
    file_hash: str | None = None,
    based_on: int | None = None,
    replaces: int | None = None,
) -> Version:
    """A new version numbered after the flow's last; ``state=live`` supersedes the live one.

    ``replaces``: the live version the caller based its decision on (None: there was none); a
    different one live now raises ``VersionClash``, as does a concurrent writer that took the
    number (or the live row) first. The transaction is then spoilt (no savepoint: SQLite's
    driver handles them poorly), and the caller retries in a fresh one."""
    if source not in SOURCES:
        raise ValueError(f"source: {source!r} is not one of {', '.join(SOURCES)}")
    now = utcnow()
    try:
        if state == LIVE:
            superseded = await _supersede(session, flow)
            if superseded != ([replaces] if replaces is not None else []):
                # The live version changed since the caller decided (another process imported
                # or published meanwhile): decide again on what is live now.
                raise VersionClash(
                    f"flow {flow}: the live version is {superseded or 'none'}, not {replaces or 'none'}"
                )
        number = await session.scalar(
            select(func.coalesce(func.max(MappingVersionRow.version), 0)).where(
                MappingVersionRow.flow == flow
            )
        )
        new_id = await session.scalar(
            insert(MappingVersionRow)
            .values(
                flow=flow,
                version=int(number or 0) + 1,
                file_name=file_name,
                text=text,
                content_hash=content_hash,
                source=source,
                state=state,
                comment=comment,
                author=author[:128],
                file_hash=file_hash,
                based_on=based_on,
                created_at=now,
                published_at=now if state == LIVE else None,
            )
            .returning(MappingVersionRow.id)
        )
    except IntegrityError as exc:
        raise VersionClash(f"flow {flow}: another process wrote a version at the same time") from exc
    row = await session.scalar(select(MappingVersionRow).where(MappingVersionRow.id == new_id))
    assert row is not None
    return _version(row)


async def publish(
    session: AsyncSession, flow: str, version: int, *, comment: str | None, author: str
) -> Version:
    """Make a draft the flow's live version; the live one becomes superseded."""
    try:
        await _supersede(session, flow)
        await session.execute(
            update(MappingVersionRow)
            .where(MappingVersionRow.flow == flow, MappingVersionRow.version == version)
            .values(state=LIVE, published_at=utcnow(), comment=comment, author=author[:128])
        )
    except IntegrityError as exc:
        raise VersionClash(f"flow {flow}: another version was published at the same time") from exc
    found = await get_version(session, flow, version)
    assert found is not None
    return found


async def _supersede(session: AsyncSession, flow: str) -> list[int]:
    """The flow's live version superseded; the numbers it had (none or one)."""
    rows = await session.scalars(
        update(MappingVersionRow)
        .where(MappingVersionRow.flow == flow, MappingVersionRow.state == LIVE)
        .values(state=SUPERSEDED)
        .returning(MappingVersionRow.version)
    )
    return sorted(rows)


async def retire(session: AsyncSession, flow: str, version: int) -> bool:
    """The flow's live version (if it is still ``version``) superseded, none taking its place."""
    result = await session.execute(
        update(MappingVersionRow)
        .where(
            MappingVersionRow.flow == flow,
            MappingVersionRow.version == version,
            MappingVersionRow.state == LIVE,
        )
        .values(state=SUPERSEDED)
    )
    return bool(getattr(result, "rowcount", 0))


async def note_file_hash(session: AsyncSession, version_id: int, file_hash: str) -> None:
    """The mapping file was found to hold this version's text (e.g. after an export)."""
    await session.execute(
        update(MappingVersionRow).where(MappingVersionRow.id == version_id).values(file_hash=file_hash)
    )


async def put_conflict(
    session: AsyncSession,
    *,
    flow: str,
    file_name: str,
    file_hash: str,
    content_hash: str,
    live_version: int,
    file_version: int | None,
) -> None:
    await session.execute(
        upsert(
            session,
            MappingConflict,
            ["flow"],
            {
                "flow": flow,
                "file_name": file_name,
                "file_hash": file_hash,
                "content_hash": content_hash,
                "live_version": live_version,
                "file_version": file_version,
                "detected_at": utcnow(),
            },
        )
    )


async def clear_conflict(session: AsyncSession, flow: str) -> None:
    await session.execute(delete(MappingConflict).where(MappingConflict.flow == flow))


async def conflicts(session: AsyncSession) -> dict[str, ConflictRow]:
    rows = await session.scalars(select(MappingConflict).order_by(MappingConflict.flow))
    return {
        row.flow: ConflictRow(
            flow=row.flow,
            file_name=row.file_name,
            file_hash=row.file_hash,
            content_hash=row.content_hash,
            live_version=row.live_version,
            file_version=row.file_version,
            detected_at=row.detected_at,
        )
        for row in rows
    }
