"""Found against an independently built M3 (issue 14 §5), end to end through the real app into
the BNG simulator: orders first seen in a BOD are linked, so a Delete carrying only the ORNO
applies; phone and e-mail from each place OAGIS allows; invoice tax from either path."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete

from m3bng.store import documents
from m3bng.store.models import CrossReference
from tests.integration.to_bng.conftest import Outbound, order
from tests.support.bods import invoice, party, sales_order, sales_order_deleted


@pytest.mark.parametrize("action", ["Add", "Change"])
async def test_order_first_seen_in_a_bod_is_linked_and_a_later_delete_applies(
    outbound: Outbound, action: str
) -> None:
    await outbound.bng.seed({"orders": {"SO-4001": order("SO-4001")}})
    synced = await outbound.apply(sales_order("1004001", cuor="SO-4001", status="22", action=action))
    assert synced.status == "done", synced.last_error
    async with outbound.sessions() as session:
        assert await documents.get_xref(session, "order", "SO-4001") == "1004001"

    deleted = await outbound.apply(sales_order_deleted("1004001", variation=2, minutes=5))
    assert (deleted.status, deleted.error_class) == ("done", None), deleted.last_error
    held = (await outbound.bng.state())["orders"]["SO-4001"]
    assert (held["OrderStatus"], held["M3OrderNumber"]) == ("Cancelled", "1004001")


async def test_a_cancellation_without_cuor_applies_to_a_linked_order(outbound: Outbound) -> None:
    await outbound.bng.seed({"orders": {"SO-4002": order("SO-4002")}})
    assert (await outbound.apply(sales_order("1004002", cuor="SO-4002", status="22"))).status == "done"
    cancelled = await outbound.apply(sales_order("1004002", cuor=None, status="90", variation=2, minutes=5))
    assert cancelled.status == "done", cancelled.last_error
    assert (await outbound.bng.state())["orders"]["SO-4002"]["OrderStatus"] == "Cancelled"


async def test_an_echo_links_too(outbound: Outbound) -> None:
    """An order whose earlier Sync left no link (applied before the link was kept): the next Sync
    announcing what BNG holds is skipped as an echo, and still links the order."""
    await outbound.bng.seed({"orders": {"SO-4003": order("SO-4003")}})
    assert (await outbound.apply(sales_order("1004003", cuor="SO-4003", status="22"))).status == "done"
    async with outbound.sessions.begin() as session:
        await session.execute(delete(CrossReference).where(CrossReference.bng_id == "SO-4003"))

    again = await outbound.apply(sales_order("1004003", cuor="SO-4003", status="22", variation=2, minutes=5))
    assert (again.status, again.error_class) == ("skipped", "echo"), again.last_error
    async with outbound.sessions() as session:
        assert await documents.get_xref(session, "order", "SO-4003") == "1004003"
    deleted = await outbound.apply(sales_order_deleted("1004003", variation=3, minutes=10))
    assert deleted.status == "done", deleted.last_error
    assert (await outbound.bng.state())["orders"]["SO-4003"]["OrderStatus"] == "Cancelled"


async def test_an_order_bng_rejected_is_not_linked(outbound: Outbound) -> None:
    """A CUOR that is no BNG order (a customer's own PO number): BNG refuses the status, and no
    link is kept that could make order_to_cash take a later BNG order of that id for this one."""
    event = await outbound.apply(sales_order("1004004", cuor="PO-CUSTOMER-7", status="22"))
    assert (event.status, event.error_class) == ("dead", "not_found"), event.last_error
    async with outbound.sessions() as session:
        assert await documents.get_xref(session, "order", "PO-CUSTOMER-7") is None
    deleted = await outbound.apply(sales_order_deleted("1004004", variation=2, minutes=5))
    assert (deleted.status, deleted.error_class) == ("skipped", "not_linked")


async def test_phone_and_email_in_other_oagis_shapes_reach_bng(outbound: Outbound) -> None:
    customer = party(
        "CustomerPartyMaster",
        "10401",
        name="Cykel Nord AB",
        communication=[
            {"ChannelCode": "Fax", "DialNumber": "+46 8 999"},
            {"ChannelCode": "Phone", "CountryDialing": "+46", "AreaDialing": "8", "DialNumber": "555 12"},
            {"ChannelCode": "E-mail", "URI": "info@cykelnord.example"},
        ],
    )
    vendor = party(
        "SupplierPartyMaster",
        "S4402",
        name="Ramverk AB",
        communication=[
            {"ChannelCode": "MobilePhone", "CompleteNumber": "+46 70 123 45 67"},
            {"URI": "order@ramverk.example"},
        ],
    )
    for xml in (customer, vendor):
        event = await outbound.apply(xml)
        assert event.status == "done", event.last_error
    state = await outbound.bng.state()
    held = state["customers"]["10401"]
    assert (held["Phone"], held["Email"]) == ("+46 8 555 12", "info@cykelnord.example")
    held = state["vendors"]["S4402"]
    assert (held["Phone"], held["Email"]) == ("+46 70 123 45 67", "order@ramverk.example")


@pytest.mark.parametrize(
    ("tax", "expected"),
    [
        pytest.param({"total_tax": "62.50"}, 62.5, id="TotalTaxAmount"),
        pytest.param({"taxes": ("10.10", "20.20")}, 30.3, id="Tax_elements_summed"),
        pytest.param({"line_taxes": ("0.1", "0.2")}, 0.3, id="line_Tax_as_fallback"),
    ],
)
async def test_invoice_tax_from_either_path(outbound: Outbound, tax: dict[str, Any], expected: float) -> None:
    xml = invoice("900401", orno="1004001", cuor="SO-4001", amount="312.50", **tax)
    event = await outbound.apply(xml)
    assert event.status == "done", event.last_error
    assert (await outbound.bng.state())["invoices"]["900401"]["TaxAmount"] == expected
