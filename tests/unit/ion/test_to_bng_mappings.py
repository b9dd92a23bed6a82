"""The shipped M3 → BNG mappings read each place OAGIS allows: a BOD is parsed as the receiver
parses it and rendered with the real mapping file, as the to_bng flow renders it.

Phone and e-mail (customer_to_bng, vendor_to_bng), invoice tax (invoice_to_bng), and the sums
behind it (``sum.<Name>`` options); the order link is end to end in
tests/integration/to_bng/test_links_contacts_tax.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from m3bng.connectors.ion.bod import parse_bod
from m3bng.flows.to_bng import OptionSums
from m3bng.mapping import Mapping, MappingError, load_mapping
from tests.support.bods import Tree, invoice, party
from tests.unit.ion.bods import LIMIT, bod

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"


def _mapping(flow: str) -> Mapping:
    return load_mapping(MAPPINGS / f"{flow}.yaml")


def _body(flow: str, xml: bytes) -> dict[str, Any]:
    """The body of the mapping's one request for this BOD, with ``_ctx`` as the flow builds it."""
    mapping = _mapping(flow)
    parsed = parse_bod(xml, max_bytes=LIMIT)
    ctx: dict[str, Any] = {"bod": parsed.metadata(), "sum": OptionSums(mapping, parsed.data)}
    ctx["M3Key"] = ctx["BngID"] = mapping.key("M3Key", parsed.data, ctx)
    [request] = mapping.requests("upsert", parsed.data, ctx)
    assert request.body is not None
    return request.body


# -- phone and e-mail ---------------------------------------------------------------------------

CONTACTS = [
    pytest.param(
        [
            {"ChannelCode": "Telephone", "DialNumber": "+46 8 1"},
            {"ChannelCode": "EMail", "URI": "a@x.example"},
        ],
        "+46 8 1",
        "a@x.example",
        id="infor_telephone_and_email",
    ),
    pytest.param(
        [{"ChannelCode": "Phone", "DialNumber": "08-1"}, {"ChannelCode": "Email", "URI": "b@x.example"}],
        "08-1",
        "b@x.example",
        id="other_channel_spellings",
    ),
    pytest.param(
        [
            {"ChannelCode": "TelephoneNumber", "DialNumber": "08-2"},
            {"ChannelCode": "E-mail", "URI": "c@x.example"},
        ],
        "08-2",
        "c@x.example",
        id="telephone_number_and_e_mail",
    ),
    pytest.param(
        [{"ChannelCode": "Telephone", "CompleteNumber": "+46 8 3", "DialNumber": "3"}],
        "+46 8 3",
        None,
        id="complete_number_wins_over_dial_number",
    ),
    pytest.param(
        [
            {
                "ChannelCode": {"@listID": "Communication Channel", "#text": "Telephone"},
                "CountryDialing": "+46",
                "AreaDialing": "8",
                "DialNumber": "555 12",
            }
        ],
        "+46 8 555 12",
        None,
        id="split_number_is_joined",
    ),
    pytest.param(
        [{"ChannelCode": "Telephone", "AreaDialing": "8"}, {"ChannelCode": "Phone", "DialNumber": "4"}],
        "4",
        None,
        id="area_code_without_a_number_is_no_number",
    ),
    pytest.param(
        [
            {"ChannelCode": "Mobile", "DialNumber": "070-1"},
            {"ChannelCode": "Telephone", "DialNumber": "08-5"},
        ],
        "08-5",
        None,
        id="mobile_only_when_no_telephone",
    ),
    pytest.param(
        [
            {"ChannelCode": "Fax", "DialNumber": "08-9"},
            {"ChannelCode": "MobilePhone", "CompleteNumber": "070-2"},
        ],
        "070-2",
        None,
        id="mobile_as_fallback",
    ),
    pytest.param(
        [{"ChannelCode": "Telephone", "DialNumber": ""}, {"ChannelCode": "Telephone", "DialNumber": "08-6"}],
        "08-6",
        None,
        id="empty_telephone_is_passed_over",
    ),
    pytest.param(
        [{"DialNumber": "08-7"}, {"URI": "https://x.example"}, {"URI": "d@x.example"}],
        "08-7",
        "d@x.example",
        id="no_channel_code",
    ),
    pytest.param(
        [{"URI": "e@x.example"}, {"ChannelCode": "EMail", "URI": "f@x.example"}],
        None,
        "f@x.example",
        id="a_named_channel_wins_over_none",
    ),
    pytest.param(
        [{"ChannelCode": "Fax", "DialNumber": "08-9"}, {"URI": "www.x.example"}],
        None,
        None,
        id="fax_and_web_are_neither",
    ),
    pytest.param([], None, None, id="none_at_all"),
]


@pytest.mark.parametrize("noun", ["CustomerPartyMaster", "SupplierPartyMaster"])
@pytest.mark.parametrize(("communication", "phone", "email"), CONTACTS)
def test_phone_and_email_from_each_place(
    noun: str, communication: list[Tree], phone: str | None, email: str | None
) -> None:
    flow = "customer_to_bng" if noun == "CustomerPartyMaster" else "vendor_to_bng"
    body = _body(flow, party(noun, "10001", name="Velo AB", communication=communication))
    assert (body.get("Phone"), body.get("Email")) == (phone, email)


