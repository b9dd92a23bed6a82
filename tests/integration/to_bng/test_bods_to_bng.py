"""Each M3 → BNG flow end to end: a BOD in, what BNG holds afterwards checked in its simulator."""

from __future__ import annotations

import asyncio

from lxml import etree  # type: ignore[import-untyped]

from m3bng.store import documents
from tests.integration.to_bng.conftest import Outbound, order, wait_for
from tests.support.bods import inventory_count, invoice, item_master, party, sales_order


async def test_order_status_follows_m3_and_stale_variations_are_skipped(outbound: Outbound) -> None:
    await outbound.bng.seed({"orders": {"SO-1001": order("SO-1001")}})
    confirmed = await outbound.apply(sales_order("1000123", cuor="SO-1001", status="22"), deflate=True)
    assert confirmed.status == "done", confirmed.last_error
    held = (await outbound.bng.state())["orders"]["SO-1001"]
    assert (held["OrderStatus"], held["M3Status"], held["M3OrderNumber"]) == ("Confirmed", "22", "1000123")

    shipped = await outbound.apply(
        sales_order("1000123", cuor="SO-1001", status="66", variation=3, minutes=30)
    )
    assert shipped.status == "done", shipped.last_error
    # Variation 2 was delayed in ION and arrives after 3: recorded, not applied over newer data.
    late = await outbound.apply(sales_order("1000123", cuor="SO-1001", status="33", variation=2, minutes=10))
    assert (late.status, late.error_class) == ("skipped", "stale")
    assert "variation 2 arrived after variation 3" in (late.last_error or "")
    assert (await outbound.bng.state())["orders"]["SO-1001"]["OrderStatus"] == "Shipped"
    assert len(await outbound.bng_writes("orders")) == 2


async def test_order_is_found_by_cross_reference_and_unknown_orders_are_skipped(outbound: Outbound) -> None:
    await outbound.bng.seed({"orders": {"SO-7": order("SO-7")}})
    async with outbound.sessions.begin() as session:
        await documents.put_xref(session, "order", "SO-7", "1000777")  # written by order_to_cash
    event = await outbound.apply(sales_order("1000777", cuor=None, status="77"), raw=True)
    assert event.status == "done", event.last_error
    assert (await outbound.bng.state())["orders"]["SO-7"]["OrderStatus"] == "Invoiced"
    # An order entered in M3 (no CUOR, no cross-reference) is none of BNG's business.
    other = await outbound.apply(sales_order("1000888", cuor=None, status="22"), raw=True)
    assert (other.status, other.error_class) == ("skipped", "not_linked")


async def test_deleted_order_is_cancelled_in_bng(outbound: Outbound) -> None:
    await outbound.bng.seed({"orders": {"SO-9": order("SO-9")}})
    event = await outbound.apply(sales_order("1000999", cuor="SO-9", status="22", action="Delete"))
    assert event.status == "done", event.last_error
    assert (await outbound.bng.state())["orders"]["SO-9"]["OrderStatus"] == "Cancelled"


async def test_duplicate_deliveries_are_applied_once(outbound: Outbound) -> None:
    await outbound.bng.seed({"orders": {"SO-2": order("SO-2")}})
    xml = sales_order("1000200", cuor="SO-2", status="22")
    # ION retries the same message, and re-sends the same BOD under a new messageId, all at once.
    ids = await asyncio.gather(
        outbound.post_bod(xml, message_id="m-1"),
        outbound.post_bod(xml, message_id="m-1"),
        outbound.post_bod(xml, message_id="m-2"),
        outbound.post_bod(xml, raw=True, deflate=False, message_id="m-3"),
    )
    assert len(set(ids)) == 1
    assert (await outbound.settle(ids[0])).status == "done"
    assert len(await outbound.events("ion")) == 1
    assert len(await outbound.bng_writes("orders")) == 1


async def has_events(outbound: Outbound, source: str) -> bool:
    return bool(await outbound.events(source))


async def test_unknown_status_dead_letters_and_confirm_bod_reaches_ion(outbound: Outbound) -> None:
    await outbound.bng.seed({"orders": {"SO-3": order("SO-3")}})
    event = await outbound.apply(sales_order("1000300", cuor="SO-3", status="55"))
    assert event.status == "dead"
    assert "order_status" in (event.last_error or "") and "'55'" in (event.last_error or "")
    # The dead letter is committed before its hook stores the ConfirmBOD event: wait for that.
    await wait_for(lambda: has_events(outbound, "m3bng"), timeout=30)
    [confirm] = await outbound.events("m3bng")
    confirm = await outbound.settle(confirm.id)
    assert confirm.status == "done", confirm.last_error
    messages = (await outbound.sim.control.get("/_sim/ion/messages")).json()
    [message] = [m for m in messages if m.get("documentName") == "ConfirmBOD"]
    root = etree.fromstring(message["xml"].encode())
    text = " ".join(root.itertext())
    assert "1000300" in text and "55" in text  # the original BOD and the error, in Infor's monitor


