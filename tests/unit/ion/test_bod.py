"""Parsing BODs: every fixture's fields, the data dictionary, BODIDs, and the limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import jmespath
import pytest

from m3bng.connectors.ion.bod import (
    BodError,
    element_to_dict,
    parse_bod,
    parse_bodid,
    response_bodid,
    split_accounting_entity,
)
from tests.unit.ion.bods import BODS, LIMIT, bod


def test_sales_order() -> None:
    parsed = parse_bod(bod("SyncSalesOrder.xml"), max_bytes=LIMIT)
    assert (parsed.bod_type, parsed.verb, parsed.noun) == ("SyncSalesOrder", "Sync", "SalesOrder")
    assert parsed.action_code == "Add"
    assert parsed.logical_id == "lid://infor.m3.m3"
    assert parsed.component_id == "M3BE"
    assert parsed.confirmation_code == "OnError"
    assert parsed.bodid == "infor-nid:ACME_PRD:770_AAA::1000123:?SalesOrder&verb=Sync&variationID=1"
    assert parsed.creation_datetime == datetime(2026, 11, 20, 8, 15, 2, tzinfo=UTC)
    assert parsed.tenant_id == "ACME_PRD"
    assert (parsed.accounting_entity, parsed.cono, parsed.divi) == ("770_AAA", 770, "AAA")
    assert parsed.location is None  # <LocationID/> and an empty BODID location
    assert (parsed.document_id, parsed.variation_id, parsed.revision_id) == ("1000123", 1, None)
    assert (parsed.release_id, parsed.version_id) == ("9.2", "2.14.6")
    header = parsed.data["SalesOrderHeader"]
    assert header["DocumentID"]["ID"] == "1000123"
    assert header["DocumentID"]["ID@"] == {
        "accountingEntity": "770_AAA",
        "lid": "lid://infor.m3.m3",
        "variationID": "1",
    }
    assert header["CustomerPurchaseOrderReference"]["DocumentID"]["ID"] == "BNG-1001"
    assert header["Status"]["Code"] == "22"
    assert header["CustomerParty"]["PartyIDs"]["ID"] == ["10001"]  # ID inside PartyIDs: always a list
    assert header["TotalAmount"] == "259.80"
    assert header["TotalAmount@"] == {"currencyID": "EUR"}
    lines = parsed.data["SalesOrderLine"]
    assert [line["Item"]["ItemID"]["ID"] for line in lines] == ["ITM-100", "ITM-200"]
    assert lines[0]["Quantity"] == "2" and lines[0]["Quantity@"] == {"unitCode": "EA"}
    assert jmespath.search("SalesOrderLine[*].Status.Code", parsed.data) == ["22", "22"]


@pytest.mark.parametrize(("name", "variation", "status", "day"), [("_v2", 2, "66", 21), ("_v3", 3, "77", 22)])
def test_sales_order_variations(name: str, variation: int, status: str, day: int) -> None:
    first = parse_bod(bod("SyncSalesOrder.xml"), max_bytes=LIMIT)
    later = parse_bod(bod(f"SyncSalesOrder{name}.xml"), max_bytes=LIMIT)
    assert later.document_id == first.document_id == "1000123"
    assert later.variation_id == variation
    assert later.bodid != first.bodid
    assert later.action_code == "Change"
    assert later.creation_datetime is not None and later.creation_datetime.day == day
    assert later.creation_datetime > (first.creation_datetime or later.creation_datetime)
    assert later.data["SalesOrderHeader"]["Status"]["Code"] == status


def test_customer_party_master() -> None:
    parsed = parse_bod(bod("SyncCustomerPartyMaster.xml"), max_bytes=LIMIT)
    assert parsed.noun == "CustomerPartyMaster" and parsed.action_code == "Replace"
    assert (parsed.document_id, parsed.variation_id) == ("10001", 7)
    assert parsed.creation_datetime == datetime(2026, 11, 19, 16, 40, 12, 345000, tzinfo=UTC)
    data = parsed.data
    assert data["PartyIDs"]["ID"] == ["10001"]
    assert data["Name"] == "ACME Retail Ltd"
    address = data["Location"]["Address"]
    assert address["AddressLine"] == ["Main Street 1", "Building B"]
    assert address["AddressLine@"] == [{"sequence": "1"}, {"sequence": "2"}]
    assert data["Location@"] == {"type": "Invoice"}
    assert isinstance(data["Communication"], list) and len(data["Communication"]) == 2
    email = jmespath.search("Communication[?ChannelCode=='EMail'].URI | [0]", data)
    phone = jmespath.search("Communication[?ChannelCode=='Telephone'].DialNumber | [0]", data)
    assert (email, phone) == ("orders@acme.example", "+46 8 123 456")
    assert data["CurrencyCode"] == "SEK"


def test_item_master_master_ae() -> None:
    parsed = parse_bod(bod("SyncItemMaster.xml"), max_bytes=LIMIT)
    assert (parsed.document_id, parsed.variation_id) == ("ITM-100", 12)
    assert (parsed.accounting_entity, parsed.cono, parsed.divi) == ("770", 770, None)
    assert parsed.creation_datetime == datetime(2026, 11, 18, 10, 5, tzinfo=UTC)
    assert parsed.creation_datetime is not None
    assert parsed.creation_datetime.utcoffset() == timedelta(hours=1)  # the sender's offset is kept
    header = parsed.data["ItemMasterHeader"]
    assert header["Description"] == ["Blue widget", "Blue widget, anodised aluminium, 40 mm"]
    assert header["Description@"] == [{"languageID": "en-US"}, {"languageID": "en-US", "type": "Long"}]
    assert header["Classification"]["Codes"]["Code"] == ["WIDGETS"]  # Code inside Codes: a list
    assert header["Classification"]["Codes"]["Code@"] == [{"listID": "Item Group"}]
    assert header["ItemStatus"]["Code"] == "20"  # a Code outside Codes stays a string
    assert header["BaseUOMCode"] == "EA"


def test_supplier_party_master() -> None:
    parsed = parse_bod(bod("SyncSupplierPartyMaster.xml"), max_bytes=LIMIT)
    assert (parsed.document_id, parsed.confirmation_code, parsed.cono) == ("S-5001", "Always", 770)
    assert parsed.data["Location"]["Address"]["AddressLine"] == ["Industrivägen 12"]
    assert parsed.data["Location"]["Address"]["CityName"] == "Göteborg"
    assert parsed.data["Communication"][0]["URI"] == "sales@nordic-components.example"
    assert "Göteborg" in parsed.xml


def test_inventory_count() -> None:
    parsed = parse_bod(bod("SyncInventoryCount.xml"), max_bytes=LIMIT)
    assert parsed.document_id == "INV-WH1-20261120"
    assert parsed.variation_id is None  # neither on the ID nor in the BODID
    assert parsed.location == "WH1"
    assert parsed.confirmation_code == "Never"
    line = parsed.data["InventoryCountLine"]
    assert isinstance(line, list) and len(line) == 1  # a single *Line is still a list
    assert line[0]["AvailableQuantity"] == "128"
    assert parsed.data["InventoryCountHeader"]["WarehouseLocation"]["ID"] == "WH1"


def test_invoice() -> None:
    parsed = parse_bod(bod("SyncInvoice.xml"), max_bytes=LIMIT)
    header = parsed.data["InvoiceHeader"]
    assert parsed.document_id == "2026000417"
    assert header["SalesOrderReference"]["DocumentID"]["ID"] == "1000123"
    assert header["CustomerPurchaseOrderReference"]["DocumentID"]["ID"] == "BNG-1001"
    assert header["PaymentTerm"]["DueDateTime"] == "2026-12-22T00:00:00Z"
    assert jmespath.search("InvoiceLine[*].ExtendedAmount", parsed.data) == ["159.80", "100.00"]


def test_unknown_noun_parses() -> None:
    parsed = parse_bod(bod("SyncCarrierParty.xml"), max_bytes=LIMIT)
    assert (parsed.bod_type, parsed.document_id, parsed.variation_id) == ("SyncCarrierParty", "DHL", 1)


def test_real_ln_sample() -> None:
    parsed = parse_bod(bod("SyncPurchaseOrder_LN.xml"), max_bytes=LIMIT)
    assert parsed.logical_id == "lid://infor.ln.ln01/3555"
    assert (parsed.document_id, parsed.variation_id, parsed.location) == ("PSU000049", 5, "S_350")
    assert (parsed.accounting_entity, parsed.cono, parsed.divi) == ("3555", 3555, None)
    assert parsed.data["PurchaseOrderHeader"]["Note"] == ["Subcontracting additions"]
    assert parsed.data["PurchaseOrderHeader"]["Note@"] == [{"type": "Header"}]


def test_every_fixture_payload_is_json() -> None:
    for path in BODS.glob("*.xml"):
        payload = parse_bod(path.read_bytes(), max_bytes=LIMIT).to_payload({"messageId": "m"})
        assert set(payload) == {"bod", "data", "ims", "xml"}
        assert json.loads(json.dumps(payload)) == payload
        assert payload["bod"]["bodid"].startswith("infor-nid:")
        assert payload["xml"].lstrip().startswith("<?xml")


def test_payload_bod_metadata_keys() -> None:
    payload = parse_bod(bod("SyncSalesOrder.xml"), max_bytes=LIMIT).to_payload()
    assert list(payload["bod"]) == [
        "bod_type",
        "verb",
        "noun",
        "action_code",
        "logical_id",
        "component_id",
        "confirmation_code",
        "bodid",
        "creation_datetime",
        "tenant_id",
        "accounting_entity",
        "cono",
        "divi",
        "location",
        "document_id",
        "variation_id",
        "revision_id",
        "release_id",
        "version_id",
    ]
    assert payload["bod"]["creation_datetime"] == "2026-11-20T08:15:02+00:00"
    assert payload["ims"] is None


# -- the data dictionary rules ----------------------------------------------------------------


def _convert(xml: str) -> dict[str, object]:
    from lxml import etree  # type: ignore[import-untyped]

    return element_to_dict(etree.fromstring(xml))


def test_dict_rules() -> None:
    data = _convert(
        '<N a="1"><Empty/><Flag x="y"/><R>1</R><R k="v">2</R><R>3</R>'
        "<Mixed>lead<C>c</C></Mixed><OneLine><X>1</X></OneLine><Codes><Code>A</Code></Codes>"
        "<P><PartyIDs><ID>9</ID></PartyIDs></P><Note>n</Note></N>"
    )
    assert data["@"] == {"a": "1"}
    assert data["Empty"] == ""
    assert data["Flag"] == "" and data["Flag@"] == {"x": "y"}
    assert data["R"] == ["1", "2", "3"]
    assert data["R@"] == [{}, {"k": "v"}, {}]
    assert data["Mixed"] == {"#text": "lead", "C": "c"}
    assert data["OneLine"] == [{"X": "1"}]
    assert data["Codes"] == {"Code": ["A"]}
    assert data["P"] == {"PartyIDs": {"ID": ["9"]}}
    assert data["Note"] == ["n"]
    assert "Empty@" not in data


def test_namespaces_dropped() -> None:
    data = _convert('<n:N xmlns:n="urn:x" xmlns:m="urn:y"><m:A m:attr="1">t</m:A></n:N>')
    assert data == {"A": "t", "A@": {"attr": "1"}}


# -- BODID and accounting entity ---------------------------------------------------------------


def test_parse_bodid_full() -> None:
    ids = parse_bodid("infor-nid:T:770_AAA:WH1:DOC:7?SalesOrder&verb=Sync&variationID=3&sequence=2")
    assert (ids.tenant, ids.accounting_entity, ids.location) == ("T", "770_AAA", "WH1")
    assert (ids.document_id, ids.revision, ids.noun, ids.verb) == ("DOC", "7", "SalesOrder", "Sync")
    assert (ids.variation_id, ids.sequence) == (3, 2)


def test_parse_bodid_empty_and_odd_parts() -> None:
    ids = parse_bodid("infor-nid:T:770::A:B:C:?X&verb=Sync&variationID=x")
    assert ids.location is None and ids.document_id == "A:B:C" and ids.revision is None
    assert ids.variation_id is None
    assert parse_bodid("infor-nid:T").tenant == "T"
    assert parse_bodid("infor-nid:T:1:L:D").document_id == "D"
    assert parse_bodid("infor-nid:T:1:L:D%3A1:?N").document_id == "D:1"
    other = parse_bodid("urn:uuid:123")
    assert other.raw == "urn:uuid:123" and other.document_id is None


def test_document_id_from_bodid_when_the_noun_has_none() -> None:
    xml = bod("SyncCarrierParty.xml").replace(b'<ID accountingEntity="770" variationID="1">DHL</ID>', b"")
    parsed = parse_bod(xml, max_bytes=LIMIT)
    assert (parsed.document_id, parsed.variation_id) == ("DHL", 1)


def test_response_bodid() -> None:
    original = "infor-nid:T:770_AAA::1000123:?SalesOrder&verb=Sync&variationID=3"
    assert (
        response_bodid(original, verb="Confirm")
        == "infor-nid:T:770_AAA::1000123:?SalesOrder&verb=Confirm&variationID=3&sequence=1"
    )
    assert response_bodid(original + "&sequence=4", verb="Confirm", sequence=5).endswith("&sequence=5")
    assert response_bodid("plain-id", verb="Confirm") == "plain-id?BOD&verb=Confirm&sequence=1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("770_AAA", (770, "AAA")),
        ("770", (770, None)),
        ("", (None, None)),
        (None, (None, None)),
        ("X_1", (None, "1")),
    ],
)
def test_split_accounting_entity(value: str | None, expected: tuple[int | None, str | None]) -> None:
    assert split_accounting_entity(value) == expected


# -- structure errors --------------------------------------------------------------------------

NS = "http://schema.infor.com/InforOAGIS/2"


def _doc(body: str, root: str = "SyncSalesOrder", ns: str = NS) -> bytes:
    return f'<{root} xmlns="{ns}">{body}</{root}>'.encode()


APP = "<ApplicationArea><BODID>infor-nid:T:1::D:?SalesOrder&amp;verb=Sync</BODID></ApplicationArea>"


@pytest.mark.parametrize(
    ("xml", "problem"),
    [
        (
            _doc(APP + "<DataArea><Sync/><SalesOrder/></DataArea>", ns="urn:other"),
            "not an OAGIS BOD: root namespace",
        ),
        (b"<SyncSalesOrder/>", "not an OAGIS BOD: root namespace '(none)'"),
        (_doc("<DataArea><Sync/><SalesOrder/></DataArea>"), "ApplicationArea missing"),
        (
            _doc("<ApplicationArea/><DataArea><Sync/><SalesOrder/></DataArea>"),
            "ApplicationArea/BODID missing",
        ),
        (_doc(APP), "DataArea missing"),
        (_doc(APP + "<DataArea><Sync/></DataArea>"), "DataArea must hold a verb element"),
        (
            _doc(APP + "<DataArea><Process/><SalesOrder/></DataArea>"),
            "does not match DataArea/Process + SalesOrder",
        ),
        (_doc(APP + "<DataArea><Sync/><SalesOrder/><SalesOrder/></DataArea>"), "one noun per BOD"),
        (
            _doc(
                APP.replace("<BODID>", "<CreationDateTime>yesterday</CreationDateTime><BODID>")
                + "<DataArea><Sync/><SalesOrder/></DataArea>"
            ),
            "CreationDateTime 'yesterday' is not an ISO 8601",
        ),
        (b"<SyncSalesOrder", "not well-formed XML"),
        (b"   ", "empty document"),
        (b"\xff\xfe<\x00", "not well-formed XML"),
    ],
)
def test_structure_errors(xml: bytes, problem: str) -> None:
    with pytest.raises(BodError) as caught:
        parse_bod(xml, max_bytes=LIMIT)
    assert problem in str(caught.value)


def test_other_verbs_accepted() -> None:
    xml = _doc(APP + "<DataArea><Acknowledge/><SalesOrder/></DataArea>", root="AcknowledgeSalesOrder")
    parsed = parse_bod(xml, max_bytes=LIMIT)
    assert (parsed.verb, parsed.noun, parsed.action_code, parsed.data) == (
        "Acknowledge",
        "SalesOrder",
        None,
        {},
    )


def test_naive_creation_datetime_is_utc() -> None:
    app = APP.replace("<BODID>", "<CreationDateTime>2026-01-02T03:04:05</CreationDateTime><BODID>")
    parsed = parse_bod(_doc(app + "<DataArea><Sync/><SalesOrder/></DataArea>"), max_bytes=LIMIT)
    assert parsed.creation_datetime == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    offset = parse_bod(
        _doc(app.replace("05<", "05-05:00<") + "<DataArea><Sync/><SalesOrder/></DataArea>"), max_bytes=LIMIT
    ).creation_datetime
    assert offset is not None and offset.tzinfo == timezone(timedelta(hours=-5))


def test_utf16_document() -> None:
    text = bod("SyncSupplierPartyMaster.xml").decode().replace('encoding="UTF-8"', 'encoding="UTF-16"')
    parsed = parse_bod(text.encode("utf-16"), max_bytes=LIMIT)
    assert parsed.data["Location"]["Address"]["CityName"] == "Göteborg"
    assert parsed.xml.startswith('<?xml version="1.0" encoding="UTF-16"?>')


def test_processing_instructions_and_comments_dropped() -> None:
    xml = _doc(APP + "<DataArea><Sync/><SalesOrder><?evil pi?><!-- c --><A>1</A></SalesOrder></DataArea>")
    assert parse_bod(xml, max_bytes=LIMIT).data == {"A": "1"}
