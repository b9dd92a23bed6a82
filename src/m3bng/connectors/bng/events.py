"""The envelope every BNG webhook shares, and the business key that orders its events.

Per-type payload models (order, customer, product ...) arrive with the BNG flows; the envelope is
what the inbox needs to store an event durably: its type, and the key that keeps events about
the same business object in order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$"


class BngEnvelope(BaseModel):
    """``{"type": "order.created", "timestamp": "…", "data": {…}}`` (Standard Webhooks body)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(min_length=3, max_length=128, pattern=EVENT_TYPE_PATTERN)
    timestamp: datetime | None = None
    data: dict[str, Any]


# Which field of `data` identifies the business object, by the event type's entity.
_KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "order": ("OrderID",),
    "customer": ("CustomerID", "ExternalID"),
    "product": ("SKU", "ProductID"),
    "vendor": ("VendorID", "SupplierID"),
    "purchase_order": ("PurchaseOrderID",),
    "supplier_invoice": ("InvoiceID", "SupplierInvoiceID"),
    "payment": ("PaymentID",),
    "gl_entry": ("EntryID", "JournalID"),
}


def business_key(event_type: str, data: dict[str, Any]) -> str | None:
    """``order:1001``, ``inventory:SKU-1@WH1``…; None when the payload carries no id.

    Events with the same key are applied strictly in arrival order; events without one never
    wait for anything.
    """
    entity = event_type.split(".", 1)[0]
    if entity == "inventory":
        sku, warehouse = data.get("SKU"), data.get("Warehouse")
        return f"inventory:{sku}@{warehouse}" if sku not in (None, "") else None
    for field_name in (*_KEY_FIELDS.get(entity, ()), "ID", "id"):
        value = data.get(field_name)
        if value not in (None, ""):
            return f"{entity}:{value}"[:255]
    return None
