"""ConfirmBOD: the document parses back as a BOD and carries the original's identity and the error."""

from __future__ import annotations

from datetime import UTC, datetime

from m3bng.connectors.ion.bod import parse_bod
from m3bng.connectors.ion.confirm import MAX_ERROR_CHARS, build_confirm_bod
from tests.unit.ion.bods import LIMIT, bod

NOW = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)


def original(name: str = "SyncSalesOrder_v3.xml") -> dict[str, object]:
    return parse_bod(bod(name), max_bytes=LIMIT).metadata()


def test_confirm_parses_back() -> None:
    xml, bodid = build_confirm_bod(
        original(),
        error="no BNG order for CUOR BNG-1001",
        logical_id="lid://infor.m3bng.m3bng",
        tenant_id=None,
        now=NOW,
    )
    assert bodid == "infor-nid:ACME_PRD:770_AAA::1000123:?SalesOrder&verb=Confirm&variationID=3&sequence=1"
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    parsed = parse_bod(xml.encode(), max_bytes=LIMIT)
    assert (parsed.bod_type, parsed.verb, parsed.noun) == ("ConfirmBOD", "Confirm", "BOD")
    assert parsed.bodid == bodid
    assert parsed.logical_id == "lid://infor.m3bng.m3bng"
    assert parsed.confirmation_code == "Never"
    assert parsed.creation_datetime == NOW
    assert (parsed.tenant_id, parsed.accounting_entity) == ("ACME_PRD", "770_AAA")
    assert (parsed.document_id, parsed.variation_id) == ("1000123", 3)  # from the Confirm BODID
    failure = parsed.data["BODFailureMessage"]
    assert failure["ErrorProcessMessage"] == {
        "Description": "no BNG order for CUOR BNG-1001",
        "Type": "Error",
    }
    assert failure["NounFailureMessage"]["ErrorProcessMessage"]["Description"] == (
        "SalesOrder 1000123 (variation 3): no BNG order for CUOR BNG-1001"
    )


def test_original_application_area() -> None:
    from lxml import etree  # type: ignore[import-untyped]

    xml, _ = build_confirm_bod(
        original(), error="x", logical_id="lid://me", tenant_id="OTHER_TENANT", now=NOW
    )
    ns = {"o": "http://schema.infor.com/InforOAGIS/2"}
    root = etree.fromstring(xml.encode())
    area = root.find("o:DataArea/o:Confirm/o:OriginalApplicationArea", ns)
    assert area.findtext("o:Sender/o:LogicalID", namespaces=ns) == "lid://infor.m3.m3"
    assert area.findtext("o:Sender/o:ConfirmationCode", namespaces=ns) == "OnError"
    assert area.findtext("o:BODID", namespaces=ns) == (
        "infor-nid:ACME_PRD:770_AAA::1000123:?SalesOrder&verb=Sync&variationID=3"
    )
    assert area.findtext("o:CreationDateTime", namespaces=ns) == "2026-11-22T09:30:11+00:00"
    assert root.findtext("o:DataArea/o:Confirm/o:TenantID", namespaces=ns) == "OTHER_TENANT"


def test_error_text_is_escaped_cleaned_and_capped() -> None:
    hostile = '</Description><Injected/> & "quotes" \x00\x1b ' + "x" * (MAX_ERROR_CHARS + 100)
    xml, _ = build_confirm_bod(original(), error=hostile, logical_id="lid://me", tenant_id=None, now=NOW)
    parsed = parse_bod(xml.encode(), max_bytes=LIMIT)
    description = parsed.data["BODFailureMessage"]["ErrorProcessMessage"]["Description"]
    assert description.startswith('</Description><Injected/> & "quotes" \ufffd\ufffd ')
    assert len(description) == MAX_ERROR_CHARS and description.endswith("…")
    assert "Injected" not in parsed.data["BODFailureMessage"]


def test_minimal_original() -> None:
    xml, bodid = build_confirm_bod(
        {"bodid": "opaque-id"}, error="e", logical_id="lid://me", tenant_id=None, now=NOW
    )
    assert bodid == "opaque-id?BOD&verb=Confirm&sequence=1"
    parsed = parse_bod(xml.encode(), max_bytes=LIMIT)
    assert parsed.document_id is None and "NounFailureMessage" not in parsed.data["BODFailureMessage"]
