"""The queue and its leases: dedup insert, claim, lease renewal, checkpoints, outcome.

They are written out here, in one place, with why each is safe under concurrency.

Every write made on behalf of a running event is *fenced* by ``lease_owner``: a worker whose
lease has expired (it stalled, or was partitioned away) and whose event has been claimed by
another worker finds that its update matches no row, and gives up instead of overwriting the
newer outcome.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, text, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng import jsonfast
from m3bng.store.db import driver_connection, on_postgresql, single_statement
from m3bng.store.models import DEFAULT_INSTANCE, DeadLetter, Event, EventStatus, UTCDateTime
from m3bng.store.sql import is_sqlite, utcnow


@dataclass(frozen=True)
class NewEvent:
    source: str
    external_id: str
    event_type: str
    payload: Any
    business_key: str | None
    correlation_id: str
    instance: str = DEFAULT_INSTANCE  # keys are per instance: (instance, source, external_id)


# What identifies a stored event: its instance, source and external id.
EventKey = tuple[str, str, str]


@dataclass(frozen=True)
class ClaimedEvent:
    id: int
    source: str
    external_id: str
    event_type: str
    business_key: str | None
    payload: Any
    correlation_id: str
    attempts: int
    checkpoint: dict[str, Any]
    received_at: datetime
    instance: str = DEFAULT_INSTANCE


# Built once, with the values bound per call: an ORM ``insert(Event).values(...)`` built per
# request cost more CPU than everything else the ingest route does (docs/benchmarks.md).
_EVENTS = cast(Table, Event.__table__)
_INSERT_MANY = {
    name: dialect.insert(_EVENTS)
    .on_conflict_do_nothing(index_elements=["instance", "source", "external_id"])
    .returning(_EVENTS.c.id, _EVENTS.c.instance, _EVENTS.c.source, _EVENTS.c.external_id)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}


def _event_row(new: NewEvent, now: datetime) -> dict[str, Any]:
    return {
        "instance": new.instance,
        "source": new.source,
        "external_id": new.external_id,
        "event_type": new.event_type,
        "business_key": new.business_key,
        "payload": new.payload,
        "correlation_id": new.correlation_id,
        "status": EventStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "received_at": now,
        "updated_at": now,
        "checkpoint": {},
    }


async def insert_events_once(session: AsyncSession, news: Sequence[NewEvent]) -> list[tuple[int, bool]]:
    """``insert_event_once`` for several events in one statement (group commit, inbox/ingest.py):
    ``(event_id, created)`` per event, in order.

    The same arbiter: ``ON CONFLICT (instance, source, external_id) DO NOTHING`` with the key columns
    returned, so each inserted row is matched to its event by key, not by position. An event
    already stored, or repeated within the batch (only its first copy is created), reads its
    id afterwards in the same transaction.
    """
    now = utcnow()
    stmt = _INSERT_MANY[session.get_bind().dialect.name]
    result = await session.execute(stmt, [_event_row(new, now) for new in news])
    ids = {(row.instance, row.source, row.external_id): row.id for row in result}
    created = set(ids)
    missing = {(n.instance, n.source, n.external_id) for n in news} - created
    if missing:
        rows = await session.execute(
            select(_EVENTS.c.id, _EVENTS.c.instance, _EVENTS.c.source, _EVENTS.c.external_id).where(
                tuple_(_EVENTS.c.instance, _EVENTS.c.source, _EVENTS.c.external_id).in_(sorted(missing))
            )
        )
        ids.update({(row.instance, row.source, row.external_id): row.id for row in rows})
    return _in_order(news, ids, created)


def _in_order(
    news: Sequence[NewEvent], ids: Mapping[EventKey, int], created: set[EventKey]
) -> list[tuple[int, bool]]:
    """``(event_id, created)`` per event of the batch; a second copy of one in the same batch
    is a duplicate of the first."""
    out: list[tuple[int, bool]] = []
    for new in news:
        key = (new.instance, new.source, new.external_id)
        out.append((ids[key], key in created))
        created.discard(key)
    return out


# PostgreSQL's group commit as one statement straight on asyncpg: the batch as arrays, unnested
# into rows. Without BEGIN and COMMIT around it, the statement is its own transaction, so one
# round trip stores the batch atomically ("2xx only after commit" holds when it returns), with
# no session, statement compilation or per-row bind processing (docs/benchmarks.md, ingest).
_PG_INSERT_BATCH = """
INSERT INTO events (instance, source, external_id, event_type, business_key, payload, correlation_id,
                    status, attempts, next_attempt_at, received_at, updated_at, checkpoint)
