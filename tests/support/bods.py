"""BODs as M3 publishes them (structure from shared/infor/facts.md §3), built per test.

The fixtures in tests/fixtures/bods/ are fixed documents; these builders make the variations a
test needs (another ORNO, a later variation, the values m3bng just wrote) without string
templates: every value goes through lxml, so names with ``&`` or ``<`` stay well-formed.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from lxml import etree  # type: ignore[import-untyped]

NS = "http://schema.infor.com/InforOAGIS/2"
TENANT = "M3BNG_TST"
ACCOUNTING_ENTITY = "100_AAA"
_T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)

Tree = dict[str, Any]  # {"Name": "text" | Tree | [Tree...], "@attr": "value", "#text": "text"}


def _build(parent: etree._Element, tree: Tree) -> None:
    for name, value in tree.items():
        if name.startswith("@"):
            parent.set(name[1:], str(value))
            continue
        if name == "#text":
            parent.text = str(value)
            continue
        for item in value if isinstance(value, list) else [value]:
            child = etree.SubElement(parent, f"{{{NS}}}{name}")
            if isinstance(item, dict):
                _build(child, item)
            elif item is not None:
                child.text = str(item)


def bod(
    noun: str,
    body: Tree,
    *,
    document_id: str,
    variation: int = 1,
    action: str = "Change",
    verb: str = "Sync",
    minutes: int = 0,
    confirmation: str = "OnError",
    bodid: str | None = None,
    accounting_entity: str = ACCOUNTING_ENTITY,
) -> bytes:
    """A whole BOD: ApplicationArea, the verb with its action, and the noun built from ``body``."""
    created = (_T0 + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")
    root = etree.Element(f"{{{NS}}}{verb}{noun}", nsmap={None: NS})
    root.set("releaseID", "9.2")
    root.set("versionID", "2.14.0")
    _build(
        root,
        {
            "ApplicationArea": {
                "Sender": {
                    "LogicalID": "lid://infor.m3.m3",
                    "ComponentID": "M3BE",
                    "ConfirmationCode": confirmation,
                },
                "CreationDateTime": created,
                "BODID": bodid
                or f"infor-nid:{TENANT}:{accounting_entity}::{document_id}:{variation}?{noun}&verb={verb}"
                f"&variationID={variation}",
            },
            "DataArea": {
                verb: {
                    "TenantID": TENANT,
                    "AccountingEntityID": accounting_entity,
                    "ActionCriteria": {"ActionExpression": {"@actionCode": action}},
                },
                noun: body,
            },
        },
    )
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _id(value: str, variation: int) -> Tree:
    return {"@variationID": variation, "@accountingEntity": ACCOUNTING_ENTITY, "#text": value}


def sales_order(
    orno: str, *, cuor: str | None, status: str, cuno: str = "10001", variation: int = 1, **kw: Any
) -> bytes:
    body: Tree = {
        "SalesOrderHeader": {
            "DocumentID": {"ID": _id(orno, variation)},
            **({"CustomerPurchaseOrderReference": {"DocumentID": {"ID": cuor}}} if cuor is not None else {}),
            "Status": {"Code": status, "EffectiveDateTime": "2026-11-25T08:00:00Z"},
            "CustomerParty": {"PartyIDs": {"ID": cuno}},
        },
        "SalesOrderLine": [
            {
                "LineNumber": "1",
                "Item": {"ItemID": {"ID": "BIKE-001"}},
                "Quantity": "2",
                "Status": {"Code": status},
            }
        ],
    }
    return bod("SalesOrder", body, document_id=orno, variation=variation, **kw)


def sales_order_deleted(orno: str, *, variation: int, cuor: str | None = None, **kw: Any) -> bytes:
    """A Delete as a sender may publish it: the header's DocumentID only (no CUOR unless given)."""
    header: Tree = {"DocumentID": {"ID": _id(orno, variation)}}
    if cuor is not None:
        header["CustomerPurchaseOrderReference"] = {"DocumentID": {"ID": cuor}}
    body: Tree = {"SalesOrderHeader": header}
    return bod("SalesOrder", body, document_id=orno, variation=variation, action="Delete", **kw)


