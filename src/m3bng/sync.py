"""Initial load: ``m3bng sync customers|items --to bng``.

Event flows only carry changes; at go-live M3 already holds thousands of customers and items
that BNG has never seen. The load reads them with M3's list transactions and enqueues each one
as an event of source ``sync`` for the same flow and mapping a BOD of that object runs
(``customer_to_bng``, ``product_to_bng``), so a loaded record is exactly what the event flow
would write, retried, ordered, deduplicated and visible like any other event.

* **Paging by key.** M3 lists from a start key (``CUNO``, ``ITNO``) and answers at most
  ``maxrecs`` records; the last key of a page starts the next, whose first record (that key
  again) is dropped. One list call at a time: the load never takes more than one of the
  installation's M3 slots, and BNG's rate limit holds because the workers apply the events.
* **Only what changed.** Each record becomes the data its mapping reads, and a digest of it is
  kept (``sync_records``); a record whose digest is unchanged is not enqueued, so a second run
  over unchanged data writes nothing. The flow's echo check also skips what BNG already holds.
* **Resumable.** A page's events, digests and the run's cursor are one transaction; a run that
  was killed or failed is continued by the next ``m3bng sync`` of the same entity.
* **Refused records** (the mapping cannot render them: no key, a required field missing) are
  counted with their reason, and enqueued all the same: the flow dead-letters them, so they
  are replayable once the data or the mapping is fixed.
* ``dry_run`` reads and classifies (new, changed, same, refused) and writes no event.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.connectors.m3.client import M3Client
from m3bng.errors import M3bngError, Refused
from m3bng.mapping import Mapping, MappingError
from m3bng.mapping.engine import JMESPathError
from m3bng.mapping.schema import BngCallSpec
from m3bng.store import queue
from m3bng.store import sync as store
from m3bng.store.queue import NewEvent

log = structlog.get_logger(__name__)

SOURCE = "sync"
PAGE_SIZE = 500
MAX_REFUSALS_KEPT = 100  # reasons kept on the run; every refused record is a dead letter too


def _text(record: dict[str, str], name: str) -> str:
    return str(record.get(name) or "").strip()


def _present(value: Any) -> Any:
    """Without the empty values: the BOD parser gives no key for an element M3 left out, and a
    mapping's ``required`` sees a missing value, not an empty one."""
    if isinstance(value, dict):
        kept = {k: _present(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in ("", [], {}, None)}
    if isinstance(value, list):
        return [v for v in (_present(x) for x in value) if v not in ("", [], {}, None)]
    return value


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in _present(data).items()}


def customer_data(record: dict[str, str]) -> dict[str, Any]:
    """CRS610MI LstByNumber → the SyncCustomerPartyMaster noun as the BOD parser gives it
    (docs/ion.md), the shape ``customer_to_bng`` reads."""
    communication = []
    if _text(record, "PHNO"):
        communication.append({"ChannelCode": "Telephone", "DialNumber": _text(record, "PHNO")})
    if _text(record, "MAIL"):
        communication.append({"ChannelCode": "EMail", "URI": _text(record, "MAIL")})
    lines = [_text(record, f"CUA{n}") for n in range(1, 5) if _text(record, f"CUA{n}")]
    return _compact(
        {
            "PartyIDs": {"ID": [_text(record, "CUNO")]},
            "Name": _text(record, "CUNM"),
            "Location": {
                "Address": {
                    "AddressLine": lines,
                    "CityName": _text(record, "TOWN"),
                    "PostalCode": _text(record, "PONO"),
                    "CountryCode": _text(record, "CSCD"),
                }
            },
            "Communication": communication,
            "Status": {"Code": _text(record, "STAT")},
            "CurrencyCode": _text(record, "CUCD"),
        }
    )


