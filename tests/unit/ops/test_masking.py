"""Personal data masking (m3bng.ops.masking): by key name, by value pattern, recognisable."""

from __future__ import annotations

import copy
import json

import pytest

from m3bng.ops.masking import Kind, mask, mask_field, mask_text, personal_kind

CUSTOMER = {
    "CustomerID": "C-2001",
    "CompanyName": "Velo Sport AB",
    "FirstName": "Anna",
    "Email": "anna.berg@velosport.example",
    "Phone": "+46 8 123 456",
    "BillingAddress": {"Line1": "Storgatan 1", "City": "Stockholm", "PostalCode": "11122", "Country": "SE"},
    "Lines": [{"LineID": "1", "SKU": "BIKE-100", "Quantity": "2"}],
    "TaxExemptStatus": False,
    "CreditLimit": 50000,
}


def test_bng_customer_is_masked_by_key_and_stays_recognisable() -> None:
    masked = mask(CUSTOMER)
    assert masked["Email"] == "a***@v***.example"
    assert masked["Phone"] == "***56"
    assert masked["BillingAddress"] == {
        "Line1": "S***",
        "City": "S***",
        "PostalCode": "1***",
        "Country": "SE",
    }
    # Everything else is untouched: ids, names, lines, numbers, booleans.
    for key in ("CustomerID", "CompanyName", "FirstName", "Lines", "TaxExemptStatus", "CreditLimit"):
        assert masked[key] == CUSTOMER[key]


def test_masking_does_not_change_its_input_and_is_deterministic() -> None:
    original = copy.deepcopy(CUSTOMER)
    assert mask(CUSTOMER) == mask(CUSTOMER)
    assert original == CUSTOMER


def test_m3_field_names_in_step_requests() -> None:
    request = {
        "CUNO": "C-2001",
        "CUNM": "Velo Sport AB",
        "CUA1": "Storgatan 1",
        "CUA2": "Box 12",
        "TOWN": "Stockholm",
        "PONO": "11122",
        "CSCD": "SE",
        "PHNO": "+46 8 123 456",
        "TFNO": "08-123 999",
        "MAIL": "anna.berg@velosport.example",
        "SUA1": "Mannerheimintie 5",
    }
    masked = mask(request)
    assert masked == {
        "CUNO": "C-2001",
        "CUNM": "Velo Sport AB",
        "CUA1": "S***",
        "CUA2": "B***",
        "TOWN": "S***",
        "PONO": "1***",
        "CSCD": "SE",
        "PHNO": "***56",
        "TFNO": "***99",
        "MAIL": "a***@v***.example",
        "SUA1": "M***",
    }


def test_oagis_bod_data_dictionary() -> None:
    bod = {
        "PartyIDs": {"ID": ["10001"]},
        "Name": "ACME Retail Ltd",
        "Location": {
            "Address": {
                "AddressLine": ["Main Street 1", "Building B"],
                "AddressLine@": [{"sequence": "1"}, {"sequence": "2"}],
                "CityName": "Stockholm",
                "CountrySubDivisionCode": "AB",
                "CountryCode": "SE",
                "PostalCode": "11122",
            },
            "Address@": {"type": "PostalAddress"},
        },
        "Communication": [
            {"ChannelCode": "Telephone", "UseCode": "Office", "DialNumber": "+46 8 123 456"},
            {"ChannelCode": "EMail", "URI": "orders@acme.example"},
        ],
    }
    masked = mask(bod)
    address = masked["Location"]["Address"]
    assert address["AddressLine"] == ["M***", "B***"]
    assert address["AddressLine@"] == [{"sequence": "1"}, {"sequence": "2"}]
    assert (address["CityName"], address["PostalCode"]) == ("S***", "1***")
    assert (address["CountryCode"], address["CountrySubDivisionCode"]) == ("SE", "AB")
    assert masked["Location"]["Address@"] == {"type": "PostalAddress"}
    assert masked["Communication"][0] == {
        "ChannelCode": "Telephone",
        "UseCode": "Office",
        "DialNumber": "***56",
    }
    assert masked["Communication"][1] == {"ChannelCode": "EMail", "URI": "o***@a***.example"}
    assert masked["PartyIDs"] == {"ID": ["10001"]} and masked["Name"] == "ACME Retail Ltd"


def test_emails_inside_free_text_anywhere() -> None:
    error = "MAIL anna.berg@velosport.example rejected; contact j@e.com or ops@sub.example.co.uk."
    assert mask_text(error) == ("MAIL a***@v***.example rejected; contact j***@e***.com or o***@s***.uk.")
    nested = mask({"errors": [{"message": error}], "note": "no address here", "count": 3})
    assert nested["errors"][0]["message"] == mask_text(error)
    assert nested["note"] == "no address here" and nested["count"] == 3
    assert mask_text(mask_text(error)) == mask_text(error)  # masking a masked text changes nothing


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("Email", Kind.EMAIL),
        ("email_address", Kind.EMAIL),
        ("MAIL", Kind.EMAIL),
        ("Phone", Kind.PHONE),
        ("MobilePhone", Kind.PHONE),
        ("fax", Kind.PHONE),
        ("DialNumber", Kind.PHONE),
        ("PHNO", Kind.PHONE),
        ("ShippingAddress", Kind.ADDRESS),
        ("street", Kind.ADDRESS),
        ("AddressLine", Kind.ADDRESS),
        ("zip", Kind.ADDRESS),
        ("PostalCode", Kind.ADDRESS),
        ("City", Kind.ADDRESS),
        ("Line2", Kind.ADDRESS),
        ("ADR1", Kind.ADDRESS),
        ("AddressType", None),
        ("ShippingAddressID", None),
        ("Address@", None),
        ("Lines", None),
        ("LineID", None),
        ("Capacity", None),
        ("CustomerID", None),
        ("Country", None),
        ("Name", None),
    ],
)
def test_personal_key_names(key: str, kind: Kind | None) -> None:
    assert personal_kind(key) is kind


def test_short_and_odd_values() -> None:
    masked = mask({"Phone": "112", "Email": "not-an-address", "PostalCode": 11122, "City": "X", "Fax": None})
    assert masked == {"Phone": "***", "Email": "n***", "PostalCode": "1***", "City": "***", "Fax": None}


def test_secrets_hidden_at_any_depth_when_asked() -> None:
    value = {"auth": {"api_key": "k-123", "user": "a@b.example"}, "Phone": "+46 8 123 456"}
    masked = mask_field("call", value, secret=lambda key: "key" in key)
    assert masked == {"auth": {"api_key": "***", "user": "a***@b***.example"}, "Phone": "***56"}
    assert mask_field("api_key", {"nested": "x"}, secret=lambda key: "key" in key) == "***"


def test_very_deep_values_are_hidden_not_leaked() -> None:
    deep: object = "anna.berg@velosport.example +46 8 123 456"
    for _ in range(100):
        deep = {"x": deep}
    assert "velosport" not in json.dumps(mask(deep))
