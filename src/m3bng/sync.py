"""Initial load: ``m3bng sync customers|items|suppliers|stock --to bng`` and ``m3bng sync
customers --to m3``; and the catalog price push, ``m3bng sync prices --to bng`` (``PriceLoad``:
written to BNG by the command itself, not enqueued).

Event flows only carry changes; at go-live M3 already holds thousands of customers, items,
suppliers and stock balances that BNG has never seen (or, where BNG is the master of customers,
BNG holds customers M3 has never seen). The load reads them page by page and enqueues each one
as an event of source ``sync`` for the same flow and mapping the object's own events run
(``customer_to_bng`` for a BOD, ``inventory_poll`` for a polled balance, ``customer_sync`` for a
webhook …), so a loaded record is exactly what the event flow would write, retried, ordered,
deduplicated and visible like any other event.

* **Paging.** M3's lists from a start key (``CUNO``, ``ITNO``, ``SUNO``) answer at most
  ``maxrecs`` records; the last key of a page starts the next, whose first record (that key
  again) is dropped. Stock has no start item to page by: one warehouse is a page, read whole.
  BNG's list pages by its own cursor. Customers, items and suppliers are read as key ranges
  side by side (``readers``, M3BNG_SYNC_READERS, within the M3 cap; sync_ranges.py); the rate
  limits hold because the workers apply the events. The list is asked for the fields the load
  reads alone (``Entity.columns``); one scan reads the next page while one is classified and
  stored (``Load.prefetch``; the next page's start is the last key of the one before).
* **Only what changed.** Each record becomes the data its mapping reads, and a digest of it is
  kept (``sync_records``; for stock the poller's snapshots, so the poller and the load never
  resend each other's balances); a record whose digest is unchanged is not enqueued, so a
  second run over unchanged data writes nothing. The flow's echo check also skips what the
  target already holds.
* **Resumable.** A page's events, digests and the run's cursor are one transaction; a run that
  was killed or failed is continued by the next ``m3bng sync`` of the same entity and target.
  A page read ahead is stored only in its turn, with its own cursor.
* **Refused records** (the mapping cannot render them: no key, a required field missing) are
  counted with their reason, and enqueued all the same: the flow dead-letters them, so they
  are replayable once the data or the mapping is fixed.
* ``dry_run`` reads and classifies (new, changed, same, refused) and writes no event.
* **Per BNG instance** (``instance``, instances.py): the events are the instance's (its BNG,
  its M3 company, its vars), and its runs and digests are its own. Stock for the instance
  ``default`` shares the poller's snapshots; for another instance its digests are in
  ``sync_records`` and the poller's snapshots are neither read nor written (docs/sync.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.connectors.bng.errors import BngNotFound
from m3bng.connectors.bng.events import business_key
from m3bng.connectors.bng.models import ValidationError, field_problems, validate_event_data
from m3bng.connectors.m3.client import M3Client
from m3bng.errors import M3bngError, PermanentError, Refused
from m3bng.mapping import Mapping, MappingError
from m3bng.mapping.engine import JMESPathError
from m3bng.mapping.schema import BngCallSpec
from m3bng.ops.scheduler import ScheduledJob
from m3bng.poller import balance_digest, enqueue_balance, list_balances
from m3bng.store import documents, queue, snapshots
from m3bng.store import sync as store
from m3bng.store.models import DEFAULT_INSTANCE
from m3bng.store.queue import NewEvent
from m3bng.store.sql import utcnow
from m3bng.storefront.service import Storefront, StorefrontUnavailable, normalise_quantity
from m3bng.sync_ranges import RangeReader

if TYPE_CHECKING:
    from m3bng.config import Settings
    from m3bng.connectors import Connectors
    from m3bng.connectors.bng.client import BngClient

log = structlog.get_logger(__name__)

SOURCE = "sync"
PAGE_SIZE = 500
# Key ranges of an M3 list read at once (sync_ranges.py; M3BNG_SYNC_READERS), within the cap.
READERS = 4
MAX_REFUSALS_KEPT = 100  # reasons kept on the run; every refused record is a dead letter too
# Records classified between two turns of the event loop: the key ranges' reads (sync_ranges.py)
# run in the same loop, and a page's classification (up to 0.3 ms of CPU a record) would hold
# back the next read of every range whose answer arrived meanwhile for the whole page.
YIELD_EVERY = 50


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


def supplier_data(record: dict[str, str]) -> dict[str, Any]:
    """CRS620MI LstByNumber → the SyncSupplierPartyMaster noun as the BOD parser gives it, the
    shape ``vendor_to_bng`` reads. The list answers no address lines, city, postal code, e-mail
    or currency (Infor's metadata: those are in GetBasicData and the supplier's addresses), so
    a loaded vendor has name, phone, country and status; the next BOD of the supplier fills in
    the rest."""
    communication = []
    if _text(record, "PHNO"):
        communication.append({"ChannelCode": "Telephone", "DialNumber": _text(record, "PHNO")})
    return _compact(
        {
            "PartyIDs": {"ID": [_text(record, "SUNO")]},
            "Name": _text(record, "SUNM"),
            "Location": {"Address": {"CountryCode": _text(record, "CSCD")}},
            "Communication": communication,
            "Status": {"Code": _text(record, "STAT")},
        }
    )


@dataclass(frozen=True)
class Entity:
    """A list M3 pages by key (customers, items, suppliers), and the flow that applies a record
    into BNG as it applies the object's BOD."""

    name: str
    program: str
    transaction: str
    key: str  # the list's key field, also its start input
    flow: str  # the mapping (flow) that applies a record, as it applies the BOD
    event_type: str  # the BOD type that mapping is triggered by
    noun: str
    to_data: Callable[[dict[str, str]], dict[str, Any]]
    # The fields ``to_data`` reads: the list is asked for these alone (``returncols``), not the
    # 30-110 fields M3 answers by default, a fifth of the answer to send, parse and trim.
    columns: tuple[str, ...]
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
        (
            "CUNO",
            "CUNM",
            "CUA1",
            "CUA2",
            "CUA3",
            "CUA4",
            "TOWN",
            "PONO",
            "CSCD",
            "PHNO",
            "MAIL",
            "STAT",
            "CUCD",
        ),
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
        ("ITNO", "ITDS", "FUDS", "UNMS", "ITGR", "STAT"),
        first_key="!",
    ),
    "suppliers": Entity(
        "suppliers",
        "CRS620MI",
        "LstByNumber",
        "SUNO",
        "vendor_to_bng",
        "SyncSupplierPartyMaster",
        "SupplierPartyMaster",
        supplier_data,
        ("SUNO", "SUNM", "PHNO", "CSCD", "STAT"),
        first_key="!",  # SUNO is mandatory in LstByNumber, like ITNO in LstItmByItm
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
    # The total to expect: no list gives one, so it is the read count of the previous complete
    # run of the same entity and target, an estimate (None on a first run: no ETA).
    expected: int | None = None
    resumed_read: int = 0  # read by the earlier processes of a continued run: not in the rate

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.counts["read"] - self.resumed_read) / elapsed if elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate to reach ``expected``; None without an estimate, or
        once past it (more records than last time: the estimate says nothing any more)."""
        left = (self.expected or 0) - self.counts["read"]
        rate = self.rate
        return left / rate if self.expected and left > 0 and rate > 0 else None


def format_duration(seconds: float) -> str:
    """``45s``, ``3m 05s``, ``2h 07m``: an ETA at the precision it deserves."""
    total = max(round(seconds), 0)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m {total % 60:02d}s"
    return f"{total // 3600}h {total % 3600 // 60:02d}m"


def progress_line(label: str, progress: Progress) -> str:
    """The CLI's progress line: counts, rate, and the ETA marked as the estimate it is."""
    c = progress.counts
    read = f"{c['read']:,} read"
    eta = progress.eta
    if progress.expected:
        read += f" of ≈{progress.expected:,} (the last complete run's count)"
    line = f"{label}: {read}, {progress.rate:,.0f}/s"
    if eta is not None:
        line += f", ETA ≈{format_duration(eta)}"
    counts = f"{c['new']:,} new, {c['changed']:,} changed, {c['same']:,} same, {c['refused']:,} refused"
    return f"{line}; {counts}; at {progress.cursor}"


