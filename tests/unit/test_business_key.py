from __future__ import annotations

import pytest

from m3bng.connectors.bng.events import business_key


@pytest.mark.parametrize(
    ("event_type", "data", "key"),
    [
        ("order.created", {"OrderID": "SO-1"}, "order:SO-1"),
        ("order.updated", {"OrderID": 7}, "order:7"),
        ("customer.updated", {"CustomerID": "C1", "ExternalID": "E"}, "customer:C1"),
        ("customer.created", {"ExternalID": "E"}, "customer:E"),
        ("product.created", {"SKU": "A-1"}, "product:A-1"),
        ("inventory.adjusted", {"SKU": "A-1", "Warehouse": "100"}, "inventory:A-1@100"),
        ("payment.captured", {"PaymentID": "P"}, "payment:P"),
        ("something.else", {"id": "x"}, "something:x"),
        ("order.created", {}, None),
        ("inventory.adjusted", {"Warehouse": "100"}, None),
    ],
)
def test_business_key(event_type: str, data: dict[str, object], key: str | None) -> None:
    assert business_key(event_type, data) == key
