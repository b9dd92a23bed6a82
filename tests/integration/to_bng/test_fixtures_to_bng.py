"""The realistic BOD fixtures (tests/fixtures/bods/) through the real app into the BNG simulator.

The builders in tests/support/bods.py make the variations other tests need; this one proves the
shipped mappings read the fixture documents as a tenant would send them, over both endpoints.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration.to_bng.conftest import Outbound, order

BODS = Path(__file__).resolve().parents[2] / "fixtures" / "bods"


async def test_every_fixture_reaches_bng(outbound: Outbound) -> None:
    await outbound.bng.seed({"orders": {"BNG-1001": order("BNG-1001")}})
    events = {}
    for number, name in enumerate(
        [
            "SyncSalesOrder",
            "SyncSalesOrder_v3",
            "SyncSalesOrder_v2",  # late: variation 2 after 3
            "SyncCustomerPartyMaster",
            "SyncItemMaster",
            "SyncSupplierPartyMaster",
            "SyncInventoryCount",
            "SyncInvoice",
            "SyncCarrierParty",
            "SyncPurchaseOrder_LN",
        ]
    ):
        xml = (BODS / f"{name}.xml").read_bytes()
        events[name] = await outbound.apply(xml, raw=number % 2 == 1, deflate=number % 3 == 0)

    outcome = {name: (e.status, e.error_class) for name, e in events.items()}
    assert outcome == {
        "SyncSalesOrder": ("done", None),
        "SyncSalesOrder_v3": ("done", None),
        "SyncSalesOrder_v2": ("skipped", "stale"),
        "SyncCustomerPartyMaster": ("done", None),
        "SyncItemMaster": ("done", None),
        "SyncSupplierPartyMaster": ("done", None),
        "SyncInventoryCount": ("done", None),
        "SyncInvoice": ("done", None),
        "SyncCarrierParty": ("skipped", "unsupported"),
        "SyncPurchaseOrder_LN": ("skipped", "unsupported"),  # a real LN BOD: no flow for it
    }, {name: e.last_error for name, e in events.items()}
    state = await outbound.bng.state()
    assert state["orders"]["BNG-1001"]["OrderStatus"] == "Invoiced"  # v3: 77, not v2's 66
    assert state["customers"]["10001"]["CompanyName"] == "ACME Retail Ltd"
    assert state["products"]["ITM-100"]["Name"] == "Blue widget"
    assert state["vendors"]["S-5001"]["CompanyName"] == "Nordic Components AB"
    assert state["inventory"]["WH1/ITM-100"]["Available"] == 128
    assert state["invoices"]["2026000417"]["OrderID"] == "BNG-1001"
