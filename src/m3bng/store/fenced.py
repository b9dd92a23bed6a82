"""A flow's durable write as one statement on PostgreSQL, straight on asyncpg.

A durable write (a checkpoint, an event's outcome) is the event row's fenced UPDATE (store/
queue.py) with whatever rode along: the successful steps' rows, the deferred writes of the
flow (a cross-reference, what BNG holds, the version applied), and with an outcome the event's
keys and its dead letter. Through an SQLAlchemy session that was a transaction: ``BEGIN``, a
statement each, ``COMMIT``, every one a round trip, and the session's machinery around each;
the three of an order were most of a worker's time in the database (docs/benchmarks.md).

Here the same writes are the common table expressions of one statement. PostgreSQL applies a
statement atomically on its own, so without ``BEGIN`` and ``COMMIT`` it is one round trip, and
all of it or none of it is stored, as in the transaction:

* the fence: ``UPDATE events … WHERE id = … AND lease_owner = … AND status = 'processing'
  RETURNING id``; the statement answers whether it matched (False: the lease is lost);
* the steps' rows and the deferred writes are stored whether or not it matched, as the
  transaction did (the steps happened; the lost lease is reported by the answer);
* the event's keys and the dead letter only if it matched (they read the fence's row).

Every CTE of a statement sees the same snapshot and none sees another's rows, so a statement
never holds two writes of one row (``Part.key``: the caller falls back to a transaction then).
SQLite, and a deferred write with no statement form, keep the SQLAlchemy transaction.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import JSON, Table
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng import jsonfast
from m3bng.store.models import Event, UTCDateTime

_EVENTS = cast(Table, Event.__table__)


@dataclass(frozen=True)
class Part:
    """One write in a fenced write's statement: ``ctes`` are the bodies of its common table
    expressions, which share the part's parameters ``$1`` … (``args``, in order) and name the
    one before them ``__prev__`` (a write of two steps, such as moving a cross-reference).
    ``key`` names the row it writes: two parts with one key are never in one statement."""

    ctes: tuple[str, ...]
    args: tuple[Any, ...]
    key: tuple[Any, ...]


@dataclass(frozen=True)
class Deferred:
    """A write that rides with a flow's next durable write: ``write`` in a transaction (SQLite,
    or beside a write without a statement form), ``part`` in the one statement on PostgreSQL
    (None: none, the durable write then takes a transaction)."""

    write: Callable[[AsyncSession], Awaitable[Any]]
    part: Part | None = None

    async def __call__(self, session: AsyncSession) -> Any:
        return await self.write(session)


def one_statement(parts: Sequence[Part | None]) -> bool:
    """Whether these deferred writes can ride in one statement: each has a statement form, and
    no two write the same row."""
    keys = [part.key for part in parts if part is not None]
    return len(keys) == len(parts) and len(set(keys)) == len(keys)


def naive_utc(value: datetime | None) -> datetime | None:
    """A time as the store keeps it (naive UTC, store/models.UTCDateTime)."""
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None)


def json_text(value: Any) -> str:
    """A JSON column's value as text, for ``$n::text::jsonb`` (SQLAlchemy's serializer: None is
    JSON ``null``, as the JSON columns store it)."""
    return jsonfast.dumps(value)


# What each event column's parameter needs: JSON goes as text, times as naive UTC.
_JSON_COLUMNS = frozenset(c.key for c in _EVENTS.c if isinstance(c.type, JSON))
_TIME_COLUMNS = frozenset(c.key for c in _EVENTS.c if isinstance(c.type, UTCDateTime))
_PARAM = re.compile(r"\$(\d+)")


def _rebased(sql: str, offset: int) -> str:
    """A part's SQL with its parameters ``$1`` … renumbered after the ``offset`` before it."""
    return _PARAM.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


def _event_set(values: Mapping[str, Any], first: int) -> tuple[str, list[Any]]:
    """The SET list of the fenced UPDATE, parameters from ``$first``; only the table's columns."""
    sets: list[str] = []
    args: list[Any] = []
    for n, (column, value) in enumerate(values.items(), start=first):
        name = _EVENTS.c[column].name  # KeyError for anything that is not a column
        if column in _JSON_COLUMNS:
            sets.append(f"{name} = ${n}::text::jsonb")
            args.append(json_text(value))
        elif column in _TIME_COLUMNS:
            sets.append(f"{name} = ${n}::timestamp")
            args.append(naive_utc(value))
        else:
            sets.append(f"{name} = ${n}")
            args.append(value)
    return ", ".join(sets), args


