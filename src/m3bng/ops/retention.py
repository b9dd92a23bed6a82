"""Retention: personal data leaves the store on a schedule; the ids that deduplicate stay longer.

Personal data (names, addresses, emails of customers and contacts) lives in event payloads, in
the requests and responses of steps, in ``bng_state`` (echo suppression's copy of what BNG
holds), in the payload copies of edited replays, and in the before/after copies of the audit
log. What is kept, and for how long (docs/alerts-and-retention.md):

* after ``M3BNG_RETENTION_PAYLOAD_DAYS`` (from when the event finished): the payload of a done,
  skipped or discarded event becomes NULL (its SHA-256 stays in ``payload_hash``, ``purged_at``
  says when); its steps are deleted; its replays lose their payload copies; nested values leave
  its checkpoint (the M3 keys and progress flags stay: they are business keys, not personal
  data). ``bng_state`` rows not updated since the cutoff are deleted; audit entries older than
  the cutoff keep who, what, when and why, and lose their before/after copies;
* after ``M3BNG_RETENTION_DEAD_LETTER_DAYS``: the same for events still dead (unresolved dead
  letters), which are kept longer so that there is time to fix and replay them;
* after ``M3BNG_RETENTION_KEY_DAYS``: the event rows themselves go (ids, business keys, hashes,
  dead letters, business-key index, ION message ids, by foreign-key cascade). Until then a
  re-sent webhook or BOD with the same id is recognised as a duplicate, which is why the design
  keeps (source, external id) unique "for the whole retention period".

Open events (pending, processing) are never touched, however old. Work goes in batches of
``BATCH`` rows, each its own short transaction (store/retention.py says why that is safe
alongside workers and other processes). A dry run counts with the same conditions and changes
nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.ops.filters import FilterError
from m3bng.ops.scheduler import ScheduledJob
from m3bng.store import audit
from m3bng.store import retention as retention_store
from m3bng.store.models import UNSETTLED_STATUSES, EventStatus
from m3bng.store.search import normalise
from m3bng.store.sql import utcnow

log = structlog.get_logger(__name__)

JOB = "retention"
BATCH = 500
FINISHED = (EventStatus.DONE.value, EventStatus.SKIPPED.value, EventStatus.DISCARDED.value)
SYSTEM_ACTOR = "retention"


@dataclass
class PurgeCounts:
    """What a purge removed (or, in a dry run, would remove)."""

    payloads: int = 0  # finished events whose payload was purged
    dead_letter_payloads: int = 0  # events still dead whose payload was purged
    steps: int = 0  # step rows (requests and responses) deleted with those payloads
    replays: int = 0  # replay rows whose payload copies were cleared
    bng_state: int = 0  # bng_state rows deleted
    audit_entries: int = 0  # audit entries whose before/after copies were cleared
    events: int = 0  # event rows deleted after the key retention (with keys and dead letters)
    order_history: int = 0  # anomaly rules' history rows older than their retention

    def add(self, other: PurgeCounts) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @property
    def total(self) -> int:
        return sum(self.as_dict().values())


@dataclass(frozen=True)
class Cutoffs:
    payloads: datetime
    dead_letters: datetime
    keys: datetime

    @classmethod
    def from_settings(cls, settings: Settings, now: datetime) -> Cutoffs:
        return cls(
            payloads=now - timedelta(days=settings.retention_payload_days),
            dead_letters=now - timedelta(days=settings.retention_dead_letter_days),
            keys=now - timedelta(days=settings.retention_key_days),
        )


def payload_hash(payload: Any) -> str:
    """SHA-256 of the canonical JSON (sorted keys, no spaces): the same digest the audit log uses,
    so a purged payload can still be matched against a copy someone holds."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def scrub_checkpoint(checkpoint: Any) -> dict[str, Any]:
    """Keep the scalar entries (ORNO, CUNO, flags, counters); drop nested structures, the only
    place a flow could have kept more than a key."""
    if not isinstance(checkpoint, dict):
        return {}
    return {k: v for k, v in checkpoint.items() if v is None or isinstance(v, (str, int, float, bool))}


