from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from m3bng.connectors.bng.models import EVENT_MODELS, UnknownEventType, validate_event_data

ORDER = {
    "OrderID": "SO-1",
    "CustomerID": "C-1",
    "OrderDate": "2026-11-24",
    "Lines": [{"SKU": "A-1", "Quantity": "2", "UnitPrice": 9.5}],
}


def test_order_is_parsed_with_decimals() -> None:
    order = validate_event_data("order.created", ORDER)
    assert order.Lines[0].Quantity == Decimal("2")  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({**ORDER, "Lines": []}, "Lines"),
        ({**ORDER, "Lines": [{"SKU": "A-1", "Quantity": 0}]}, "Lines.0.Quantity"),
        ({k: v for k, v in ORDER.items() if k != "OrderID"}, "OrderID"),
        ({**ORDER, "OrderDate": "yesterday"}, "OrderDate"),
    ],
)
def test_bad_orders_name_the_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_event_data("order.created", data)
    locs = {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}
    assert any(loc.startswith(field) for loc in locs), locs


def test_gl_entry_must_balance() -> None:
    entry = {
        "EntryID": "GL-1",
        "Date": "2026-11-24",
        "Currency": "EUR",
        "Lines": [{"Account": "1000", "Debit": "10.00"}, {"Account": "3000", "Credit": "9.99"}],
    }
    with pytest.raises(ValidationError, match="must balance"):
        validate_event_data("gl_entry.created", entry)
    entry["Lines"][1]["Credit"] = "10.00"  # type: ignore[index]
    validate_event_data("gl_entry.created", entry)


def test_customer_needs_a_name_and_unknown_types_are_refused() -> None:
    with pytest.raises(ValidationError, match="CompanyName"):
        validate_event_data("customer.created", {"CustomerID": "C-1"})
    with pytest.raises(UnknownEventType, match=r"order\.deleted"):
        validate_event_data("order.deleted", {})
    assert len(EVENT_MODELS) == 13