SELECT i, s, x, t, k, p::jsonb, c, 'pending', 0, $7::timestamp, $7::timestamp, $7::timestamp, '{}'::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $8::text[])
     AS u(s, x, t, k, p, c, i)
ON CONFLICT (instance, source, external_id) DO NOTHING
RETURNING id, instance, source, external_id
"""
_PG_EXISTING = """
SELECT e.id, e.instance, e.source, e.external_id FROM events e
JOIN unnest($1::text[], $2::text[], $3::text[]) AS u(s, x, i)
  ON e.instance = u.i AND e.source = u.s AND e.external_id = u.x
"""


async def store_events(
    sessions: async_sessionmaker[AsyncSession], news: Sequence[NewEvent]
) -> list[tuple[int, bool]]:
    """Store a batch of inbound events, each once per (source, external_id), and commit:
    ``(event_id, created)`` per event, in order (the group commit of inbox/ingest.py).

    On PostgreSQL, one statement on the driver's connection (above); elsewhere
    ``insert_events_once`` in a transaction. Either way the batch is stored whole or not at all.
    """
    engine = sessions.kw["bind"]
    if engine.dialect.name != "postgresql":
        async with sessions.begin() as session:
            return await insert_events_once(session, news)
    async with driver_connection(sessions) as driver:  # discarded if the statement fails
        return await _pg_store(driver, news, utcnow().replace(tzinfo=None))


async def _pg_store(driver: Any, news: Sequence[NewEvent], now: datetime) -> list[tuple[int, bool]]:
    """The batch's INSERT, then the ids of the events that were stored before."""
    sources = [n.source for n in news]
    external_ids = [n.external_id for n in news]
    instances = [n.instance for n in news]
    rows = await driver.fetch(
        _PG_INSERT_BATCH,
        sources,
        external_ids,
        [n.event_type for n in news],
        [n.business_key for n in news],
        [jsonfast.dumps(n.payload) for n in news],
        [n.correlation_id for n in news],
        now,
        instances,
    )
    ids = {(row["instance"], row["source"], row["external_id"]): row["id"] for row in rows}
    created = set(ids)
    if len(created) < len(news):  # some were stored before (they committed: the conflict waited)
        for row in await driver.fetch(_PG_EXISTING, sources, external_ids, instances):
            ids.setdefault((row["instance"], row["source"], row["external_id"]), row["id"])
    return _in_order(news, ids, created)


async def insert_events_in(session: AsyncSession, news: Sequence[NewEvent]) -> list[tuple[int, bool]]:
    """``insert_events_once`` in the session's open transaction, with the events of other writes
    (the initial load stores a page's events with its digests and cursor): on PostgreSQL the
    group commit's one statement (``_pg_store``) on the transaction's connection, a third of
    the time of SQLAlchemy's insert of the same rows; elsewhere ``insert_events_once``."""
    if session.get_bind().dialect.name == "postgresql":
        conn = await session.connection()
        driver = (await conn.get_raw_connection()).driver_connection
        if driver is not None and driver.is_in_transaction():  # not yet: the driver autocommits
            return await _pg_store(driver, news, utcnow().replace(tzinfo=None))
    return await insert_events_once(session, news)


async def insert_event_once(session: AsyncSession, new: NewEvent) -> tuple[int, bool]:
    """Store an inbound event unless (source, external_id) is already there.

    Returns ``(event_id, created)``. ``INSERT … ON CONFLICT DO NOTHING`` makes the unique
    constraint the arbiter: of many concurrent deliveries of one id exactly one inserts, the
    others see no returned row and read the winner's id (which is committed by then, because the
    conflicting insert waited on the winner's transaction before reporting the conflict).
    """
    [result] = await insert_events_once(session, [new])
    return result