def item_data(record: dict[str, str]) -> dict[str, Any]:
    """MMS200MI LstItmByItm → the SyncItemMaster noun as the BOD parser gives it, the shape
    ``product_to_bng`` reads."""
    descriptions = [d for d in (_text(record, "ITDS"), _text(record, "FUDS")) if d]
    header: dict[str, Any] = {
        "ItemID": {"ID": _text(record, "ITNO")},
        "Description": descriptions,
        "BaseUOMCode": _text(record, "UNMS"),
        "ItemStatus": {"Code": _text(record, "STAT")},
    }
    if _text(record, "ITGR"):
        header["Classification"] = {"Codes": {"Code": [_text(record, "ITGR")]}}
    return _compact({"ItemMasterHeader": header})


@dataclass(frozen=True)
class Entity:
    """What ``m3bng sync NAME`` reads from M3 and which flow applies it."""

    name: str
    program: str
    transaction: str
    key: str  # the list's key field, also its start input
    flow: str  # the mapping (flow) that applies a record, as it applies the BOD
    event_type: str  # the BOD type that mapping is triggered by
    noun: str
    to_data: Callable[[dict[str, str]], dict[str, Any]]
    # Where the first page starts. MMS200MI LstItmByItm has ITNO mandatory, so a blank start is
    # refused; "!" is the lowest printable character that is not blank. Unverified against a
    # real M3: an item number below "!" in the database's collation would be missed.
    first_key: str = ""


ENTITIES = {
    "customers": Entity(
        "customers",
        "CRS610MI",
        "LstByNumber",
        "CUNO",
        "customer_to_bng",
        "SyncCustomerPartyMaster",
        "CustomerPartyMaster",
        customer_data,
    ),
    "items": Entity(
        "items",
        "MMS200MI",
        "LstItmByItm",
        "ITNO",
        "product_to_bng",
        "SyncItemMaster",
        "ItemMaster",
        item_data,
        first_key="!",
    ),
}


class SyncError(Refused):
    """The load cannot start: an unknown entity, no mapping for it, M3 not configured."""

    code = "sync_refused"


@dataclass
class Progress:
    """What a run has done so far; ``on_page`` shows it (the CLI's progress line)."""

    run_id: int
    counts: dict[str, int] = field(
        default_factory=lambda: {"read": 0, "new": 0, "changed": 0, "same": 0, "refused": 0, "pages": 0}
    )
    refusals: list[dict[str, str]] = field(default_factory=list)
    cursor: str | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.counts["read"] / elapsed if elapsed > 0 else 0.0


def payload(entity: Entity, data: dict[str, Any], key: str) -> dict[str, Any]:
    """The event payload, shaped like a BOD event's (``to_payload``) so the flow reads it the
    same way; no document id, so it neither checks nor moves the BOD versions of the object."""
    bod = {"noun": entity.noun, "bod_type": entity.event_type, "verb": "Sync", "action_code": "Replace"}
    return {"bod": bod, "data": data, "sync": {"entity": entity.name, "key": key}}


def refusal(mapping: Mapping, entity: Entity, data: dict[str, Any], key: str) -> str | None:
    """Why the mapping cannot render this record (the flow would dead-letter it), or None."""
    try:
        m3_key = mapping.key("M3Key", data, {})
        values = {"bod": payload(entity, data, key)["bod"], "M3Key": m3_key, "BngID": m3_key, "sum": {}}
        for name, spec in mapping.spec.calls.items():
            if isinstance(spec, BngCallSpec) and not spec.if_:
                mapping.requests(name, data, values)
    except (MappingError, JMESPathError, ValueError, TypeError) as exc:
        return str(exc)
    return None


