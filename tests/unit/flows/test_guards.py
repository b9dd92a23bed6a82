"""Echo suppression decides by content: these are the cases it must get right both ways."""

from __future__ import annotations

from typing import Any

from m3bng.flows.runtime import is_echo, merged, split_names

KNOWN: dict[str, Any] = {
    "CustomerID": "C-1",
    "CompanyName": "Nordic Bikes Aktiebolag with a very long registered name",
    "Email": "Ann@Example.com",
    "CreditLimit": 5000,
    "BillingAddress": {"Line1": "Storgatan 1", "City": "Stockholm", "Country": "se"},
}


def test_unknown_object_is_never_an_echo() -> None:
    assert not is_echo({"CompanyName": "x"}, None, ignore=set(), truncated_ok=True)


def test_same_values_in_other_spelling_are_an_echo() -> None:
    body = {
        "CustomerID": "C-1",
        "Email": "ann@example.com ",
        "CreditLimit": "5000.00",
        "BillingAddress": {"City": "Stockholm", "Country": "SE"},
    }
    assert is_echo(body, KNOWN, ignore=set(), truncated_ok=True)


def test_text_m3_cut_to_its_field_length_is_an_echo_only_from_the_m3_side() -> None:
    cut = {"CompanyName": KNOWN["CompanyName"][:36]}
    assert is_echo(cut, KNOWN, ignore=set(), truncated_ok=True)
    assert not is_echo(cut, KNOWN, ignore=set(), truncated_ok=False)


def test_a_changed_field_is_not_an_echo() -> None:
    assert not is_echo({"Email": "new@example.com"}, KNOWN, ignore=set(), truncated_ok=True)
    assert not is_echo({"BillingAddress": {"City": "Malmö"}}, KNOWN, ignore=set(), truncated_ok=True)
    assert not is_echo({"Phone": "+46 8 123"}, KNOWN, ignore=set(), truncated_ok=True)  # new value


def test_ignored_fields_do_not_count() -> None:
    body = {"CustomerID": "C-1", "M3CustomerNumber": "10001"}
    assert is_echo(body, KNOWN, ignore=split_names("M3CustomerNumber, UpdatedAt"), truncated_ok=True)
    assert not is_echo(body, KNOWN, ignore=set(), truncated_ok=True)


def test_lists_compare_element_by_element() -> None:
    known = {"Lines": [{"SKU": "A", "Quantity": 2}]}
    assert is_echo({"Lines": [{"SKU": "A", "Quantity": "2.0"}]}, known, ignore=set(), truncated_ok=False)
    assert not is_echo({"Lines": [{"SKU": "A", "Quantity": 3}]}, known, ignore=set(), truncated_ok=False)
    assert not is_echo({"Lines": []}, {"Lines": [{"SKU": "A"}]}, ignore=set(), truncated_ok=False)


def test_merged_keeps_what_a_partial_write_did_not_touch() -> None:
    state = merged(KNOWN, {"OrderStatus": "Shipped", "BillingAddress": {"City": "Malmö"}})
    assert state["OrderStatus"] == "Shipped"
    assert state["BillingAddress"] == {"Line1": "Storgatan 1", "City": "Malmö", "Country": "se"}
    assert state["Email"] == KNOWN["Email"]