# Claim: pick due events and lease them in one statement.
#
# * An event is due when it is pending and its next attempt time has come, or when it is
#   processing under a lease that has expired (its worker died: the event is re-claimed
#   automatically, no cleanup job needed).
# * Per-key ordering: an event is skipped while an older event (lower id) with the same
#   business key is still open (pending or processing). Events without a key never wait.
#   Dead and done events do not block their key.
# * PostgreSQL: FOR UPDATE SKIP LOCKED lets concurrent workers pass over rows another claim is
#   locking, so two workers never lease the same row; a row that changed after this
#   statement's snapshot is re-checked against the WHERE clause once it is locked.
# * SQLite: the engine opens every transaction with BEGIN IMMEDIATE (store/db.py), so a claim
#   holds the database's write lock from its first read; claims are serialised, across
#   processes too.
# * A worker never claims an event it is still working on itself (``busy``): its lease can
#   expire while that attempt is stuck (the database was away), and the fence below is by
#   worker, so a second attempt in the same process could not be told from the first. Another
#   worker may take it over; the stuck attempt's writes then match no row.
#
# Several BNG instances (instances.py): keys and ordering are per instance, and the claim is
# *fair*: each instance's due events are ranked by age within that instance, and the claim takes
# the first of every instance before the second of any, instances with equal rank in the order
# the caller gives (workers rotate it). One instance's flood of old events therefore never holds
# back another instance's next event by more than one claim per instance with work
# (docs/instances.md). PostgreSQL reads each instance's head of line by its own index
# (``ix_events_instance_due``); SQLite ranks the due events with a window function.
_CLAIM_UPDATE = """
UPDATE events
SET status = 'processing',
    lease_owner = :owner,
    lease_expires_at = :lease_expires_at,
    attempts = attempts + 1,
    updated_at = :now
WHERE id IN ({pick})
RETURNING id, instance, source, external_id, event_type, business_key, payload, correlation_id,
          attempts, checkpoint, received_at
"""
# Due events come from two index range scans, each in claim order and stopped at the limit:
# pending ones whose time has come, and processing ones whose lease ran out. Written as one
# condition with OR, the planner could use neither index for the order and checked the per-key
# rule against every due event, so a claim cost time in proportion to the backlog (45 ms at
# 20,000 pending events; docs/benchmarks.md); as two scans it costs the same at any backlog.
_BRANCH = """
        SELECT e.id, e.next_attempt_at FROM events AS e
        WHERE {state} {only}
          AND {not_behind}
          {paused}
          {busy}
        ORDER BY e.next_attempt_at, e.id
        LIMIT :limit
        {lock}"""
# Per-key order: not while an older event of the same key and instance is still open.
_NOT_BEHIND = """NOT EXISTS (
            SELECT 1 FROM events AS prior
            WHERE prior.business_key = e.business_key
              AND prior.instance = e.instance
              AND prior.id < e.id
              AND prior.status IN ('pending', 'processing'))"""
_PENDING = "e.status = 'pending' AND e.next_attempt_at <= :now"
_EXPIRED = "e.status = 'processing' AND e.lease_expires_at <= :now"
_DUE = """
    SELECT due.id, due.next_attempt_at FROM (
        SELECT * FROM ({pending}) AS p
        UNION ALL
        SELECT * FROM ({expired}) AS x
    ) AS due
    ORDER BY due.next_attempt_at, due.id
    LIMIT :limit"""
_PICK_ANY = "SELECT head.id FROM ({due}) AS head"
# Each instance's head of line, read by its own index (``ix_events_instance_due``).
_PICK_FAIR_PG = """
    SELECT ranked.id FROM (
        SELECT pick.id, pick.next_attempt_at, i.ord,
               ROW_NUMBER() OVER (PARTITION BY i.ord ORDER BY pick.next_attempt_at, pick.id) AS turn
        FROM unnest(CAST(:instances AS text[])) WITH ORDINALITY AS i(name, ord)
        CROSS JOIN LATERAL ({due}) AS pick
    ) AS ranked
    ORDER BY ranked.turn, ranked.ord
    LIMIT :limit"""
