"""Tables of the store.

The same schema runs on SQLite (the default file store and the sandbox) and PostgreSQL
(production). Types are chosen so that both behave alike: timestamps are stored as naive UTC and
handed back timezone-aware, JSON is JSONB on PostgreSQL and JSON text on SQLite.

Life cycle of an event (``events.status``)::

    pending ──claim──▶ processing ──▶ done
       ▲                   │ transient error / lease expired
       └───────────────────┘
                           │ permanent error / retries exhausted
                           ▼
                          dead ──replay──▶ pending          dead ──discard──▶ discarded

    processing ──▶ skipped   (stale BOD variation, echo of our own write, unsupported BOD noun)

    processing ──▶ held ──release──▶ pending (the hold bypassed for it)
                     └──discard──▶ discarded      (an anomaly rule held it before any M3 call)
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC: SQLite has no time zones and mixing breaks comparisons."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


# BigInteger primary keys do not autoincrement on SQLite; INTEGER PRIMARY KEY is its rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


class EventStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    DEAD = "dead"
    DISCARDED = "discarded"
    # Looked at and deliberately not applied: a stale BOD variation, an echo of m3bng's own
    # write, a BOD noun no flow handles. ``last_error`` says which; nothing was sent.
    SKIPPED = "skipped"
    # Stopped by an anomaly rule before anything was sent (flows/runtime/anomalies.py): waits for
    # a person to release or discard it; workers never claim it.
    HELD = "held"


DEFAULT_INSTANCE = "default"  # the single-instance settings' BNG (instances.py)
InstanceId = String(32)

# Statuses that still hold their place in a business key's queue (see store/queue.py).
OPEN_STATUSES = (EventStatus.PENDING.value, EventStatus.PROCESSING.value)
# Statuses of events still waiting to be applied: the open ones, and those held for a person
# (anomaly holds). Retention never purges or deletes them: a release needs the payload.
UNSETTLED_STATUSES = (*OPEN_STATUSES, EventStatus.HELD.value)


class StepStatus(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    UNKNOWN = "unknown"  # sent, but no answer: the target may or may not have applied it


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Event(Base):
    """One inbound event: a BNG webhook or an ION BOD, stored before it is acknowledged."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("instance", "source", "external_id"),
        # In the claim's order (store/queue.py), so a claim reads the head of the line and stops,
        # whatever the planner believes of the table's size.
        Index("ix_events_due", "status", "next_attempt_at", "id"),
        Index("ix_events_instance_due", "instance", "status", "next_attempt_at", "id"),
        Index("ix_events_business_key_id", "business_key", "id"),
        Index("ix_events_received_at", "received_at"),
        Index("ix_events_finished_at", "finished_at"),
        Index("ix_events_event_type_status", "event_type", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The BNG instance the event came from or is for (instances.py); keys are per instance.
    instance: Mapped[str] = mapped_column(
        String(32), default=DEFAULT_INSTANCE, server_default=DEFAULT_INSTANCE
    )
    source: Mapped[str] = mapped_column(String(32))
    external_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(128))
    business_key: Mapped[str | None] = mapped_column(String(255))
    # None once purged by retention (payload_hash stays, so a re-sent payload is still recognised).
    payload: Mapped[Any] = mapped_column(Json, nullable=True)
    payload_hash: Mapped[str | None] = mapped_column(String(64))
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    correlation_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    error_class: Mapped[str | None] = mapped_column(String(32))
    mapping_hash: Mapped[str | None] = mapped_column(String(64))
    # Keys obtained by completed steps (temporary ORNO, CUNO, ...): a retry resumes from them.
    checkpoint: Mapped[Any] = mapped_column(Json, default=dict)