async def purge(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    batch: int = BATCH,
) -> PurgeCounts:
    """Apply the retention settings once. Safe to run at any time and from several processes."""
    now = now or utcnow()
    cut = Cutoffs.from_settings(settings, now)
    counts = PurgeCounts()
    # Event rows past the key retention go first: their payloads need no separate purge.
    counts.events = await retention_store.delete_finished_events(
        sessions, finished_before=cut.keys, batch=batch, dry_run=dry_run
    )
    # Then the payloads of finished events, and later those of events still dead, of the rows kept.
    finished, dead = [
        await retention_store.purge_finished_payloads(
            sessions,
            statuses=statuses,
            finished_before=before,
            finished_since=cut.keys,
            now=now,
            digest=payload_hash,
            scrub=scrub_checkpoint,
            batch=batch,
            dry_run=dry_run,
        )
        for statuses, before in ((FINISHED, cut.payloads), ((EventStatus.DEAD.value,), cut.dead_letters))
    ]
    counts.payloads, counts.dead_letter_payloads = finished.events, dead.events
    counts.steps, counts.replays = finished.steps + dead.steps, finished.replays + dead.replays
    counts.bng_state = await retention_store.delete_stale_bng_state(
        sessions, updated_before=cut.payloads, batch=batch, dry_run=dry_run
    )
    counts.audit_entries = await retention_store.clear_old_audit_copies(
        sessions, before=cut.payloads, batch=batch, dry_run=dry_run
    )
    counts.order_history = await retention_store.delete_old_order_history(
        sessions,
        before=now - timedelta(days=settings.retention_order_history_days),
        batch=batch,
        dry_run=dry_run,
    )
    return counts


@dataclass(frozen=True)
class EraseResult:
    matched: int  # events about this business key
    open: int  # of them pending, processing or held: not erased now (run again when they finished)
    counts: PurgeCounts


async def erase(
    sessions: async_sessionmaker[AsyncSession],
    key: str,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> EraseResult:
    """Purge the personal data of every event about one business key (an erasure request).

    The events are found as "where is X" finds them (``event_keys``: BNG ids, M3 numbers, the
    business key). Their payloads, steps and replay copies, the ``bng_state`` rows they wrote or
    that have this BNG id, and the audit copies about them go now, whatever their age. The rows
    themselves stay until the key retention, so deduplication still holds.
    """
    now = now or utcnow()
    value = normalise(key)
    if value is None:
        raise FilterError("q: give the business key to erase (a BNG id, M3 number, BODID ...)")
    async with sessions() as session:
        matched = await retention_store.events_about(session, value)
    ids = [event.id for event in matched if event.status not in UNSETTLED_STATUSES]
    counts = PurgeCounts()
    if ids:
        purged = await retention_store.purge_event_payloads(
            sessions,
            ids,
            now=now,
            digest=payload_hash,
            scrub=scrub_checkpoint,
            batch=BATCH,
            dry_run=dry_run,
        )
        counts.payloads, counts.steps, counts.replays = purged.events, purged.steps, purged.replays
        counts.bng_state = await retention_store.delete_bng_state_about(
            sessions, event_ids=ids, bng_id=value, batch=BATCH, dry_run=dry_run
        )
        counts.audit_entries = await retention_store.clear_event_audit_copies(
            sessions, ids, batch=BATCH, dry_run=dry_run
        )
    return EraseResult(len(matched), len(matched) - len(ids), counts)


async def record_run(
    sessions: async_sessionmaker[AsyncSession], *, actor: str, action: str, target: str, after: Any
) -> None:
    """The audit entry of a purge or erasure: counts only (the purge ran in many transactions,
    so the record comes after them, with what was actually done)."""
    async with sessions.begin() as session:
        await audit.record(
            session, actor=actor, action=action, target_type="retention", target_id=target, after=after
        )


class Retention:
    """The scheduled purge: every ``M3BNG_RETENTION_RUN_SECONDS`` in the process holding the lease."""

    def __init__(self, settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.settings, self.sessions = settings, sessions

    def job(self) -> ScheduledJob | None:
        if not self.settings.retention_run_seconds:
            return None
        return ScheduledJob(JOB, self.settings.retention_run_seconds, self.sessions, self.run_once)

    async def run_once(self) -> PurgeCounts:
        counts = await purge(self.sessions, self.settings)
        log.info("retention.purged", **counts.as_dict())
        if counts.total:
            await record_run(
                self.sessions,
                actor=SYSTEM_ACTOR,
                action="retention.purge",
                target="scheduled",
                after=counts.as_dict(),
            )
        return counts