def digest_of(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


async def run_sync(
    sessions: async_sessionmaker[AsyncSession],
    m3: M3Client,
    mappings: dict[str, Mapping],
    entity_name: str,
    *,
    target: str = "bng",
    dry_run: bool = False,
    restart: bool = False,
    page_size: int = PAGE_SIZE,
    on_page: Callable[[Progress], None] | None = None,
    max_pages: int | None = None,
) -> Progress:
    """Load one entity (module docstring); ``max_pages`` stops early (tests: a run cut short)."""
    entity = ENTITIES.get(entity_name)
    if entity is None:
        raise SyncError(f"unknown entity {entity_name!r} (known: {', '.join(sorted(ENTITIES))})")
    if target != "bng":
        raise SyncError(f"sync --to {target}: only --to bng is built (M3 → BNG)")
    mapping = mappings.get(entity.flow)
    if mapping is None:
        raise SyncError(f"no mapping for flow {entity.flow!r} is loaded: the load applies it to every record")
    progress = Progress(run_id=0)
    async with sessions.begin() as session:
        run = await store.continue_or_start(
            session, entity.name, target, dry_run=dry_run, restart=restart, counts=progress.counts
        )
        progress.run_id, progress.cursor = run.id, run.cursor
        if run.cursor is not None:  # continuing: the counts so far
            progress.counts.update(run.counts or {})
            progress.refusals = list(run.refusals or [])
    log.info("sync.started", entity=entity.name, run_id=run.id, cursor=run.cursor, dry_run=dry_run)
    pages = 0
    try:
        while max_pages is None or pages < max_pages:
            more = await _page(sessions, m3, mapping, entity, progress, dry_run=dry_run, page_size=page_size)
            pages += 1
            if on_page is not None:
                on_page(progress)
            if not more:
                break
        else:
            return progress  # cut short: the run stays unfinished, the next one continues it
    except (M3bngError, OSError) as exc:
        async with sessions.begin() as session:
            await store.finish_run(
                session,
                run.id,
                status="failed",
                counts=progress.counts,
                refusals=progress.refusals,
                error=str(exc),
            )
        log.error("sync.failed", entity=entity.name, run_id=run.id, error=str(exc)[:500])
        raise
    async with sessions.begin() as session:
        await store.finish_run(
            session, run.id, status="done", counts=progress.counts, refusals=progress.refusals
        )
    log.info("sync.done", entity=entity.name, run_id=run.id, **progress.counts)
    return progress


async def _page(
    sessions: async_sessionmaker[AsyncSession],
    m3: M3Client,
    mapping: Mapping,
    entity: Entity,
    progress: Progress,
    *,
    dry_run: bool,
    page_size: int,
) -> bool:
    """One page of M3's list, classified and (unless ``dry_run``) enqueued; False at the end."""
    cursor = progress.cursor
    result = await m3.execute(
        entity.program, entity.transaction, {entity.key: cursor or entity.first_key}, maxrecs=page_size
    )
    records = result.records
    fresh = [r for r in records if _text(r, entity.key) and (cursor is None or _text(r, entity.key) > cursor)]
    if not fresh:
        return False
    keys = [_text(r, entity.key) for r in fresh]
    async with sessions.begin() as session:
        known = await store.known_digests(session, entity.name, keys)
        news: list[NewEvent] = []
        digests: list[tuple[str, str]] = []
        counts = progress.counts
        for key, record in zip(keys, fresh, strict=True):
            data = entity.to_data(record)
            digest = digest_of(data)
            counts["read"] += 1
            if known.get(key) == digest:  # enqueued before (refused then: a dead letter since)
                counts["same"] += 1
                continue
            reason = refusal(mapping, entity, data, key)
            if reason is not None:
                counts["refused"] += 1
                if len(progress.refusals) < MAX_REFUSALS_KEPT:
                    progress.refusals.append({"key": key, "reason": reason[:500]})
            else:
                counts["new" if key not in known else "changed"] += 1
            digests.append((key, digest))
            news.append(
                NewEvent(
                    source=SOURCE,
                    external_id=f"{entity.name}:{key}:{digest[:16]}"[:255],
                    event_type=entity.event_type,
                    payload=payload(entity, data, key),
                    business_key=f"{SOURCE}:{entity.noun}:{key}"[:255],
                    correlation_id=uuid.uuid4().hex,
                )
            )
        progress.cursor = keys[-1]
        counts["pages"] += 1
        if dry_run:  # classified only: nothing enqueued, no digest, no cursor stored
            return len(records) >= page_size
        if news:
            await queue.insert_events_once(session, news)
        await store.store_page(
            session,
            progress.run_id,
            entity.name,
            digests=digests,
            cursor=keys[-1],
            counts=counts,
            refusals=progress.refusals,
        )
    return len(records) >= page_size