# SQLite has no LATERAL: the due events of the instances asked for, ranked within each instance.
_PICK_FAIR_SQLITE = """
    SELECT ranked.id FROM (
        SELECT e.id, instr(:order, ',' || e.instance || ',') AS ord,
               ROW_NUMBER() OVER (PARTITION BY e.instance ORDER BY e.next_attempt_at, e.id) AS turn
        FROM events AS e
        WHERE e.instance IN :instances
          AND ((e.status = 'pending' AND e.next_attempt_at <= :now)
            OR (e.status = 'processing' AND e.lease_expires_at <= :now))
          AND {not_behind}
          {paused}
          {busy}
    ) AS ranked
    ORDER BY ranked.turn, ranked.ord
    LIMIT :limit"""

_CLAIM_COLUMNS = (
    Event.id,
    Event.instance,
    Event.source,
    Event.external_id,
    Event.event_type,
    Event.business_key,
    Event.payload,
    Event.correlation_id,
    Event.attempts,
    Event.checkpoint,
    Event.received_at,
)


def _claim_sql(dialect: str, *, with_paused: bool, with_busy: bool, mode: str, arrays: bool = False) -> str:
    """The claim's SQL with named parameters. ``arrays``: the lists (paused flows, busy events)
    as one array parameter each, for asyncpg (``_pg_claim``), instead of SQLAlchemy's expanding
    ``IN``."""
    # Paused flows (ops control): their events stay pending, untouched, until resumed.
    paused = "AND e.event_type NOT IN :paused" if with_paused else ""
    busy = "AND e.id NOT IN :busy" if with_busy else ""
    if arrays:
        paused = "AND e.event_type <> ALL(CAST(:paused AS text[]))" if with_paused else ""
        busy = "AND e.id <> ALL(CAST(:busy AS bigint[]))" if with_busy else ""
    if mode == "fair" and dialect == "sqlite":
        pick = _PICK_FAIR_SQLITE.format(not_behind=_NOT_BEHIND, paused=paused, busy=busy)
    else:
        lock = "FOR UPDATE OF e SKIP LOCKED" if dialect == "postgresql" else ""
        only = {"any": "", "one": "AND e.instance = :instance", "fair": "AND e.instance = i.name"}[mode]
        due = _DUE.format(
            pending=_BRANCH.format(
                state=_PENDING, only=only, not_behind=_NOT_BEHIND, paused=paused, busy=busy, lock=lock
            ),
            expired=_BRANCH.format(
                state=_EXPIRED, only=only, not_behind=_NOT_BEHIND, paused=paused, busy=busy, lock=lock
            ),
        )
        pick = (_PICK_FAIR_PG if mode == "fair" else _PICK_ANY).format(due=due)
    return _CLAIM_UPDATE.format(pick=pick)


def _claim_statement(dialect: str, *, with_paused: bool, with_busy: bool, mode: str) -> Any:
    """``mode``: ``any`` (every instance, oldest first), ``one`` (one instance) or ``fair``."""
    params = [bindparam("now", type_=UTCDateTime()), bindparam("lease_expires_at", type_=UTCDateTime())]
    if mode == "fair" and dialect == "sqlite":
        params.append(bindparam("instances", expanding=True))
    if with_paused:
        params.append(bindparam("paused", expanding=True))
    if with_busy:
        params.append(bindparam("busy", expanding=True))
    sql = _claim_sql(dialect, with_paused=with_paused, with_busy=with_busy, mode=mode)
    return text(sql).bindparams(*params).columns(*_CLAIM_COLUMNS)


_NAMED = re.compile(r"(?<!:):([a-z_]+)")