async def test_customer_from_m3_is_created_in_bng_and_linked(outbound: Outbound) -> None:
    xml = party(
        "CustomerPartyMaster", "10077", name="Cykel & Co", email="info@cykel.example", phone="+46 8 123"
    )
    event = await outbound.apply(xml)
    assert event.status == "done", event.last_error
    held = (await outbound.bng.state())["customers"]["10077"]
    assert held["CompanyName"] == "Cykel & Co"
    assert (held["Email"], held["Phone"], held["Status"]) == ("info@cykel.example", "+46 8 123", "Active")
    assert held["BillingAddress"] == {
        "Line1": "Storgatan 1",
        "City": "Stockholm",
        "PostalCode": "11122",
        "Country": "SE",
    }
    async with outbound.sessions() as session:
        assert await documents.get_xref(session, "customer", "10077") == "10077"


async def test_customer_bng_created_keeps_its_bng_id(outbound: Outbound) -> None:
    async with outbound.sessions.begin() as session:
        await documents.put_xref(session, "customer", "C-2001", "C-2001X")
    event = await outbound.apply(party("CustomerPartyMaster", "C-2001X", name="Velo Sport AB"))
    assert event.status == "done", event.last_error
    customers = (await outbound.bng.state())["customers"]
    assert "C-2001" in customers and "C-2001X" not in customers
    assert customers["C-2001"]["M3CustomerNumber"] == "C-2001X"


async def test_item_and_supplier_go_to_bng(outbound: Outbound) -> None:
    item = await outbound.apply(item_master("BIKE-900", name="Gravel 900", group="BIK"))
    supplier = await outbound.apply(party("SupplierPartyMaster", "S2002", name="Shimano Nordic"))
    assert item.status == supplier.status == "done", (item.last_error, supplier.last_error)
    state = await outbound.bng.state()
    assert state["products"]["BIKE-900"]["Name"] == "Gravel 900"
    assert state["products"]["BIKE-900"]["ProductCategory"] == "Bikes"
    assert state["vendors"]["S2002"]["CompanyName"] == "Shimano Nordic"


async def test_inventory_count_updates_each_balance(outbound: Outbound) -> None:
    xml = inventory_count("100", [("BIKE-001", "12", "10", "2"), ("BIKE-002", "5", "5", "0")])
    event = await outbound.apply(xml)
    assert event.status == "done", event.last_error
    inventory = (await outbound.bng.state())["inventory"]
    balances = {key: (v["OnHand"], v["Available"], v["Allocated"]) for key, v in inventory.items()}
    assert balances == {"100/BIKE-001": (12, 10, 2), "100/BIKE-002": (5, 5, 0)}


async def test_invoice_goes_to_bng(outbound: Outbound) -> None:
    event = await outbound.apply(invoice("900123", orno="1000123", cuor="SO-1001", amount="250.50"))
    assert event.status == "done", event.last_error
    held = (await outbound.bng.state())["invoices"]["900123"]
    assert (held["OrderID"], held["M3OrderNumber"], held["TotalAmount"], held["Currency"]) == (
        "SO-1001",
        "1000123",
        250.5,
        "SEK",
    )
    assert held["InvoiceDate"] == "2026-11-25" and held["DueDate"] == "2026-12-25"
    assert held["Lines"][0]["SKU"] == "BIKE-001"


async def test_unsupported_noun_is_stored_and_skipped(outbound: Outbound) -> None:
    from tests.support.bods import bod

    xml = bod("CarrierParty", {"PartyIDs": {"ID": "DHL"}, "Name": "DHL"}, document_id="DHL")
    response = await outbound.client.post(
        "/ion/bod",
        content=xml,
        headers={"Authorization": "Bearer ion-test-token-0123456789", "Content-Type": "application/xml"},
    )
    assert response.status_code == 202 and response.json()["supported"] is False
    event = await outbound.settle(int(response.json()["event_id"]))
    assert (event.status, event.error_class) == ("skipped", "unsupported")
