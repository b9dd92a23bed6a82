"""Reconciliation of stock: BNG's balances per warehouse and SKU against M3's (``m3bng reconcile stock``).

M3 is the master of stock. Balances reach BNG by BODs or the inventory poller, and either can
miss one (a lost BOD, a poller that was off, a balance changed by hand in BNG). This reads BNG's
whole ``inventory`` collection and M3's balances of every warehouse (MMS080MI LstItemWarehous,
the ``list`` call of ``mappings/inventory_poll.yaml``, one call per warehouse), renders the
mapping's ``balance`` request for each M3 row (what the poller's flow would write) and compares
its quantities with BNG's. The warehouses are those of ``M3BNG_INVENTORY_POLL_WAREHOUSES`` and
those BNG holds: a warehouse in neither is not looked at (M3 has no cheap list of warehouses
with stock). Each balance falls in one class:

* ``matching``: every quantity the mapping writes is within ``tolerance`` of BNG's;
* ``drift``: a quantity differs by more than ``tolerance`` (the finding lists each one);
* ``missing_in_bng``: M3 has the balance, BNG has none for that warehouse and SKU;
* ``unknown_in_m3``: BNG has a balance M3 does not list for that warehouse;
* ``refused``: the mapping cannot render M3's row (its flow would dead-letter it).

With ``fix``, each ``drift`` and ``missing_in_bng`` balance is enqueued as an
``inventory.balance`` event of source ``reconcile`` through the poller's own enqueue: the
inventory_poll flow writes M3's balance to BNG through the workers (retried, ordered with the
poller's events by the same business key, within BNG's rate limit), and the finding names the
event. ``unknown_in_m3`` is never fixed: deleting stock in BNG is a decision for a person.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingABC
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.connectors.bng.client import BngClient
from m3bng.connectors.m3.client import M3Client
from m3bng.mapping import Mapping, MappingError
from m3bng.poller import balance_digest, enqueue_balance, list_balances
from m3bng.reconcile import EPOCH, SOURCE, Report, quantity, recorded
from m3bng.store.models import DEFAULT_INSTANCE
from m3bng.store.sql import utcnow

CLASSES = ("matching", "drift", "missing_in_bng", "unknown_in_m3", "refused")
KEY_FIELDS = ("Warehouse", "SKU")
BATCH = 200  # events per transaction when fixing


async def reconcile_stock(
    sessions: async_sessionmaker[AsyncSession],
    bng: BngClient,
    m3: M3Client,
    mapping: Mapping,
    *,
    warehouses: list[str],
    fix: bool = False,
    tolerance: Decimal = Decimal(0),
    instance: str = DEFAULT_INSTANCE,
) -> Report:
    """One run (module docstring) for the BNG ``instance``. A fix for another instance than
    default leaves the poller's snapshots alone (they are shared: writing one would make the
    poller skip a change it has not yet sent to the other instances)."""

    async def body(report: Report) -> None:
        held: dict[tuple[str, str], dict[str, Any]] = {}
        for balance in await bng.changed_since("inventory", EPOCH):
            where = (str(balance.get("Warehouse") or ""), str(balance.get("SKU") or ""))
            if all(where):
                held[where] = balance
        seen: set[tuple[str, str]] = set()
        corrections: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        for warehouse in sorted(set(warehouses) | {w for w, _ in held}):
            report.m3_calls += 1
            for row in await list_balances(m3, mapping, warehouse):
                where = (warehouse, row["ITNO"])
                seen.add(where)
                entry = _classify(report, mapping, row, held.get(where), tolerance)
                if fix and entry is not None:
                    corrections.append((warehouse, row, entry))
        for warehouse, sku in sorted(set(held) - seen):
            report.add(f"{warehouse}/{sku}", "unknown_in_m3", {"bng": _quantities(held[(warehouse, sku)])})
        now = utcnow()
        for start in range(0, len(corrections), BATCH):
            async with sessions.begin() as session:
                for warehouse, row, entry in corrections[start : start + BATCH]:
                    digest = balance_digest(row)
                    entry["event_id"] = await enqueue_balance(
                        session,
                        warehouse,
                        row,
                        digest,
                        now,
                        source=SOURCE,
                        instances=[instance],
                        snapshot=instance == DEFAULT_INSTANCE,
                    )
        report.fixed = len(corrections)

    return await recorded(sessions, "stock", EPOCH, CLASSES, body, fix=fix, instance=instance)


def _classify(
    report: Report,
    mapping: Mapping,
    row: dict[str, str],
    have: dict[str, Any] | None,
    tolerance: Decimal,
) -> dict[str, Any] | None:
    """Count the M3 balance in its class; the finding when BNG needs correcting, else None."""
    key = f"{row.get('WHLO')}/{row['ITNO']}"
    try:
        [request] = mapping.requests("balance", row, {"bod": {}, "sum": {}})
    except (MappingError, ValueError) as exc:  # a row the flow would dead-letter: not comparable
        report.add(key, "refused", {"problem": f"the mapping cannot render M3's balance: {exc}"})
        return None
    want = request.body if isinstance(request.body, dict) else {}
    if have is None:
        return report.add(key, "missing_in_bng", {"m3": _quantities(want)})
    differences = _differences(want, have, tolerance)
    if not differences:
        report.add(key, "matching")
        return None
    return report.add(key, "drift", {"differences": differences, "tolerance": str(tolerance)})


def _quantities(balance: MappingABC[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in balance.items() if k not in KEY_FIELDS and quantity(v) is not None}


def _differences(
    want: MappingABC[str, Any], have: MappingABC[str, Any], tolerance: Decimal
) -> list[dict[str, Any]]:
    """Each field the mapping writes whose value in BNG is off: by more than ``tolerance`` for a
    quantity, at all for anything else."""
    out = []
    for name, value in want.items():
        if name in KEY_FIELDS or value in (None, ""):
            continue
        theirs = have.get(name)
        a, b = quantity(value), quantity(theirs)
        if (b is None or abs(a - b) > tolerance) if a is not None else str(value) != str(theirs):
            out.append({"field": name, "m3": str(value), "bng": None if theirs is None else str(theirs)})
    return out
