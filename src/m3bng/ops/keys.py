"""Which business keys an event is about, for "where is order X" (table ``event_keys``).

Ops search by whatever number they hold: BNG's order id, the M3 ORNO a confirm produced, a
customer number, a BODID. The keys come from the event's id, its business key, well-known
fields of its data, and the M3 keys its flow checkpointed (ORNO, CUNO, ...). Values are trimmed
and case-folded, so the search is case-insensitive and an index lookup on both databases.
"""

from __future__ import annotations

import re
from typing import Any

from m3bng.store.search import normalise

# Fields of BNG event data (and of BOD data dictionaries) worth finding an event by.
_DATA_FIELDS = {
    "orderid": "order_id",
    "customerid": "customer_id",
    "externalid": "external_id",
    "customernumber": "cuno",
    "m3customernumber": "cuno",
    "sku": "sku",
    "productid": "product_id",
    "itemnumber": "itno",
    "vendorid": "vendor_id",
    "supplierid": "vendor_id",
    "suppliernumber": "suno",
    "purchaseorderid": "purchase_order_id",
    "invoiceid": "invoice_id",
    "supplierinvoiceid": "invoice_id",
    "invoicenumber": "invoice_id",
    "paymentid": "payment_id",
    "entryid": "entry_id",
    "journalid": "entry_id",
    "orno": "orno",
    "cuno": "cuno",
    "cuor": "cuor",
    "itno": "itno",
    "suno": "suno",
    "puno": "puno",
    "documentid": "document_id",
}
_M3_FIELD = re.compile(r"^[A-Z][A-Z0-9]{3,5}$")  # ORNO, CUNO, PUNO, ITNO, SINO ...


def event_keys(
    *,
    source: str,
    external_id: str,
    business_key: str | None,
    payload: Any,
    checkpoint: dict[str, Any] | None,
) -> dict[str, str]:
    """value → kind, for every key the event can be found by."""
    keys: dict[str, str] = {}

    def add(value: Any, kind: str) -> None:
        text = normalise(value)
        if text is not None and text not in keys:
            keys[text] = kind

    add(external_id, "bodid" if source == "ion" else "external_id")
    if business_key:
        entity, _, rest = business_key.partition(":")
        add(business_key, "business_key")
        # order:1001 → 1001; SalesOrder:770_AAA:1000123 → 1000123; inventory:SKU@WH → SKU@WH
        add(rest.rsplit(":", 1)[-1] if rest else None, f"{entity.lower()[:24]}_id")
    if isinstance(payload, dict):
        data = payload.get("data")
        for source_dict in (data, payload.get("bod")):
            if isinstance(source_dict, dict):
                _scan(source_dict, add, depth=0)
    for name, value in (checkpoint or {}).items():
        if _M3_FIELD.match(name) and isinstance(value, (str, int)) and not isinstance(value, bool):
            add(value, name.lower())
    return keys


def _scan(data: dict[str, Any], add: Any, *, depth: int) -> None:
    """Known fields at the top level and one level down (a BOD's header, an order's customer)."""
    for name, value in data.items():
        kind = _DATA_FIELDS.get(name.replace("_", "").casefold())
        if kind is not None:
            add(value, kind)
        elif isinstance(value, dict) and depth < 2:
            _scan(value, add, depth=depth + 1)