class Step(Base):
    """One outbound call made while processing an event (M3 transaction, BNG request, ...)."""

    __tablename__ = "steps"
    __table_args__ = (Index("ix_steps_event_id_id", "event_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(128))  # the flow's step name, e.g. add_batch_head
    target: Mapped[str] = mapped_column(String(32))  # m3, bng, ...
    operation: Mapped[str] = mapped_column(String(255))  # OIS100MI/AddBatchHead, POST /orders/1
    request: Mapped[Any] = mapped_column(Json, nullable=True)
    response: Mapped[Any] = mapped_column(Json, nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    error_class: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DeadLetter(Base):
    """Why an event gave up: kept beside the event (which keeps its original payload)."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        Index("ix_dead_letters_event_id", "event_id"),
        Index("ix_dead_letters_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(String(64))  # permanent_error, retries_exhausted, no_flow
    error_class: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    failed_step_id: Mapped[int | None] = mapped_column(
        ForeignKey("steps.id", ondelete="SET NULL"), nullable=True
    )
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolution: Mapped[str | None] = mapped_column(String(32))  # replayed, discarded


class Replay(Base):
    """One replay of one event: who asked, from where, and the payload it replaced if edited."""

    __tablename__ = "replays"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    mode: Mapped[str] = mapped_column(String(32))  # from_failed_step, from_start
    requested_by: Mapped[str] = mapped_column(String(128))
    edited_payload: Mapped[Any] = mapped_column(Json, nullable=True)
    previous_payload: Mapped[Any] = mapped_column(Json, nullable=True)  # set when edited
    from_status: Mapped[str | None] = mapped_column(String(16))  # dead, skipped, discarded
    bulk_id: Mapped[int | None] = mapped_column(
        ForeignKey("bulk_replays.id", ondelete="SET NULL"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BulkReplay(Base):
    """A replay of every event a filter matched, run in the background at a limited rate.

    The set is frozen when it is created (events dead-lettered up to ``cutoff``), walked in id
    order with ``cursor`` as the high-water mark, and each event is replayed by a conditional
    update (``status = 'dead'``) in the same transaction that advances the cursor, so a
    cancellation, a crash or two runners never replay an event twice.
    """

    __tablename__ = "bulk_replays"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    filter: Mapped[Any] = mapped_column(Json)
    mode: Mapped[str] = mapped_column(String(32))
    requested_by: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))  # running, cancelled, done, failed
    total: Mapped[int] = mapped_column(Integer)  # matched when created (the dry-run count)
    replayed: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)  # no longer dead when reached
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    rate: Mapped[float] = mapped_column(Float)
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    """Who changed what, when: every write made through the ops API or CLI."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(64))
    target_id: Mapped[str] = mapped_column(String(255))
    before: Mapped[Any] = mapped_column(Json, nullable=True)
    after: Mapped[Any] = mapped_column(Json, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text)


class CrossReference(Base):
    """The same business object's id on both sides: BNG id ⇄ M3 key (CUNO, ORNO, ITNO ...)."""

    __tablename__ = "xrefs"
    __table_args__ = (
        UniqueConstraint("instance", "entity", "bng_id"),
        UniqueConstraint("instance", "entity", "m3_key"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    instance: Mapped[str] = mapped_column(
        String(32), default=DEFAULT_INSTANCE, server_default=DEFAULT_INSTANCE
    )
    entity: Mapped[str] = mapped_column(String(64))  # customer, order, item, supplier ...
    bng_id: Mapped[str] = mapped_column(String(255))
    m3_key: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class M3FieldMetadata(Base):
    """Cached MRS001MI LstFields answers: M3's field lengths, types and mandatory flags."""

    __tablename__ = "m3_field_metadata"
    __table_args__ = (UniqueConstraint("program", "transaction", "direction"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    program: Mapped[str] = mapped_column(String(16))
    transaction: Mapped[str] = mapped_column(String(32))
    direction: Mapped[str] = mapped_column(String(1))  # I input, O output
    fields: Mapped[Any] = mapped_column(Json)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IonMessage(Base):
    """ION's messageId of each stored BOD: ION retries a delivery under the same messageId."""

    __tablename__ = "ion_messages"

    message_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DocumentVersion(Base):
    """The newest variation of each ION document applied so far.

    A BOD older than this (lower variationID, or earlier CreationDateTime when variations are
    absent) arrived late and is skipped instead of overwriting newer data.
    """

    __tablename__ = "document_versions"
    __table_args__ = (UniqueConstraint("noun", "document_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    noun: Mapped[str] = mapped_column(String(64))
    document_key: Mapped[str] = mapped_column(String(255))  # accounting entity + document id
    variation_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # BOD CreationDateTime
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class BngState(Base):
    """What BNG holds for an object, as far as m3bng knows: the data of its last webhook, or the
    body m3bng last wrote to it. Echo suppression compares against this in both directions."""

    __tablename__ = "bng_state"
    __table_args__ = (UniqueConstraint("instance", "entity", "bng_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    instance: Mapped[str] = mapped_column(
        String(32), default=DEFAULT_INSTANCE, server_default=DEFAULT_INSTANCE
    )
    entity: Mapped[str] = mapped_column(String(64))
    bng_id: Mapped[str] = mapped_column(String(255))
    data: Mapped[Any] = mapped_column(Json)
    origin: Mapped[str] = mapped_column(String(16))  # bng (a webhook) or m3bng (our write)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class InventorySnapshot(Base):
    """The last balance the inventory poller saw per item and warehouse, so a restart resends
    nothing and each poll sends BNG only what changed."""

    __tablename__ = "inventory_snapshots"
    __table_args__ = (UniqueConstraint("warehouse", "item"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    warehouse: Mapped[str] = mapped_column(String(16))
    item: Mapped[str] = mapped_column(String(64))
    balance: Mapped[Any] = mapped_column(Json)
    digest: Mapped[str] = mapped_column(String(64))
    polled_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SchedulerLease(Base):
    """One row per scheduled job (the inventory poller): whichever process holds the lease runs
    it, so N processes on one database still poll once per interval."""

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(128))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class EventKey(Base):
    """Business keys an event is about (BNG order id, M3 ORNO, customer number, BODID, ...),
    normalised (trimmed, case-folded), for "where is order X". Kept as long as the event row."""

    __tablename__ = "event_keys"
    __table_args__ = (UniqueConstraint("event_id", "value"), Index("ix_event_keys_value", "value"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    value: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(32))  # order_id, orno, cuno, bodid, ...


class Control(Base):
    """A pause switch: ``kind`` flow (an event type) or target (m3, bng, ion). Workers claim no
    new event whose flow, or whose flow's target, is paused; events wait, nothing fails."""

    __tablename__ = "controls"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    changed_by: Mapped[str] = mapped_column(String(128))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Alert(Base):
    """One alert condition's life: firing until the condition clears, then resolved. Kept in the
    store so that throttling and "resolved" messages survive restarts and hold across processes."""

    __tablename__ = "alerts"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)  # e.g. backlog:order.created
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16))  # firing, resolved
    summary: Mapped[str] = mapped_column(Text)
    detail: Mapped[Any] = mapped_column(Json, nullable=True)
    first_fired_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    notified_state: Mapped[str | None] = mapped_column(String(16))  # what the webhook last heard
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class LimitShare(Base):
    """One process's share of a limit that holds for the whole installation (the M3 concurrency
    cap, BNG's rate): ``slots`` of it, for as long as the holder renews ``expires_at``. The row
    with ``holder`` '' anchors the limit: locking it serialises the processes rebalancing.
    (connectors/shares.py)"""

    __tablename__ = "limit_shares"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)  # e.g. m3.concurrency
    holder: Mapped[str] = mapped_column(String(128), primary_key=True)  # a process, '' = anchor
    slots: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SyncRecord(Base):
    """What the initial load last enqueued for one M3 object (a digest of the data the mapping
    reads), so a second run over unchanged data enqueues nothing. (sync.py)"""

    __tablename__ = "sync_records"

    # The BNG instance the load was for (instances.py): each instance's digests are its own.
    instance: Mapped[str] = mapped_column(
        String(32), primary_key=True, default=DEFAULT_INSTANCE, server_default=DEFAULT_INSTANCE
    )
    entity: Mapped[str] = mapped_column(String(32), primary_key=True)  # customers, items
    m3_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64))
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SyncRun(Base):
    """One ``m3bng sync`` run: where it stands in M3's list (the last key of the last page it
    finished), its counts, and the reasons of the records it refused. A run that stopped (a
    kill, Ctrl-C, an error) is continued by the next one for the same entity and target."""

    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    instance: Mapped[str] = mapped_column(
        String(32), default=DEFAULT_INSTANCE, server_default=DEFAULT_INSTANCE
    )  # the BNG instance it loads (or reads, --to m3)
    entity: Mapped[str] = mapped_column(String(32), index=True)
    target: Mapped[str] = mapped_column(String(16))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))  # running, done, failed
    cursor: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The key ranges read side by side (sync_ranges.py): start, first key, last key stored, done.
    segments: Mapped[Any] = mapped_column(Json, nullable=True)
    counts: Mapped[Any] = mapped_column(Json)
    refusals: Mapped[Any] = mapped_column(Json)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ReconcileRun(Base):
    """One ``m3bng reconcile`` run over a window of one kind of object, with its counts per
    class; its findings are ``reconcile_findings``. (reconcile.py)"""

    __tablename__ = "reconcile_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    instance: Mapped[str] = mapped_column(
        String(32), default=DEFAULT_INSTANCE, server_default=DEFAULT_INSTANCE
    )  # the BNG instance compared
    kind: Mapped[str] = mapped_column(String(32), index=True)  # orders
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    fix: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))  # running, done, failed
    counts: Mapped[Any] = mapped_column(Json)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ReconcileFinding(Base):
    """One object a reconciliation run put in a class other than "matching": what it found, and
    the event a ``--fix`` took in for it."""

    __tablename__ = "reconcile_findings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("reconcile_runs.id", ondelete="CASCADE"), index=True
    )
    key: Mapped[str] = mapped_column(String(255), index=True)  # the BNG id (OrderID)
    finding: Mapped[str] = mapped_column(String(32))  # never_arrived, stuck, different, in_flight
    detail: Mapped[Any] = mapped_column(Json)
    event_id: Mapped[int | None] = mapped_column(BigId, nullable=True)  # the event --fix took in