def party(
    noun: str,
    number: str,
    *,
    name: str,
    city: str = "Stockholm",
    line1: str = "Storgatan 1",
    country: str = "SE",
    email: str | None = None,
    phone: str | None = None,
    status: str = "20",
    currency: str = "SEK",
    variation: int = 1,
    communication: list[Tree] | None = None,
    **kw: Any,
) -> bytes:
    """CustomerPartyMaster / SupplierPartyMaster; ``communication`` (the Communication elements
    as they are) replaces the Telephone/EMail pair ``phone`` and ``email`` make."""
    if communication is None:
        communication = []
        if phone:
            communication.append({"ChannelCode": "Telephone", "DialNumber": phone})
        if email:
            communication.append({"ChannelCode": "EMail", "URI": email})
    body: Tree = {
        "PartyIDs": {"ID": _id(number, variation)},
        "Name": name,
        "Location": {
            "Address": {
                "AddressLine": {"@sequence": "1", "#text": line1},
                "CityName": city,
                "CountryCode": country,
                "PostalCode": "11122",
            }
        },
        "Communication": communication,
        "Status": {"Code": status},
        "CurrencyCode": currency,
    }
    return bod(noun, body, document_id=number, variation=variation, **kw)


def item_master(
    itno: str, *, name: str, group: str = "BIK", unit: str = "PCS", status: str = "20", **kw: Any
) -> bytes:
    body: Tree = {
        "ItemMasterHeader": {
            "ItemID": {"ID": itno},
            "Description": name,
            "Classification": {"Codes": {"Code": {"@listID": "Item Group", "#text": group}}},
            "BaseUOMCode": unit,
            "ItemStatus": {"Code": status},
        }
    }
    return bod("ItemMaster", body, document_id=itno, **kw)


def inventory_count(
    warehouse: str, lines: list[tuple[str, str, str, str]], *, count_id: str = "IC-1", **kw: Any
) -> bytes:
    """``lines``: (item, on hand, available, allocated)."""
    body: Tree = {
        "InventoryCountHeader": {
            "DocumentID": {"ID": count_id},
            "WarehouseLocation": {"ID": warehouse},
            "CountDateTime": "2026-11-25T08:00:00Z",
        },
        "InventoryCountLine": [
            {
                "LineNumber": str(n),
                "Item": {"ItemID": {"ID": item}},
                "Quantity": on_hand,
                "AvailableQuantity": available,
                "AllocatedQuantity": allocated,
            }
            for n, (item, on_hand, available, allocated) in enumerate(lines, 1)
        ],
    }
    return bod("InventoryCount", body, document_id=count_id, **kw)


def _taxes(amounts: Sequence[str]) -> list[Tree]:
    return [{"TaxAmount": {"@currencyID": "SEK", "#text": amount}} for amount in amounts]


def invoice(
    ivno: str,
    *,
    orno: str,
    cuor: str,
    amount: str,
    total_tax: str | None = None,
    taxes: Sequence[str] = (),
    line_taxes: Sequence[str] = (),
    **kw: Any,
) -> bytes:
    """``total_tax`` is the header's TotalTaxAmount, ``taxes`` its Tax elements (one per
    amount), ``line_taxes`` the Tax elements of the (one) line."""
    header: Tree = {
        "DocumentID": {"ID": ivno},
        "DocumentDateTime": "2026-11-25T08:00:00Z",
        "SalesOrderReference": {"DocumentID": {"ID": orno}},
        "CustomerPurchaseOrderReference": {"DocumentID": {"ID": cuor}},
        "CustomerParty": {"PartyIDs": {"ID": "10001"}},
        "TotalAmount": {"@currencyID": "SEK", "#text": amount},
    }
    if total_tax is not None:
        header["TotalTaxAmount"] = {"@currencyID": "SEK", "#text": total_tax}
    if taxes:
        header["Tax"] = _taxes(taxes)
    header["PaymentTerm"] = {"DueDateTime": "2026-12-25T00:00:00Z"}
    line: Tree = {
        "LineNumber": "1",
        "Item": {"ItemID": {"ID": "BIKE-001"}},
        "Quantity": "2",
        "UnitPrice": {"Amount": "100"},
        "ExtendedAmount": amount,
    }
    if line_taxes:
        line["Tax"] = _taxes(line_taxes)
    body: Tree = {"InvoiceHeader": header, "InvoiceLine": [line]}
    return bod("Invoice", body, document_id=ivno, **kw)


def ims_parts(xml: bytes, *, message_id: str | None = None, deflate: bool = False, document: str = "") -> Any:
    """The multipart form ION's IMS v3 sends: ParameterRequest (JSON) and MessagePayload."""
    parameters = {
        "documentName": document or etree.QName(etree.fromstring(xml)).localname,
        "fromLogicalId": "lid://infor.m3.m3",
        "toLogicalId": "lid://infor.m3bng.m3bng",
        "messageId": message_id or f"msg-{uuid.uuid4().hex}",
        "document": {"characterSet": "UTF-8", "encoding": "DEFLATE" if deflate else "NONE"},
    }
    payload = zlib.compress(xml) if deflate else xml
    return {
        "ParameterRequest": (None, json.dumps(parameters), "application/json"),
        "MessagePayload": ("message", payload, "application/octet-stream"),
    }