def test_odd_shapes_give_no_value_rather_than_a_wrong_one() -> None:
    communication: list[Tree] = [
        {"ChannelCode": "Telephone", "DialNumber": ["1", "2"], "CountryDialing": "+46"},
        {"ChannelCode": "EMail", "URI": {"Value": "g@x.example"}},
    ]
    body = _body(
        "customer_to_bng", party("CustomerPartyMaster", "10001", name="V", communication=communication)
    )
    assert "Phone" not in body and "Email" not in body


@pytest.mark.parametrize(
    ("fixture", "flow", "phone", "email"),
    [
        ("SyncCustomerPartyMaster.xml", "customer_to_bng", "+46 8 123 456", "orders@acme.example"),
        ("SyncSupplierPartyMaster.xml", "vendor_to_bng", None, "sales@nordic-components.example"),
    ],
)
def test_fixtures_read_as_before(fixture: str, flow: str, phone: str | None, email: str | None) -> None:
    body = _body(flow, bod(fixture))
    assert (body.get("Phone"), body.get("Email")) == (phone, email)


# -- invoice tax --------------------------------------------------------------------------------


def test_invoice_fixture_tax_from_total_tax_amount() -> None:
    assert _body("invoice_to_bng", bod("SyncInvoice.xml"))["TaxAmount"] == 64.95


@pytest.mark.parametrize(
    ("total_tax", "taxes", "line_taxes", "expected"),
    [
        pytest.param("25", (), (), 25, id="total_tax_amount"),
        pytest.param(None, ("12.50",), (), 12.5, id="one_tax_element"),
        # 10.10 + 20.20 is 30.299999999999997 in binary floats: summed as decimals
        pytest.param(None, ("10.10", "20.20"), (), 30.3, id="tax_elements_summed_exactly"),
        pytest.param("30.30", ("10.10", "20.20"), (), 30.3, id="total_wins_over_elements"),
        pytest.param("7.00", ("99",), ("99",), 7, id="total_wins_over_all"),
        pytest.param(None, ("5",), ("1", "4"), 5, id="header_elements_win_over_lines"),
        pytest.param(None, (), ("0.1", "0.2"), 0.3, id="line_tax_as_fallback"),
        pytest.param(None, (), ("2.5",), 2.5, id="one_line_tax_element"),
        pytest.param("", ("3",), (), 3, id="empty_total_is_absent"),
        pytest.param(None, (), (), None, id="no_tax_anywhere"),
    ],
)
def test_invoice_tax_variants(
    total_tax: str | None, taxes: tuple[str, ...], line_taxes: tuple[str, ...], expected: float | None
) -> None:
    xml = invoice(
        "900001",
        orno="1000001",
        cuor="SO-1",
        amount="125",
        total_tax=total_tax,
        taxes=taxes,
        line_taxes=line_taxes,
    )
    assert _body("invoice_to_bng", xml).get("TaxAmount") == expected


def test_a_sum_no_rule_needs_is_not_judged() -> None:
    xml = invoice("900002", orno="1000002", cuor="SO-2", amount="10", total_tax="2", line_taxes=("n/a",))
    assert _body("invoice_to_bng", xml)["TaxAmount"] == 2


def test_a_needed_sum_with_a_value_that_is_no_number_is_refused() -> None:
    xml = invoice("900003", orno="1000003", cuor="SO-3", amount="10", taxes=("1", "n/a"))
    with pytest.raises(MappingError, match=r"options, field sum\.Tax: 'n/a' is not a number"):
        _body("invoice_to_bng", xml)


# -- sum options --------------------------------------------------------------------------------

SUMS = """
version: 1
flow: demo_to_bng
target: bng
trigger: [SyncDemo]
options:
  sum.A: "Items[].Amount"
  sum.Bad: "Items[?"
  sum.One: "Single"
calls:
  put:
    method: PUT
    path: /x
    fields:
      A: _ctx.sum.A
"""


@pytest.fixture
def sums_mapping(tmp_path: Path) -> Mapping:
    path = tmp_path / "demo_to_bng.yaml"
    path.write_text(SUMS)
    return load_mapping(path)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"Items": [{"Amount": "0.1"}, {"Amount": "0.2"}, {"Amount": " 1E+1 "}]}, "10.3"),
        ({"Items": [{"Amount": "-1.50"}, {"Amount": ""}, {"Other": "9"}]}, "-1.50"),
        ({"Items": []}, None),
        ({}, None),
    ],
)
def test_sums_are_exact_decimals(sums_mapping: Mapping, data: dict[str, Any], expected: str | None) -> None:
    sums = OptionSums(sums_mapping, data)
    assert sums.get("A") == expected
    assert sums.get("Unknown") is None  # no such option: no sum, not an error


def test_a_single_value_is_its_own_sum(sums_mapping: Mapping) -> None:
    assert OptionSums(sums_mapping, {"Single": "4.20"}).get("One") == "4.20"


@pytest.mark.parametrize("value", ["NaN", "Infinity", "12 SEK", True, {"Amount": "1"}])
def test_a_value_that_is_no_number_is_refused(sums_mapping: Mapping, value: Any) -> None:
    with pytest.raises(MappingError, match="is not a number"):
        OptionSums(sums_mapping, {"Single": value}).get("One")


def test_a_bad_path_is_refused_when_read(sums_mapping: Mapping) -> None:
    sums = OptionSums(sums_mapping, {"Items": [{"Amount": "1"}]})
    assert sums.get("A") == "1"  # the others are not spoilt by it
    with pytest.raises(MappingError, match="bad path"):
        sums.get("Bad")
