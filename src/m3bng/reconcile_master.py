"""Reconciliation of customers and items: M3's master data against BNG's (``m3bng reconcile
customers|items``).

Customers and items are born in M3 and reach BNG by BODs (``customer_to_bng``,
``product_to_bng``) or the initial load (``m3bng sync``). A lost BOD, a change made by hand in
BNG, or an object deleted on one side leaves the two apart without any event saying so. This
reads M3's whole list the way the load does (CRS610MI LstByNumber, MMS200MI LstItmByItm, paged
by key: ``sync.M3ListLoad``), turns each record into the data its BOD would carry and renders
the flow's mapping for it (``sync.written``): the fields the flow would write. It reads BNG's
whole collection (``customers``, ``products``) and compares field by field the way the flow's
echo check does (numbers as numbers, empty as empty, BNG's truncation of a long value as the
same; the mapping's ``echo_ignore`` fields not at all). The BNG id of an M3 record is its
cross-reference, else its M3 key (what the flow uses). Each object falls in one class:

* ``matching``: BNG holds every field the mapping writes;
* ``different``: BNG holds the object, but some field differs (the finding lists them);
* ``missing_in_bng``: M3 has it, BNG has no object with its id;
* ``unknown_in_m3``: BNG has it, M3 has nothing with its M3 key (the finding's key is BNG's id);
* ``refused``: the mapping cannot render M3's record (the flow would dead-letter it).

With ``fix``, each ``missing_in_bng`` and ``different`` record is enqueued exactly as the load
enqueues it (``sync.record_event``, source ``reconcile``): the same flow writes M3's values to
BNG through the workers. For a ``different`` object, what m3bng believed BNG holds is dropped
first: BNG was read to hold something else, and the flow's echo check must not take the
correction for an echo of that stale belief. M3 is taken as the master: where BNG is the master
of customers (``customer_sync`` from BNG's webhooks), do not run ``--fix`` for customers.
``unknown_in_m3`` is never fixed.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.connectors.bng.client import BngClient
from m3bng.connectors.m3.client import M3Client
from m3bng.flows.runtime.guards import is_echo, split_names
from m3bng.mapping import Mapping, MappingError
from m3bng.mapping.engine import JMESPathError
from m3bng.reconcile import EPOCH, SOURCE, ReconcileRefused, Report, recorded
from m3bng.store import queue
from m3bng.store import reconcile as store
from m3bng.store.models import DEFAULT_INSTANCE
from m3bng.sync import ENTITIES, PAGE_SIZE, Entity, M3ListLoad, record_event, written

CLASSES = ("matching", "different", "missing_in_bng", "unknown_in_m3", "refused")
# Where BNG keeps each kind, and the field that is its id.
COLLECTIONS = {"customers": ("customers", "CustomerID"), "items": ("products", "SKU")}


async def reconcile_master(
    sessions: async_sessionmaker[AsyncSession],
    bng: BngClient,
    m3: M3Client,
    mappings: dict[str, Mapping],
    kind: str,
    *,
    fix: bool = False,
    page_size: int = PAGE_SIZE,
    instance: str = DEFAULT_INSTANCE,
) -> Report:
    """One run (module docstring)."""
    entity = ENTITIES.get(kind)
    if entity is None or kind not in COLLECTIONS:
        raise ReconcileRefused(f"reconcile {kind!r}: customers and items are the master data kinds")
    mapping = mappings.get(entity.flow)
    if mapping is None:
        raise ReconcileRefused(f"reconcile {kind}: no mapping for flow {entity.flow!r} is loaded")
    collection, id_field = COLLECTIONS[kind]

    async def body(report: Report) -> None:
        held = {str(r[id_field]): r for r in await bng.changed_since(collection, EPOCH) if r.get(id_field)}
        async with sessions() as session:
            linked = await store.all_links(session, instance, str(mapping.option("entity") or entity.name))
        bng_id_of = {m3_key: bng_id for bng_id, m3_key in linked.items()}
        ignore = split_names(mapping.option("echo_ignore"))
        fixes: list[tuple[dict[str, Any], str, dict[str, Any]]] = []
        in_m3: set[str] = set()
        load = M3ListLoad(entity, m3)  # the load's paging by key, record by record as it reads
        cursor, more = None, True
        while more:
            page = await load.read(cursor, page_size)
            report.m3_calls += 1
            for key, data in page.records:
                bng_id = bng_id_of.get(key, key)
                in_m3.add(bng_id)
                entry = _classify(report, mapping, entity, data, key, bng_id, held.get(bng_id), ignore)
                if fix and entry is not None:
                    fixes.append((data, key, entry))
            cursor, more = page.cursor, page.more
        for bng_id in sorted(set(held) - in_m3):
            report.add(bng_id, "unknown_in_m3", {"m3_key": linked.get(bng_id)})
        if fixes:
            await _enqueue(sessions, report, mapping, entity, fixes, instance)

    return await recorded(sessions, kind, EPOCH, CLASSES, body, fix=fix, instance=instance)


def _classify(
    report: Report,
    mapping: Mapping,
    entity: Entity,
    data: dict[str, Any],
    key: str,
    bng_id: str,
    have: dict[str, Any] | None,
    ignore: set[str],
) -> dict[str, Any] | None:
    """Count the M3 record in its class; the finding when BNG needs correcting, else None."""
    try:
        want = written(mapping, entity, data, key, bng_id)
    except (MappingError, JMESPathError, ValueError, TypeError) as exc:
        report.add(key, "refused", {"problem": str(exc)[:500]})
        return None
    if have is None:
        return report.add(key, "missing_in_bng", {"bng_id": bng_id})
    fields = [
        {"field": name, "m3": value, "bng": have.get(name)}
        for name, value in want.items()
        if name not in ignore and not is_echo({name: value}, have, ignore=ignore, truncated_ok=True)
    ]
    if not fields:
        report.add(key, "matching")
        return None
    return report.add(key, "different", {"bng_id": bng_id, "fields": fields})


async def _enqueue(
    sessions: async_sessionmaker[AsyncSession],
    report: Report,
    mapping: Mapping,
    entity: Entity,
    fixes: list[tuple[dict[str, Any], str, dict[str, Any]]],
    instance: str,
) -> None:
    """The load's events for these records, once per run (the run id is in the event id)."""
    state = str(mapping.option("echo_state") or "")
    stale = [entry["detail"]["bng_id"] for _, _, entry in fixes if entry["finding"] == "different"]
    news = [
        record_event(
            entity,
            data,
            key,
            external_id=f"{entity.name}:{key}:run{report.run_id}",
            source=SOURCE,
            instance=instance,
        )
        for data, key, _ in fixes
    ]
    async with sessions.begin() as session:
        if state:
            await store.forget_bng_state(session, instance, state, stale)
        stored = await queue.insert_events_once(session, news)
    for (_, _, entry), (event_id, _created) in zip(fixes, stored, strict=True):
        entry["event_id"] = event_id
    report.fixed = sum(1 for _, created in stored if created)