class MappingVersionRow(Base):
    """One version of a flow's mapping: its YAML text, numbered per flow (ops/mapping_versions.py).

    At most one version per flow is ``live`` (a partial unique index), so two processes
    publishing or importing at once cannot both win; the loser retries against the new state.
    ``content_hash`` is what ``Mapping.content_hash`` gives for the text (with the lookup tables
    of the time), so an event's ``mapping_hash`` finds the version it ran with. ``file_hash`` is
    the sha256 of the mapping file's bytes when this version was imported from it or found in
    it: how a later start-up tells a file changed since from one that was not."""

    __tablename__ = "mapping_versions"
    __table_args__ = (
        UniqueConstraint("flow", "version"),
        Index(
            "ux_mapping_versions_live",
            "flow",
            unique=True,
            sqlite_where=sql_text("state = 'live'"),
            postgresql_where=sql_text("state = 'live'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    flow: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    file_name: Mapped[str] = mapped_column(String(255))  # the file it came from / is exported to
    text: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(16))  # file, studio, bundle
    state: Mapped[str] = mapped_column(String(16))  # draft, live, superseded
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    author: Mapped[str] = mapped_column(String(128))
    file_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    based_on: Mapped[int | None] = mapped_column(Integer, nullable=True)  # rollback: the version copied
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)


class MappingConflict(Base):
    """A mapping file that changed after the live version was published from the studio or a
    bundle: found at start-up, kept until the file matches the live version again (export it,
    or publish the file's text), so that any process's API can report it."""

    __tablename__ = "mapping_conflicts"

    flow: Mapped[str] = mapped_column(String(64), primary_key=True)
    file_name: Mapped[str] = mapped_column(String(255))
    file_hash: Mapped[str] = mapped_column(String(64))
    content_hash: Mapped[str] = mapped_column(String(64))  # the file's mapping hash
    live_version: Mapped[int] = mapped_column(Integer)
    file_version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # last imported from the file
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime())