def _positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """``sql`` with ``:name`` parameters as asyncpg's ``$n``, and the names in their order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _NAMED.sub(number, sql), tuple(names)


# The claim on asyncpg (``claim``): the JSON columns as text, read by the store's own parser.
_PG_CLAIMS = {
    (with_paused, with_busy, mode): _positional(
        _claim_sql("postgresql", with_paused=with_paused, with_busy=with_busy, mode=mode, arrays=True)
        .replace("payload, correlation_id", "payload::text AS payload, correlation_id")
        .replace("checkpoint, received_at", "checkpoint::text AS checkpoint, received_at")
    )
    for with_paused in (False, True)
    for with_busy in (False, True)
    for mode in ("any", "one", "fair")
}


_CLAIM_STATEMENTS = {
    (dialect, with_paused, with_busy, mode): _claim_statement(
        dialect, with_paused=with_paused, with_busy=with_busy, mode=mode
    )
    for dialect in ("postgresql", "sqlite")
    for with_paused in (False, True)
    for with_busy in (False, True)
    for mode in ("any", "one", "fair")
}


@dataclass(frozen=True)
class ClaimRequest:
    """What a worker asks a claim for. ``instances``: only these instances' events, fairly
    (above), those first in the list first among equals; None: any instance, oldest first."""

    owner: str
    limit: int
    lease_seconds: float
    paused_types: Sequence[str] = ()
    busy: Sequence[int] = ()
    instances: Sequence[str] | None = None

    def shape(self) -> tuple[bool, bool, str]:
        """Which of the prebuilt statements: (with paused flows, with busy events, mode)."""
        names = list(self.instances or ())
        mode = "any" if self.instances is None else "one" if len(names) == 1 else "fair"
        return bool(self.paused_types), bool(self.busy), mode

    def params(self) -> dict[str, Any]:
        """The statement's parameters by name (times aware UTC)."""
        now = utcnow()
        names = list(self.instances or ())
        params: dict[str, Any] = {
            "owner": self.owner,
            "now": now,
            "lease_expires_at": now + timedelta(seconds=self.lease_seconds),
            "limit": self.limit,
        }
        mode = self.shape()[2]
        if mode == "one":
            params["instance"] = names[0]
        elif mode == "fair":
            params["instances"] = names
            params["order"] = "," + ",".join(names) + ","
        if self.paused_types:
            params["paused"] = list(self.paused_types)
        if self.busy:
            params["busy"] = list(self.busy)
        return params


def _claimed(rows: Any, json: Callable[[Any], Any], time: Callable[[Any], Any]) -> list[ClaimedEvent]:
    """The claimed rows as events, by id; ``json`` reads the JSON columns, ``time`` the times."""
    claimed = [
        ClaimedEvent(
            id=row["id"],
            source=row["source"],
            external_id=row["external_id"],
            event_type=row["event_type"],
            business_key=row["business_key"],
            payload=json(row["payload"]),
            correlation_id=row["correlation_id"],
            attempts=row["attempts"],
            checkpoint=dict(json(row["checkpoint"]) or {}),
            received_at=time(row["received_at"]),
            instance=row["instance"],
        )
        for row in rows
    ]
    claimed.sort(key=lambda ev: ev.id)
    return claimed


def _json_or_none(text: str | None) -> Any:
    return None if text is None else jsonfast.loads(text)


def _as_is(value: Any) -> Any:
    return value


def _aware(naive_utc: datetime) -> datetime:
    """A time as asyncpg reads it (naive, the store's UTC: models.UTCDateTime) made aware."""
    return naive_utc.replace(tzinfo=UTC)


async def claim(sessions: async_sessionmaker[AsyncSession], request: ClaimRequest) -> list[ClaimedEvent]:
    """``claim_due_events`` as a statement of its own, outside any transaction: on PostgreSQL
    straight on asyncpg's connection (a worker claims about once per event it finishes, and
    through a session the claim cost a twentieth of its CPU), elsewhere in a
    ``single_statement`` session (a transaction on SQLite, which the claim needs there)."""
    if not on_postgresql(sessions):
        async with single_statement(sessions) as session:
            return await claim_events(session, request)
    if request.instances is not None and not request.instances:
        return []  # every instance paused
    sql, order = _PG_CLAIMS[request.shape()]
    params = request.params()
    params["now"], params["lease_expires_at"] = (
        params["now"].replace(tzinfo=None),
        params["lease_expires_at"].replace(tzinfo=None),
    )
    async with driver_connection(sessions) as driver:
        rows = await driver.fetch(sql, *(params[name] for name in order))
    return _claimed(rows, _json_or_none, _aware)


