"""What every repository module shares: the clock and the dialect-specific INSERT forms.

PostgreSQL and SQLite both have ``ON CONFLICT``; these build it for whichever is in use, so a
repository writes one statement for both.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def utcnow() -> datetime:
    return datetime.now(UTC)


def is_sqlite(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def dialect_insert(session: AsyncSession, table: Any) -> Any:
    """The dialect's INSERT, which has ON CONFLICT (PostgreSQL and SQLite both)."""
    return (sqlite if is_sqlite(session) else postgresql).insert(table)


def upsert(session: AsyncSession, table: Any, keys: list[str], values: dict[str, Any]) -> Any:
    """INSERT … ON CONFLICT (keys) DO UPDATE: one statement, safe against a concurrent writer."""
    statement = dialect_insert(session, table).values(**values)
    changes = {name: statement.excluded[name] for name in values if name not in keys}
    return statement.on_conflict_do_update(index_elements=keys, set_=changes)


def insert_ignore(session: AsyncSession, table: Any, values: dict[str, Any]) -> Any:
    """INSERT … ON CONFLICT DO NOTHING (the row may exist already)."""
    return dialect_insert(session, table).values(**values).on_conflict_do_nothing()


DIALECTS = {"postgresql": postgresql, "sqlite": sqlite}


def upserts(table: Any, keys: list[str], columns: list[str]) -> dict[str, Any]:
    """``upsert`` built once per dialect, with the values bound per call: for statements that
    run for most events, where building one per call costs more CPU than running it."""
    out = {}
    for name, dialect in DIALECTS.items():
        statement = dialect.insert(table)
        out[name] = statement.on_conflict_do_update(
            index_elements=keys, set_={c: statement.excluded[c] for c in columns}
        )
    return out


def inserts_ignoring(table: Any) -> dict[str, Any]:
    """``insert_ignore`` built once per dialect (see ``upserts``)."""
    return {name: dialect.insert(table).on_conflict_do_nothing() for name, dialect in DIALECTS.items()}


def dialect_name(session: AsyncSession) -> str:
    return session.get_bind().dialect.name
