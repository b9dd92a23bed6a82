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

Only this process's cache is touched: another ``m3bng serve`` process keeps its values until
their TTL (docs/storefront-api.md, "Several processes").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from m3bng.connectors.ion.bod import ParsedBod
from m3bng.storefront.service import Storefront

PRICE_NOUNS = frozenset({"PriceList", "SalesPriceList", "CustomerPriceList"})


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


def invalidate_for(storefront: Storefront, bod: ParsedBod) -> int:
    """Mark what ``bod`` changed as stale in ``storefront``'s caches; returns how many entries."""
    data = bod.data
    if bod.noun == "ItemMaster":
        items = set(item_ids(data))
        return storefront.invalidate(prices=items, stock=[(i, None) for i in items])
    if bod.noun == "InventoryCount":
        header = _text(_get(data, "InventoryCountHeader", "WarehouseLocation", "ID")) or bod.location
        lines = data.get("InventoryCountLine") if isinstance(data, dict) else None
        pairs: list[tuple[str, str | None]] = []
        for line in lines if isinstance(lines, list) else [lines] if lines else []:
            whlo = _text(_get(line, "WarehouseLocation", "ID")) or header
            pairs.extend((itno, whlo) for itno in item_ids(line))
        return storefront.invalidate(stock=pairs)
    if bod.noun in PRICE_NOUNS:
        items = set(item_ids(data))
        if not items:
            return storefront.prices.invalidate_all()
        return storefront.invalidate(prices=items)
    return 0