class OrderHistory(Base):
    """What was entered in M3 per order, kept for the anomaly rules (flows/runtime/anomalies.py):
    one row per order line (``sku`` set: its quantity, unit price and amount) and one for the
    order as a whole (``sku`` NULL: total quantity and amount, and ``digest`` of its lines for the
    near-duplicate rule). Reads are bounded (the last N rows of a key); retention deletes old rows."""

    __tablename__ = "order_history"
    __table_args__ = (
        Index("ix_order_history_sku", "flow", "instance", "sku", "id"),
        Index("ix_order_history_customer", "flow", "instance", "customer", "sku", "id"),
        Index("ix_order_history_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    instance: Mapped[str] = mapped_column(
        String(32), default=DEFAULT_INSTANCE, server_default=DEFAULT_INSTANCE
    )
    flow: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    order_id: Mapped[str] = mapped_column(String(255))
    customer: Mapped[str] = mapped_column(String(255))
    sku: Mapped[str | None] = mapped_column(String(255), nullable=True)
    quantity: Mapped[float] = mapped_column(Float)
    unit_price: Mapped[float | None] = mapped_column(Float, nullable=True)
    amount: Mapped[float] = mapped_column(Float)
    digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class AnomalyFinding(Base):
    """One anomaly rule that fired for one event: a flag (the event went on) or a hold (the event
    waits in ``held``), with the figures and the history that made it fire, and, for a hold, how
    it ended (released or discarded, by whom, when)."""

    __tablename__ = "anomaly_findings"
    __table_args__ = (
        Index("ix_anomaly_findings_event_id", "event_id"),
        Index("ix_anomaly_findings_action_resolved", "action", "resolved_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    flow: Mapped[str] = mapped_column(String(64))
    rule: Mapped[str] = mapped_column(String(32))  # quantity, price, amount, new_customer, near_duplicate
    action: Mapped[str] = mapped_column(String(8))  # flag, hold
    summary: Mapped[str] = mapped_column(Text)
    detail: Mapped[Any] = mapped_column(Json)  # the figures and the history they were computed from
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    resolution: Mapped[str | None] = mapped_column(String(16), nullable=True)  # released, discarded
    resolved_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