_STEPS_INSERT = """INSERT INTO steps (event_id, attempt, name, target, operation, request, response,
                   status, error_class, error, duration_ms, started_at)
SELECT e, a, n, t, o, q::jsonb, r::jsonb, s, c, x, d, w
FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::float8[], $12::timestamp[])
     AS u(e, a, n, t, o, q, r, s, c, x, d, w)"""
_STEP_COLUMNS = ("event_id", "attempt", "name", "target", "operation")
_KEYS_INSERT = """INSERT INTO event_keys (event_id, value, kind)
SELECT fence.id, u.v, u.k FROM fence, unnest($1::text[], $2::text[]) AS u(v, k)
ON CONFLICT DO NOTHING"""
_DEAD_LETTER_INSERT = """INSERT INTO dead_letters (event_id, reason, error_class, error, failed_step_id,
                          attempts, created_at)
SELECT fence.id, $1::text, $2::text, $3::text, $4::bigint, fence.attempts, $5::timestamp FROM fence"""


def steps_part(rows: Sequence[Mapping[str, Any]]) -> Part:
    """The successful steps' rows, one INSERT of the rows as arrays (as the ingest's batch)."""
    args: list[Any] = [[row[c] for row in rows] for c in _STEP_COLUMNS]
    args += [
        [json_text(row["request"]) for row in rows],
        [json_text(row["response"]) for row in rows],
        [row["status"] for row in rows],
        [row["error_class"] for row in rows],
        [row["error"] for row in rows],
        [float(row["duration_ms"]) for row in rows],
        [naive_utc(row["started_at"]) for row in rows],
    ]
    return Part((_STEPS_INSERT,), tuple(args), ("steps",))


@dataclass(frozen=True)
class FencedWrite:
    """One durable write of an event (module docstring). ``values``: the event row's columns to
    set, fenced by ``owner``'s lease (None: no UPDATE, the statement answers True);
    ``refund_attempt``: attempts - 1 in the same UPDATE; ``keys`` (value → kind) and
    ``dead_letter`` are written only when the fence matched."""

    event_id: int
    owner: str
    values: Mapping[str, Any] | None
    parts: Sequence[Part] = ()
    refund_attempt: bool = False
    keys: Mapping[str, str] | None = None
    dead_letter: Mapping[str, Any] | None = None

    def statement(self) -> tuple[str, list[Any]]:
        """The SQL and its arguments."""
        ctes: list[str] = []
        args: list[Any] = []
        if self.values is not None:
            sets, set_args = _event_set(self.values, 3)
            if self.refund_attempt:
                sets += ", attempts = greatest(attempts - 1, 0)"
            # Only the table's own column names are put in the text (``_event_set``), never a value.
            fence = f"fence AS (UPDATE events SET {sets} WHERE id = $1 AND lease_owner = $2"  # noqa: S608
            ctes.append(f"{fence} AND status = 'processing' RETURNING id, attempts)")
            args += [self.event_id, self.owner, *set_args]
        parts = list(self.parts)
        if self.values is not None and self.keys:
            parts.append(Part((_KEYS_INSERT,), (list(self.keys), list(self.keys.values())), ("event_keys",)))
        if self.values is not None and self.dead_letter is not None:
            letter = self.dead_letter
            parts.append(
                Part(
                    (_DEAD_LETTER_INSERT,),
                    (
                        letter["reason"],
                        letter["error_class"],
                        letter["error"],
                        letter["failed_step_id"],
                        naive_utc(letter["created_at"]),
                    ),
                    ("dead_letters",),
                )
            )
        for part in parts:
            previous, offset = "", len(args)
            for body in part.ctes:
                name = f"w{len(ctes)}"
                ctes.append(f"{name} AS ({_rebased(body, offset).replace('__prev__', previous)})")
                previous = name
            args += part.args
        if not ctes:
            return "SELECT true", []
        answer = "SELECT EXISTS (SELECT 1 FROM fence)" if self.values is not None else "SELECT true"
        return f"WITH {', '.join(ctes)}\n{answer}", args

    async def run(self, driver: Any) -> bool:
        """Send the statement on an asyncpg connection in autocommit; whether the fence matched."""
        sql, args = self.statement()
        return bool(await driver.fetchval(sql, *args))