def payload(entity: Entity, data: dict[str, Any], key: str) -> dict[str, Any]:
    """The event payload, shaped like a BOD event's (``to_payload``) so the flow reads it the
    same way; no document id, so it neither checks nor moves the BOD versions of the object."""
    bod = {"noun": entity.noun, "bod_type": entity.event_type, "verb": "Sync", "action_code": "Replace"}
    return {"bod": bod, "data": data, "sync": {"entity": entity.name, "key": key}}


def record_event(
    entity: Entity,
    data: dict[str, Any],
    key: str,
    *,
    external_id: str,
    source: str = SOURCE,
    instance: str = DEFAULT_INSTANCE,
) -> NewEvent:
    """The event that applies one record with its entity's flow, for the BNG ``instance``. The
    business key is the same whoever enqueues it (this load, reconciliation's fix), so their
    events are applied in order."""
    return NewEvent(
        source=source,
        external_id=external_id[:255],
        event_type=entity.event_type,
        payload=payload(entity, data, key),
        business_key=f"{SOURCE}:{entity.noun}:{key}"[:255],
        correlation_id=uuid.uuid4().hex,
        instance=instance,
    )


def written(
    mapping: Mapping, entity: Entity, data: dict[str, Any], key: str, bng_id: str | None = None
) -> dict[str, Any]:
    """The fields the flow's requests write to BNG for this record (reconciliation compares them
    with what BNG holds); raises what the mapping raises on a record it cannot render."""
    return bng_fields(mapping, data, payload(entity, data, key)["bod"], bng_id)


