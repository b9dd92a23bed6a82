"""Which storefront cache entries a received BOD makes stale.

M3 tells the world an item or a balance changed by publishing a BOD; the storefront's cached
prices and balances of that item are then wrong until their TTL ends, so the receipt of the BOD
ends it at once (api/ion.py calls ``invalidate_for`` once the BOD is stored):

* **SyncItemMaster**: the item's prices (every customer) and balances (every warehouse): its
  status, unit or price basis may have changed;
* **SyncInventoryCount**: the balances of each line's item in the line's (or the header's)
  warehouse (the noun is the repository's unverified assumption, facts.md §3);
* **price BODs** (nouns ``PriceList``, ``SalesPriceList``, ``CustomerPriceList``): UNVERIFIED, the
  facts do not say M3 publishes one. The prices of every item the BOD names (any ``ItemID/ID``),
  or every cached price when it names none.

The process that receives a BOD invalidates its cache at once; every other serving process
finds the BOD in the store within ``M3BNG_STOREFRONT_BOD_FOLLOW_SECONDS`` (``BodFollower``), so
a load balancer in front of several ``m3bng serve`` processes shows no process an old price
for longer than that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.connectors.ion.bod import ParsedBod
from m3bng.store import events
from m3bng.storefront.service import Storefront

log = structlog.get_logger(__name__)

PRICE_NOUNS = frozenset({"PriceList", "SalesPriceList", "CustomerPriceList"})
NOUNS = frozenset({"ItemMaster", "InventoryCount"}) | PRICE_NOUNS
# The event types (BOD types) the follower reads: M3 publishes with the verb Sync.
BOD_TYPES = tuple(sorted(f"Sync{noun}" for noun in NOUNS))
SOURCE = "ion"


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


def _text(value: Any) -> str | None:
    value = _first(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _get(data: Any, *path: str) -> Any:
    for name in path:
        if not isinstance(data, dict):
            return None
        data = _first(data.get(name))
    return data


def item_ids(data: Any) -> Iterator[str]:
    """Every ``ItemID/ID`` anywhere in the BOD's data area."""
    if isinstance(data, dict):
        for name, value in data.items():
            if name == "ItemID":
                for one in value if isinstance(value, list) else [value]:
                    found = _text(one.get("ID")) if isinstance(one, dict) else None
                    if found:
                        yield found
            else:
                yield from item_ids(value)
    elif isinstance(data, list):
        for value in data:
            yield from item_ids(value)


def invalidate_for(storefronts: Iterable[Storefront], bod: ParsedBod) -> int:
    """Mark what ``bod`` changed as stale in the caches of the storefronts (one per BNG instance)
    that read its company; returns how many entries."""
    return invalidate_in(storefronts, bod.noun, bod.data, bod.location, bod.accounting_entity)


def invalidate_in(
    storefronts: Iterable[Storefront],
    noun: str,
    data: Any,
    location: str | None,
    accounting_entity: str | None,
) -> int:
    """``invalidate_from`` in each storefront whose M3 company is the BOD's accounting entity's
    (``CONO_DIVI``): an item of company 100 changing leaves company 200's prices of the same
    item number alone. A BOD naming no company, or a storefront without one, invalidates."""
    return sum(
        invalidate_from(storefront, noun, data, location)
        for storefront in list(storefronts)
        if storefront.reads_company(accounting_entity)
    )


def invalidate_from(storefront: Storefront, noun: str, data: Any, location: str | None) -> int:
    """``invalidate_for`` from a BOD's noun, data area and location (a stored event's payload)."""
    if noun == "ItemMaster":
        items = set(item_ids(data))
        return storefront.invalidate(prices=items, stock=[(i, None) for i in items])
    if noun == "InventoryCount":
        header = _text(_get(data, "InventoryCountHeader", "WarehouseLocation", "ID")) or location
        lines = data.get("InventoryCountLine") if isinstance(data, dict) else None
        pairs: list[tuple[str, str | None]] = []
        for line in lines if isinstance(lines, list) else [lines] if lines else []:
            whlo = _text(_get(line, "WarehouseLocation", "ID")) or header
            pairs.extend((itno, whlo) for itno in item_ids(line))
        return storefront.invalidate(stock=pairs)
    if noun in PRICE_NOUNS:
        items = set(item_ids(data))
        if not items:
            return storefront.prices.invalidate_all()
        return storefront.invalidate(prices=items)
    return 0


class BodFollower:
    """Invalidates this process's storefront cache for the BODs other processes received: polls
    the store for new ION events of the nouns that change prices or stock, from the newest
    event at start on. A BOD this process received itself (``mine``) was invalidated at once
    and is skipped, so it costs no second read from M3."""

    def __init__(
        self,
        storefronts: Mapping[str, Storefront],
        sessions: async_sessionmaker[AsyncSession],
        seconds: float,
    ) -> None:
        """``storefronts``: the process's storefronts by instance, as they are built (a live view)."""
        self.storefronts, self.sessions, self.seconds = storefronts, sessions, seconds
        self.last: int | None = None
        self._mine: set[int] = set()

    def mine(self, event_id: int) -> None:
        self._mine.add(event_id)

    async def poll(self) -> int:
        """One look at the store; returns how many entries it invalidated."""
        async with self.sessions() as session:
            if self.last is None:
                self.last = await events.last_event_id(session)
                return 0
            rows = await events.events_after(
                session, self.last, source=SOURCE, event_types=BOD_TYPES, limit=500
            )
        count = 0
        for event_id, _type, payload in rows:
            self.last = event_id
            if event_id in self._mine:
                self._mine.discard(event_id)
                continue
            if isinstance(payload, dict):  # None once retention purged it
                bod = payload.get("bod") or {}
                count += invalidate_in(
                    self.storefronts.values(),
                    str(bod.get("noun")),
                    payload.get("data"),
                    bod.get("location"),
                    bod.get("accounting_entity"),
                )
        if self._mine and rows:
            self._mine = {i for i in self._mine if i > self.last}
        return count

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                count = await self.poll()
            except Exception as exc:  # the store is away: the TTL still bounds staleness
                log.warning("storefront.follow_failed", error=repr(exc)[:300])
            else:
                if count:
                    log.info("storefront.invalidated", entries=count, by="store")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.seconds)