async def claim_events(session: AsyncSession, request: ClaimRequest) -> list[ClaimedEvent]:
    """Lease up to ``request.limit`` due events, in the session's transaction."""
    if request.instances is not None and not request.instances:
        return []  # every instance paused
    stmt = _CLAIM_STATEMENTS[(session.get_bind().dialect.name, *request.shape())]
    result = await session.execute(stmt, request.params())
    return _claimed(result.mappings(), _as_is, _as_is)


async def claim_due_events(
    session: AsyncSession,
    owner: str,
    limit: int,
    lease_seconds: float,
    *,
    paused_types: Sequence[str] = (),
    busy: Sequence[int] = (),
    instances: Sequence[str] | None = None,
) -> list[ClaimedEvent]:
    """Lease up to ``limit`` due events (``ClaimRequest``) in the session's transaction."""
    request = ClaimRequest(owner, limit, lease_seconds, paused_types, busy, instances)
    return await claim_events(session, request)


async def renew_leases(
    session: AsyncSession, owner: str, event_ids: Sequence[int], lease_seconds: float
) -> set[int]:
    """Extend the leases this worker still holds; returns the ids it still owns."""
    if not event_ids:
        return set()
    result = await session.execute(
        update(_EVENTS)
        .where(
            _EVENTS.c.id.in_(list(event_ids)),
            _EVENTS.c.lease_owner == owner,
            _EVENTS.c.status == EventStatus.PROCESSING.value,
        )
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
        .returning(_EVENTS.c.id)
    )
    return set(result.scalars())


def fenced(event_id: int, owner: str) -> Any:
    # A Core UPDATE of the table, not of the ORM entity: the ORM's bulk-update path (it evaluates
    # the WHERE clause against objects in the session) cost more CPU than the round trip, and a
    # worker writes one of these per checkpoint.
    return update(_EVENTS).where(
        _EVENTS.c.id == event_id,
        _EVENTS.c.lease_owner == owner,
        _EVENTS.c.status == EventStatus.PROCESSING.value,
    )


# The same fenced UPDATE, built once: the columns it sets are the keys of the parameters it is
# executed with (SQLAlchemy derives the SET clause from them), so no statement is built per write.
_FENCED_UPDATES = {
    column.key: update(_EVENTS)
    .where(
        _EVENTS.c.id == bindparam("fence_id"),
        _EVENTS.c.lease_owner == bindparam("fence_owner"),
        _EVENTS.c.status == EventStatus.PROCESSING.value,
    )
    .returning(column)
    for column in (_EVENTS.c.id, _EVENTS.c.attempts)
}


async def _fenced_write(
    session: AsyncSession, event_id: int, owner: str, values: Mapping[str, Any], returning: str = "id"
) -> Any:
    """Set ``values`` on the event while ``owner`` holds its lease; the ``returning`` column, or
    None when the lease is gone."""
    params = {**values, "fence_id": event_id, "fence_owner": owner}
    result = await session.execute(_FENCED_UPDATES[returning], params)
    return result.scalar_one_or_none()


# Every outcome write takes ``row``: more columns of the event to set in the same fenced UPDATE
# (the flow's checkpoints and mapping version, FlowContext.event_row), one statement, not two.
EventRow = Mapping[str, Any] | None


@dataclass(frozen=True)
class Outcome:
    """An event's outcome as data: what its fenced UPDATE sets, and for a dead letter the row
    that goes with it. Built here once, written by either store path: a transaction through
    SQLAlchemy (``write_outcome``) or, on PostgreSQL, one statement on the driver
    (store/fenced.py), so both write the same columns."""

    name: str  # mark_done, reschedule …: what the logs call it
    values: Mapping[str, Any]
    refund_attempt: bool = False  # attempts = attempts - 1 (never below 0), in the same UPDATE
    dead_letter: Mapping[str, Any] | None = None  # its ``attempts`` is the fenced row's