def bng_fields(
    mapping: Mapping, data: dict[str, Any], bod: dict[str, Any], bng_id: str | None = None
) -> dict[str, Any]:
    """What ``written`` says, for any mapping that writes to BNG (a polled balance has no BOD)."""
    m3_key = mapping.key("M3Key", data, {})
    values = {"bod": bod, "M3Key": m3_key, "BngID": bng_id or m3_key, "sum": {}}
    fields: dict[str, Any] = {}
    for name, spec in mapping.spec.calls.items():
        if isinstance(spec, BngCallSpec) and not spec.if_:
            for request in mapping.requests(name, data, values):
                if request.method != "GET" and isinstance(request.body, dict):
                    fields.update(request.body)
    return fields


def refusal(mapping: Mapping, entity: Entity, data: dict[str, Any], key: str) -> str | None:
    """Why the mapping cannot render this record (the flow would dead-letter it), or None."""
    return _refused(lambda: written(mapping, entity, data, key))


def digest_of(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# -- what each entity and target loads ------------------------------------------------------------

# Entity → the targets it loads into → the flow (mapping) that applies a record. Customers go
# both ways; into M3 only where the mapping declares BNG their master (``master: bng``).
TARGETS: dict[str, dict[str, str]] = {
    **{name: {"bng": entity.flow} for name, entity in ENTITIES.items()},
    "stock": {"bng": "inventory_poll"},
}
TARGETS["customers"]["m3"] = "customer_sync"
# Catalog prices write to the products product_to_bng writes (its SKUs); no event, no flow.
TARGETS["prices"] = {"bng": "product_to_bng"}
SYNC_FLOWS = frozenset(flow for targets in TARGETS.values() for flow in targets.values())
CURSOR_MAX = 64  # sync_runs.cursor: a longer cursor is not stored (the run resumes a page earlier)


@dataclass(frozen=True)
class Page:
    """One page a load read: its records (key, the data the mapping reads), the checkpoint to
    store with them (None: keep the one before), and whether another page may follow."""

    records: list[tuple[str, dict[str, Any]]]
    cursor: str | None
    more: bool
    # The chain of key ranges read side by side (sync_ranges.py), stored with the page; None
    # when the list is read as one scan.
    segments: list[dict[str, Any]] | None = None


class Load(ABC):
    """How one ``m3bng sync ENTITY --to TARGET`` reads its source and hands a record to its flow."""

    name: str
    target: str
    flow: str
    instance: str = DEFAULT_INSTANCE  # the BNG instance loaded (or read, --to m3)
    # Its read depends on the cursor alone, so the next page may be read while one is stored.
    prefetch: bool = True

    @property
    def records_entity(self) -> str:
        """The digests' key in ``sync_records``: customers loaded both ways keep theirs apart."""
        return self.name if self.target == "bng" else f"{self.name}:{self.target}"

    @abstractmethod
    async def read(self, cursor: str | None, page_size: int) -> Page: ...

    @abstractmethod
    def refusal(self, mapping: Mapping, key: str, data: dict[str, Any]) -> str | None: ...

    @abstractmethod
    async def write(
        self, session: AsyncSession, run_id: int, records: list[tuple[str, dict[str, Any], str]]
    ) -> list[tuple[str, str]]:
        """Enqueue the records (key, data, digest); returns the digests to keep in sync_records."""

    def digest(self, data: dict[str, Any]) -> str:
        return digest_of(data)

    def refused_on_write(self) -> list[tuple[str, str]]:
        """Records ``write`` could not write (key, reason), counted refused instead of new or
        changed; their digests were not returned, so the next run tries them again."""
        return []

    async def known(self, session: AsyncSession, keys: Sequence[str]) -> dict[str, str]:
        return await store.known_digests(session, self.records_entity, keys, instance=self.instance)


class M3ListLoad(Load):
    """customers, items, suppliers → BNG: M3's list paged by key, each record as its BOD's noun."""

    def __init__(self, entity: Entity, m3: M3Client, instance: str = DEFAULT_INSTANCE) -> None:
        self.entity, self.m3, self.instance = entity, m3, instance
        self.name, self.target, self.flow = entity.name, "bng", entity.flow

    async def read(self, cursor: str | None, page_size: int) -> Page:
        records, more = await self._read(cursor, page_size)
        return Page(records, records[-1][0] if records else cursor, more and bool(records))

    async def _read(
        self, cursor: str | None, page_size: int, *, inclusive: bool = False
    ) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        """One page as (key, the data the mapping reads) pairs, and whether more may follow."""
        fresh, more = await read_page(self.m3, self.entity, cursor, page_size, inclusive=inclusive)
        return [(_text(r, self.entity.key), self.entity.to_data(r)) for r in fresh], more

    def ranges(self, page_size: int, readers: int, cursor: str | None, segments: Any) -> RangeReader:
        """The list read as key ranges side by side (sync_ranges.py), continuing a run's chain."""

        async def read_from(start: str, inclusive: bool) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
            return await self._read(start, page_size, inclusive=inclusive)

        return RangeReader(
            read_from,
            first_key=self.entity.first_key,
            readers=readers,
            segments=segments,
            cursor=cursor,
            page_size=page_size,
        )

    def refusal(self, mapping: Mapping, key: str, data: dict[str, Any]) -> str | None:
        return refusal(mapping, self.entity, data, key)

    async def write(
        self, session: AsyncSession, run_id: int, records: list[tuple[str, dict[str, Any], str]]
    ) -> list[tuple[str, str]]:
        # The run in the id: an object changed back to what an earlier run sent is sent again.
        events = []
        for n, (key, data, digest) in enumerate(records, 1):
            if not n % YIELD_EVERY:
                await asyncio.sleep(0)  # the reads in flight (YIELD_EVERY)
            events.append(
                record_event(
                    self.entity,
                    data,
                    key,
                    external_id=f"{self.name}:{key}:{digest[:16]}:{run_id}",
                    instance=self.instance,
                )
            )
        await queue.insert_events_in(session, events)
        return [(key, digest) for key, _, digest in records]


class StockLoad(Load):
    """stock → BNG: MMS080MI LstItemWarehous, one call per warehouse, read whole (it takes no
    start item to page by), each balance the event the inventory poller makes for it.

    For the instance ``default`` the digests are the poller's snapshots (what m3bng last sent of
    each balance, whichever sent it). The snapshots are shared by every instance the poller
    sends to, so a load for another instance keeps digests of its own (``sync_records``) and
    leaves the snapshots alone: writing one would make the poller skip a change it has not yet
    sent to the other instances."""

    name, target, flow = "stock", "bng", "inventory_poll"

    def __init__(
        self, m3: M3Client, mapping: Mapping, warehouses: Sequence[str], instance: str = DEFAULT_INSTANCE
    ) -> None:
        self.m3, self.mapping, self.instance = m3, mapping, instance
        self.shared = instance == DEFAULT_INSTANCE  # digests: the poller's snapshots
        self.warehouses = list(dict.fromkeys(w.strip() for w in warehouses if w.strip()))

    async def read(self, cursor: str | None, page_size: int) -> Page:
        # The cursor is the last warehouse done; one no longer listed starts the list again
        # (what was sent is skipped by its digest).
        start = self.warehouses.index(cursor) + 1 if cursor in self.warehouses else 0
        if start >= len(self.warehouses):
            return Page([], cursor, more=False)
        warehouse = self.warehouses[start]
        rows = await list_balances(self.m3, self.mapping, warehouse)
        records = [(f"{warehouse}/{row['ITNO']}", dict(row)) for row in rows]
        return Page(records, warehouse, more=start + 1 < len(self.warehouses))

    def digest(self, data: dict[str, Any]) -> str:
        return balance_digest(data)

    async def known(self, session: AsyncSession, keys: Sequence[str]) -> dict[str, str]:
        """The poller's snapshots: what m3bng last sent BNG of each balance, whichever sent it
        (another instance than default: its own digests)."""
        if not self.shared:
            return await super().known(session, keys)
        found: dict[str, str] = {}
        for warehouse in sorted({key.split("/", 1)[0] for key in keys}):
            for item, digest in (await snapshots.known_digests(session, warehouse)).items():
                found[f"{warehouse}/{item}"] = digest
        return found

    def refusal(self, mapping: Mapping, key: str, data: dict[str, Any]) -> str | None:
        return _refused(lambda: bng_fields(mapping, data, {}))

    async def write(
        self, session: AsyncSession, run_id: int, records: list[tuple[str, dict[str, Any], str]]
    ) -> list[tuple[str, str]]:
        now = utcnow()
        for key, row, digest in records:
            await enqueue_balance(
                session,
                key.split("/", 1)[0],
                row,
                digest,
                now,
                source=SOURCE,
                instances=[self.instance],
                snapshot=self.shared,
            )
        # the snapshots written with each event are the default instance's digests
        return [] if self.shared else [(key, digest) for key, _, digest in records]


# The item list the price push reads: the items load's list, asked for the item number alone.
PRICED_ITEMS = replace(ENTITIES["items"], columns=("ITNO",))
ITEM_ENTITY = "item"  # product_to_bng's cross-references: BNG SKU ⇄ M3 item number
ONE = Decimal(1)


class PriceLoad(Load):
    """prices → BNG: each product's catalog ``Price``, M3's net price at quantity 1 for the
    reference customer (``M3BNG_STOREFRONT_CATALOG_CUSTOMER``, an instance's ``catalog_customer``).

    The items are M3's item list (MMS200MI LstItmByItm, paged by item number as ``sync items``
    pages it), so a run is resumable by item number; the prices are the storefront's own read
    (OIS320MI GetPriceLine in bulk, through its cache, single flight and lane of the M3 cap,
    storefront/service.py), one bulk read per page. Each changed price is one ``PATCH
    /api/v1/products/{SKU}`` with ``{"Price": …}`` (the SKU is product_to_bng's cross-reference,
    else the item number), written here, not as an event: a price has no flow of its own.

    * An item M3 gives no price for (no line in the customer's price list) is refused with M3's
      message, and its digest kept like a refused record of the other loads: the next run counts
      it unchanged until M3's answer changes.
    * A product BNG does not hold (404) or refuses (422) is refused when written, and no digest is
      kept: the next run tries it again (the item may be in the catalog by then).
    * A value the storefront could only give stale, or none because M3 is away, fails the run
      (continued by the next one): a stale price is never written as current.
    """

    name, target, flow = "prices", "bng", "product_to_bng"

    def __init__(
        self, m3: M3Client, storefront: Storefront, bng: BngClient, instance: str = DEFAULT_INSTANCE
    ) -> None:
        customer = storefront.settings.storefront_catalog_customer
        if not customer:
            where = (
                "M3BNG_STOREFRONT_CATALOG_CUSTOMER"
                if instance == DEFAULT_INSTANCE
                else (f"catalog_customer of the instance {instance!r} in M3BNG_INSTANCES_FILE")
            )
            raise SyncError(f"sync prices: no reference customer to price the catalog for; set {where}")
        self.m3, self.storefront, self.bng, self.instance = m3, storefront, bng, instance
        self.customer = customer
        self._refused: list[tuple[str, str]] = []

    async def read(self, cursor: str | None, page_size: int) -> Page:
        fresh, more = await read_page(self.m3, PRICED_ITEMS, cursor, page_size)
        items = [_text(r, "ITNO") for r in fresh]
        if not items:
            return Page([], cursor, more=False)
        settings = self.storefront.settings
        answers = await self.storefront.prices_of(
            self.customer, [(itno, ONE) for itno in items], wait=settings.m3_timeout + 1
        )
        self.storefront.raise_if_unavailable(a for _, a in answers)
        stale = [key.itno for key, a in answers if a.stale]
        if stale:
            raise StorefrontUnavailable(
                f"M3 did not answer the price of {len(stale)} item(s) ({stale[0]} …) in time; only a "
                "stale cached value is there, and a stale price is not written",
                retry_after=5.0,
            )
        skus = await self._skus(items)
        records: list[tuple[str, dict[str, Any]]] = []
        for itno, (_key, answer) in zip(items, answers, strict=True):
            data: dict[str, Any] = {"SKU": skus.get(itno, itno)}
            price = answer.value
            if answer.error is not None or price is None:
                message = getattr(answer.error, "mi_message", None) or str(answer.error)
                data["error"] = f"no price from M3 OIS320MI GetPriceLine: {message}"[:500]
            else:
                data["Price"] = normalise_quantity(price.net_price)
                data["currency"] = price.currency  # in the digest, not written (BNG has none)
            records.append((itno, data))
        return Page(records, items[-1], more)

    async def _skus(self, items: Sequence[str]) -> dict[str, str]:
        async with self.storefront.sessions() as session:
            return await documents.bng_ids_of(session, ITEM_ENTITY, items, instance=self.instance)

    def refusal(self, mapping: Mapping, key: str, data: dict[str, Any]) -> str | None:
        error = data.get("error")
        return str(error) if error else None

    def refused_on_write(self) -> list[tuple[str, str]]:
        refused, self._refused = self._refused, []
        return refused

    async def write(
        self, session: AsyncSession, run_id: int, records: list[tuple[str, dict[str, Any], str]]
    ) -> list[tuple[str, str]]:
        kept = [(key, digest) for key, data, digest in records if data.get("error")]
        sending = [(key, data, digest) for key, data, digest in records if not data.get("error")]

        async def one(key: str, data: dict[str, Any], digest: str) -> None:
            sku = str(data["SKU"])
            idempotency = hashlib.sha256(f"{self.instance}:{sku}:{digest}:{run_id}".encode()).hexdigest()
            try:
                await self.bng.patch(
                    f"/products/{quote(sku, safe='')}",
                    {"Price": data["Price"]},
                    idempotency_key=f"m3bng-price-{idempotency[:48]}",
                )
            except BngNotFound:
                self._refused.append((key, f"BNG holds no product {sku!r} (m3bng sync items --to bng)"))
            except PermanentError as exc:
                self._refused.append((key, f"BNG refused the price of {sku!r}: {exc}"[:500]))
            else:
                kept.append((key, digest))

        # All at once: the BNG client's own rate limit and concurrency cap pace them.
        results = await asyncio.gather(*(one(*r) for r in sending), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]  # BNG is away: the page is not stored, the run continues it later
        return kept


class BngCustomersLoad(Load):
    """customers → M3, where BNG is their master: BNG's customer list (every customer changed
    since the epoch, in change order, by BNG's cursor), each as the ``customer.updated`` webhook
    the ``customer_sync`` flow takes, with the customer's change time as the webhook's
    timestamp (so a newer webhook is never overwritten by the load, nor the load by an older one)."""

    name, target, flow = "customers", "m3", "customer_sync"
    event_type = "customer.updated"
    prefetch = False  # read keeps BNG's cursor and the page's change times (write's timestamps)
    since = datetime(1970, 1, 1, tzinfo=UTC)

    def __init__(self, bng: BngClient, instance: str = DEFAULT_INSTANCE) -> None:
        self.bng, self.instance = bng, instance
        self._next: str | None = None  # BNG's cursor for the next page of this process
        self._changed: dict[str, str] = {}  # CustomerID → UpdatedAt, of the page being stored

    async def read(self, cursor: str | None, page_size: int) -> Page:
        items, following = await self.bng.changed_page(
            "customers", self.since, cursor=self._next or cursor, page_size=min(page_size, 500)
        )
        self._next = following
        records, self._changed = [], {}
        for item in items:
            data = {k: v for k, v in item.items() if k != "UpdatedAt"}
            key = str(data.get("CustomerID") or "").strip()
            if key:
                records.append((key, data))
                self._changed[key] = str(item.get("UpdatedAt") or "")
        stored = following if following and len(following) <= CURSOR_MAX else None
        return Page(records, stored, more=following is not None)

    def refusal(self, mapping: Mapping, key: str, data: dict[str, Any]) -> str | None:
        """What the webhook endpoint would refuse (BNG's customer model; the flow checks it again
        and dead-letters the event), or a key the mapping cannot derive. Whether M3 takes it (Add
        needs an address line) shows when it is applied: that depends on whether M3 has it."""
        try:
            validate_event_data(self.event_type, data)
        except ValidationError as exc:
            return "; ".join(f"{f['field']}: {f['problem']}" for f in field_problems(exc, "data."))
        return _refused(lambda: [mapping.key(name, data) for name in mapping.spec.keys])

    async def write(
        self, session: AsyncSession, run_id: int, records: list[tuple[str, dict[str, Any], str]]
    ) -> list[tuple[str, str]]:
        events = []
        for key, data, digest in records:
            body: dict[str, Any] = {"type": self.event_type, "data": data}
            if self._changed.get(key):
                body["timestamp"] = self._changed[key]
            events.append(
                NewEvent(
                    source=SOURCE,
                    external_id=f"{self.records_entity}:{key}:{digest[:16]}:{run_id}"[:255],
                    event_type=self.event_type,
                    payload={**body, "sync": {"entity": self.name, "key": key}},
                    business_key=business_key(self.event_type, data),
                    correlation_id=uuid.uuid4().hex,
                    instance=self.instance,
                )
            )
        await queue.insert_events_in(session, events)
        return [(key, digest) for key, _, digest in records]


def _refused(render: Callable[[], object]) -> str | None:
    """Why ``render`` (what the flow will do with the record) fails, or None."""
    try:
        render()
    except (MappingError, JMESPathError, ValueError, TypeError) as exc:
        return str(exc)
    return None


def make_load(
    entity_name: str,
    target: str,
    mappings: dict[str, Mapping],
    *,
    m3: M3Client | None,
    bng: BngClient | None = None,
    warehouses: Sequence[str] = (),
    instance: str = DEFAULT_INSTANCE,
    storefront: Storefront | None = None,
) -> tuple[Load, Mapping]:
    """The load ``m3bng sync ENTITY --to TARGET`` runs, and its mapping; SyncError naming what is
    wrong (an entity or direction that does not exist, a mapping or connector missing)."""
    targets = TARGETS.get(entity_name)
    if targets is None:
        raise SyncError(f"unknown entity {entity_name!r} (known: {', '.join(sorted(TARGETS))})")
    flow = targets.get(target)
    if flow is None:
        allowed = " or ".join(f"--to {t}" for t in sorted(targets))
        raise SyncError(f"sync {entity_name} --to {target}: {entity_name} load only {allowed}")
    mapping = mappings.get(flow)
    if mapping is None:
        raise SyncError(f"no mapping for flow {flow!r} is loaded: the load applies it to every record")
    if target == "m3":
        if mapping.spec.master != "bng":
            raise SyncError(
                f"sync {entity_name} --to m3: {mapping.path.name} does not declare BNG the master of "
                f"{entity_name} (add `master: bng` at its top level, docs/mappings.md); M3 is their "
                f"master, so they load --to bng"
            )
        if bng is None:
            raise SyncError("BNG is not configured (set M3BNG_BNG_BASE_URL)")
        return BngCustomersLoad(bng, instance), mapping
    if m3 is None:
        raise SyncError("M3 is not configured (set M3BNG_IONAPI_FILE)")
    if entity_name == "stock":
        if not [w for w in warehouses if w.strip()]:
            raise SyncError(
                "sync stock: no warehouse to read; give --warehouse WHLO (repeatable) or set "
                "M3BNG_INVENTORY_POLL_WAREHOUSES"
            )
        return StockLoad(m3, mapping, warehouses, instance), mapping
    if entity_name == "prices":
        if bng is None:
            raise SyncError("BNG is not configured (set M3BNG_BNG_BASE_URL)")
        if storefront is None:
            raise SyncError("sync prices: the storefront's price read is not available in this process")
        return PriceLoad(m3, storefront, bng, instance), mapping
    return M3ListLoad(ENTITIES[entity_name], m3, instance), mapping


async def run_sync(
    sessions: async_sessionmaker[AsyncSession],
    m3: M3Client | None,
    mappings: dict[str, Mapping],
    entity_name: str,
    *,
    target: str = "bng",
    dry_run: bool = False,
    restart: bool = False,
    page_size: int = PAGE_SIZE,
    on_page: Callable[[Progress], None] | None = None,
    max_pages: int | None = None,
    readers: int = READERS,
    bng: BngClient | None = None,
    warehouses: Sequence[str] = (),
    instance: str = DEFAULT_INSTANCE,
    storefront: Storefront | None = None,
) -> Progress:
    """Load one entity (module docstring) for the BNG ``instance``, whose connectors ``m3`` (in
    its company) and ``bng`` are; ``max_pages`` stops early (tests: a run cut short)."""
    load, mapping = make_load(
        entity_name,
        target,
        mappings,
        m3=m3,
        bng=bng,
        warehouses=warehouses,
        instance=instance,
        storefront=storefront,
    )
    progress = Progress(run_id=0)
    async with sessions.begin() as session:
        run = await store.continue_or_start(
            session,
            load.name,
            load.target,
            dry_run=dry_run,
            restart=restart,
            counts=progress.counts,
            instance=instance,
        )
        progress.run_id, progress.cursor = run.id, run.cursor
        progress.counts.update(run.counts or {})  # continuing: the counts so far
        progress.refusals = list(run.refusals or [])
        progress.resumed_read = progress.counts["read"]
        progress.expected = await store.last_read_count(
            session, load.name, load.target, before=run.id, instance=instance
        )
    about = {"instance": instance, "entity": load.name, "target": load.target, "run_id": run.id}
    log.info("sync.started", **about, cursor=run.cursor, dry_run=dry_run)
    if m3 is not None:  # every list call takes one of the cap's slots (its share: connectors/shares.py)
        readers = min(readers, m3.config.max_concurrency)
    source = (
        _ranged(load, page_size, readers, run.cursor, run.segments)
        if isinstance(load, M3ListLoad) and readers > 1
        else _one_scan(load, run.cursor, page_size, max_pages)
    )
    pages = 0
    try:
        async for page in source:
            await _page(sessions, load, mapping, progress, page, dry_run=dry_run)
            pages += 1
            if on_page is not None:
                on_page(progress)
            if max_pages is not None and pages >= max_pages and page.more:
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
        log.error("sync.failed", **about, error=str(exc)[:500])
        raise
    finally:
        await source.aclose()  # the reads still in flight are not wanted
    async with sessions.begin() as session:
        await store.finish_run(
            session, run.id, status="done", counts=progress.counts, refusals=progress.refusals
        )
    log.info("sync.done", **about, **progress.counts)
    return progress


def price_jobs(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    connectors: Connectors,
    mappings: Callable[[], dict[str, Mapping]],
    storefront_for: Callable[[str], Storefront],
) -> list[ScheduledJob]:
    """``M3BNG_SYNC_PRICES_SECONDS``: ``sync prices --to bng`` on a schedule, one job per BNG
    instance that has a catalog customer, a BNG and M3 (``sync_prices``, ``sync_prices:<id>``),
    in whichever process holds its lease, with that process's storefront (its cache, kept
    current by BODs, and its lane). A run that fails is continued by the next one."""
    if not settings.sync_prices_seconds:
        return []
    from m3bng.instances import with_instance_vars

    ids = connectors.instances.ids if connectors.instances is not None else [DEFAULT_INSTANCE]
    jobs = []
    for instance in ids:
        view = connectors.for_instance(instance)
        own = view.instance.settings if view.instance is not None else settings
        if view.m3 is None or view.bng is None or not own.storefront_catalog_customer:
            continue

        async def work(instance: str = instance, view: Connectors = view) -> Progress:
            return await run_sync(
                sessions,
                view.m3,
                with_instance_vars(mappings(), view.instance),
                "prices",
                bng=view.bng,
                storefront=storefront_for(instance),
                instance=instance,
            )

        name = "sync_prices" if instance == DEFAULT_INSTANCE else f"sync_prices:{instance}"
        jobs.append(
            ScheduledJob(name, settings.sync_prices_seconds, sessions, work, expected=(M3bngError, OSError))
        )
    return jobs


async def read_page(
    m3: M3Client, entity: Entity, cursor: str | None, page_size: int, *, inclusive: bool = False
) -> tuple[list[dict[str, str]], bool]:
    """The records of one page of M3's list from ``cursor`` (None: the start) without the one
    that repeats it (``inclusive``: with it, a key range's first read from its split key), and
    whether another page may follow (paging by key: module docstring)."""
    result = await m3.execute(
        entity.program,
        entity.transaction,
        {entity.key: cursor or entity.first_key},
        maxrecs=page_size,
        returncols=entity.columns,
    )
    records = result.records
    if cursor is None:
        fresh = [r for r in records if _text(r, entity.key)]
    elif inclusive:
        fresh = [r for r in records if _text(r, entity.key) and _text(r, entity.key) >= cursor]
    else:
        fresh = [r for r in records if _text(r, entity.key) and _text(r, entity.key) > cursor]
    return fresh, len(records) >= page_size


async def _one_scan(
    load: Load, cursor: str | None, page_size: int, max_pages: int | None
) -> AsyncGenerator[Page]:
    """The list as one scan, page after page, the next page read while the caller stores one."""
    pages = 0
    reading: asyncio.Future[Page] | None = None  # the next page, read while this one is stored
    try:
        while max_pages is None or pages < max_pages:
            if reading is None:
                reading = asyncio.ensure_future(load.read(cursor, page_size))
            page = await reading
            reading = None
            following = page.cursor if page.cursor is not None else cursor
            if load.prefetch and page.more and (max_pages is None or pages + 1 < max_pages):
                # The next page's start is known now: M3 answers it while this one is classified
                # and stored. Only this page's cursor is stored with its events; the next page
                # is lost with the process if it dies, and read again by the run that continues.
                reading = asyncio.ensure_future(load.read(following, page_size))
            pages += 1
            yield page
            if not page.more:
                return
            cursor = following
    finally:
        if reading is not None:  # this page failed: the next one is not wanted
            _drop(reading)


async def _ranged(
    load: M3ListLoad, page_size: int, readers: int, cursor: str | None, segments: Any
) -> AsyncGenerator[Page]:
    """The list as key ranges read side by side (sync_ranges.py); each page carries the chain."""
    reader = load.ranges(page_size, readers, cursor, segments)
    pages = reader.pages()
    try:
        async for page in pages:
            yield Page(page.records, page.cursor, True, page.segments)
    finally:
        await pages.aclose()


def _drop(reading: asyncio.Future[Page]) -> None:
    if reading.done():
        if not reading.cancelled():
            reading.exception()  # retrieved: the error that ends the run is the earlier one
    else:
        reading.cancel()


async def _page(
    sessions: async_sessionmaker[AsyncSession],
    load: Load,
    mapping: Mapping,
    progress: Progress,
    page: Page,
    *,
    dry_run: bool,
) -> None:
    """One page, classified and (unless ``dry_run``) enqueued with its digests and the run's
    cursor in one transaction."""
    counts = progress.counts
    async with sessions.begin() as session:
        known = await load.known(session, [key for key, _ in page.records]) if page.records else {}
        kept: list[tuple[str, dict[str, Any], str]] = []
        for n, (key, data) in enumerate(page.records, 1):
            if not n % YIELD_EVERY:
                await asyncio.sleep(0)
            digest = load.digest(data)
            counts["read"] += 1
            if known.get(key) == digest:  # enqueued before (refused then: a dead letter since)
                counts["same"] += 1
                continue
            reason = load.refusal(mapping, key, data)
            if reason is not None:
                counts["refused"] += 1
                if len(progress.refusals) < MAX_REFUSALS_KEPT:
                    progress.refusals.append({"key": key, "reason": reason[:500]})
            else:
                counts["new" if key not in known else "changed"] += 1
            kept.append((key, data, digest))
        if page.records:
            counts["pages"] += 1
        if page.cursor is not None:
            progress.cursor = page.cursor
        if dry_run:  # classified only: nothing enqueued, no digest, no cursor stored
            return
        digests = await load.write(session, progress.run_id, kept) if kept else []
        for key, reason in load.refused_on_write():
            counts["new" if key not in known else "changed"] -= 1
            counts["refused"] += 1
            if len(progress.refusals) < MAX_REFUSALS_KEPT:
                progress.refusals.append({"key": key, "reason": reason[:500]})
        await store.store_page(
            session,
            progress.run_id,
            load.records_entity,
            digests=digests,
            cursor=progress.cursor,
            counts=counts,
            refusals=progress.refusals,
            instance=load.instance,
            segments=page.segments,
        )