def _closing(
    status: EventStatus, error_class: str | None, error: str | None, row: EventRow
) -> dict[str, Any]:
    now = utcnow()
    return {
        **(row or {}),
        "status": status.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "finished_at": now,
        "updated_at": now,
        "last_error": error,
        "error_class": error_class,
    }


def done(*, row: EventRow = None) -> Outcome:
    return Outcome("mark_done", _closing(EventStatus.DONE, None, None, row))


def skipped(*, reason: str, error_class: str, row: EventRow = None) -> Outcome:
    """An event deliberately not applied (stale, echo, unsupported), saying why."""
    return Outcome("mark_skipped", _closing(EventStatus.SKIPPED, error_class, reason, row))


def held(*, reason: str, row: EventRow = None) -> Outcome:
    """Stopped by an anomaly rule before anything was sent: ``held`` is claimed by no worker; a
    person releases or discards it (ops/holds.py). The event keeps its payload."""
    return Outcome("mark_held", _closing(EventStatus.HELD, "anomaly", reason, row))


def rescheduled(
    *,
    delay_seconds: float,
    error_class: str | None,
    error: str | None,
    refund_attempt: bool = False,
    row: EventRow = None,
) -> Outcome:
    """Back in line for a later attempt. ``refund_attempt`` gives back the attempt taken by the
    claim: used when the target was unavailable (nothing was tried) or the worker is shutting down."""
    now = utcnow()
    values: dict[str, Any] = {
        **(row or {}),
        "status": EventStatus.PENDING.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "next_attempt_at": now + timedelta(seconds=delay_seconds),
        "updated_at": now,
    }
    if error_class is not None:
        values["error_class"] = error_class
        values["last_error"] = error
    return Outcome("reschedule", values, refund_attempt=refund_attempt)


def dead(
    *,
    reason: str,
    error_class: str | None,
    error: str | None,
    failed_step_id: int | None,
    row: EventRow = None,
) -> Outcome:
    """To the dead letters; the event row keeps its original payload."""
    values = _closing(EventStatus.DEAD, error_class, error, row)
    letter = {
        "reason": reason,
        "error_class": error_class,
        "error": error,
        "failed_step_id": failed_step_id,
        "created_at": values["finished_at"],
    }
    return Outcome("dead_letter", values, dead_letter=letter)


async def write_outcome(session: AsyncSession, event_id: int, owner: str, outcome: Outcome) -> bool:
    """``outcome`` in the session's transaction, fenced by ``owner``'s lease; False (nothing
    written) when the lease is gone."""
    if outcome.refund_attempt:
        attempts = (
            func.max(Event.attempts - 1, 0) if is_sqlite(session) else func.greatest(Event.attempts - 1, 0)
        )
        result = await session.execute(
            fenced(event_id, owner).values(**outcome.values, attempts=attempts).returning(_EVENTS.c.id)
        )
        return result.scalar_one_or_none() is not None
    if outcome.dead_letter is None:
        return await _fenced_write(session, event_id, owner, outcome.values) is not None
    attempts = await _fenced_write(session, event_id, owner, outcome.values, returning="attempts")
    if attempts is None:
        return False
    await session.execute(
        insert(DeadLetter).values(event_id=event_id, attempts=attempts, **outcome.dead_letter)
    )
    return True


def checkpoint_values(checkpoint: dict[str, Any] | None, row: EventRow) -> dict[str, Any]:
    """What a checkpoint's fenced UPDATE sets: ``row``'s columns and the checkpoints (``None``:
    unchanged)."""
    values: dict[str, Any] = {**(row or {}), "updated_at": utcnow()}
    if checkpoint is not None:
        values["checkpoint"] = checkpoint
    return values


async def save_checkpoint(
    session: AsyncSession,
    event_id: int,
    owner: str,
    checkpoint: dict[str, Any] | None,
    *,
    row: EventRow = None,
) -> bool:
    """Store the flow's checkpoints (``None``: unchanged) and ``row``'s columns, fenced."""
    return await _fenced_write(session, event_id, owner, checkpoint_values(checkpoint, row)) is not None
