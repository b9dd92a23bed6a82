"""Every write of every BNG → M3 flow, under every gateway fault, twice in a row.

A fault lands on one MI write: before M3 ran it (nothing happened) or after M3 committed it
(the answer was lost: 502/504 from the gateway, a read timeout, a reset). Whatever it was, the
event must end ``done`` with exactly one M3 effect: never a line twice, never a second order,
batch or adjustment, and never a dead letter for something that happened. The flows learn what
happened by reading M3 (the read-backs in docs/m3.md), never by resending on a guess.

Runs on PostgreSQL, the production store; the flows' store handling is the same on SQLite and
is covered there by the other flow tests. The 76 runs share one simulator per test process,
reset before each run to its seed data (as a new one): a new m3bng server per run, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from m3bng.connectors.bng.samples import sample
from tests.integration.flows.conftest import Service
from tests.integration.m3.conftest import SimHandle, module_m3_sim  # noqa: F401  (fixture)

pytestmark = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


@pytest.fixture
async def m3_sim(module_m3_sim: SimHandle) -> SimHandle:  # noqa: F811
    """This process's simulator for the module, reset to its seed data."""
    await module_m3_sim.reset()
    return module_m3_sim


State = dict[str, Any]

# name → simulator fault settings (the simulator applies them to the named write only). One
# gateway status stands for all: the client turns every 5xx into the same M3ServerError (one
# branch, status >= 500), and tests/integration/m3/test_gateway_faults.py proves 502, 503 and
# 504 each on a write; here 504 before and after M3 committed is what a flow must tell apart.
# (502 and 503 here too were 57 more runs of the same paths: two minutes of the suite.) A 429
# is not here either: it says the write never ran, so the client retries it before any flow
# sees it, whatever the write (tests/integration/m3/test_gateway_faults.py proves that once).
FAULTS: dict[str, dict[str, Any]] = {
    "504_after": {"gateway_rate": 1.0, "gateway_status": 504, "gateway_after": True},
    "504_before": {"gateway_rate": 1.0, "gateway_status": 504, "gateway_after": False},
    "timeout_after": {"drop_response_rate": 1.0, "drop_seconds": 1.5},  # client timeout is 1 s
    "reset_after": {"reset_rate": 1.0},
}
TIMES = 2  # the same write faults twice in a row: the retry after a read-back is hit too


def one(rows: list[Any]) -> Any:
    assert len(rows) == 1, rows
    return rows[0]


def check_order(state: State) -> None:
    order = one([o for o in state["orders"].values() if o["head"].get("CUOR") == "SO-1001"])
    assert [(line["CUPO"], line["ITNO"]) for line in order["lines"]] == [
        ("1", "BIKE-100"),
        ("2", "HELMET-1"),
        ("3", "TUBE-26"),
    ]
    assert state["batches"] == {}  # nothing left behind half-entered


def check_new_customer_order(state: State) -> None:
    check_order(state)
    assert state["customers"]["C-NEW"]["CUNM"] == "Velo Sport AB"


def check_customer(state: State) -> None:
    assert state["customers"]["C-2001"]["CUNM"] == "Velo Sport AB"


def check_customer_changed(state: State) -> None:
    assert state["customers"]["C-2001"]["PHNO"] == "+46 8 999 000"  # a change sent twice is the same change


def check_item(state: State) -> None:
    assert state["items"]["BIKE-500"]["ITDS"] == "Trail bike 500"


def check_supplier(state: State) -> None:
    assert state["suppliers"]["V-300"]["SUNM"] == "Nordic Parts Oy"


def check_purchase_order(state: State) -> None:
    po = one([p for p in state["purchase_orders"].values() if p["head"].get("YRE1") == "PO-7001"])
    assert [line["ITNO"] for line in po["lines"]] == ["BIKE-100", "TUBE-26"]
    # Only a lost StartEntry answer may leave an empty entry behind; never a second order.
    assert all(not e["lines"] for e in state["po_entries"].values() if not e["finished"])


def check_invoice(state: State) -> None:
    batch = one([b for b in state["invoice_batches"].values() if b["head"].get("SINO") == "INV-88-2026"])
    assert [line["NLAM"] for line in batch["lines"]] == ["3100", "362.5"]


def check_gl(state: State) -> None:
    assert list(state["gl_posted"]) == ["GL:GL-2026-0042"] and state["gl_batches"] == {}
    assert [line["LINE"] for line in state["gl_posted"]["GL:GL-2026-0042"]["lines"]] == ["1", "2"]


def check_adjustment(state: State) -> None:
    assert Decimal(state["stock"]["100/BIKE-100"]["STQT"]) == Decimal(25 - 2)
    assert len(state["adjustments"]) == 1


def check_cancelled(state: State) -> None:
    assert [o["head"]["CUOR"] for o in state["deleted_orders"].values()] == ["SO-1001"]
    assert not [o for o in state["orders"].values() if o["head"].get("CUOR") == "SO-1001"]


@dataclass(frozen=True)
class Scenario:
    event_type: str
    write: str
    check: Callable[[State], None]
    data: dict[str, Any] | None = None
    before: str | None = None  # an event that must be done first (the order a cancel applies to)


NEW_CUSTOMER_ORDER = {
    **sample("order.created"),
    "CustomerID": "C-NEW",
    "Customer": sample("customer.created"),
}
SCENARIOS = [
    Scenario("order.created", "OIS100MI/AddBatchHead", check_order),
    Scenario("order.created", "OIS100MI/AddBatchLine", check_order),
    Scenario("order.created", "OIS100MI/Confirm", check_order),
    Scenario("order.created", "CRS610MI/Add", check_new_customer_order, NEW_CUSTOMER_ORDER),
    Scenario("order.updated", "OIS100MI/DelHead", check_cancelled, before="order.created"),
    Scenario("customer.created", "CRS610MI/Add", check_customer),
    Scenario("customer.updated", "CRS610MI/ChgBasicData", check_customer_changed, before="customer.created"),
    Scenario("product.created", "MMS200MI/AddItmBasic", check_item),
    Scenario("vendor.created", "CRS620MI/AddSupplier", check_supplier),
    Scenario("purchase_order.created", "PPS370MI/StartEntry", check_purchase_order),
    Scenario("purchase_order.created", "PPS370MI/AddHead", check_purchase_order),
    Scenario("purchase_order.created", "PPS370MI/AddLine", check_purchase_order),
    Scenario("purchase_order.created", "PPS370MI/FinishEntry", check_purchase_order),
    Scenario("supplier_invoice.created", "APS450MI/AddHead", check_invoice),
    Scenario("supplier_invoice.created", "APS450MI/AddLine", check_invoice),
    Scenario("gl_entry.created", "GLS840MI/AddBatchHead", check_gl),
    Scenario("gl_entry.created", "GLS840MI/AddBatchLine", check_gl),
    Scenario("gl_entry.created", "GLS840MI/UpdBatch", check_gl),
    Scenario("inventory.adjusted", "MMS850MI/AddAdjust", check_adjustment),
]


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: f"{s.event_type}:{s.write}")
async def test_one_effect_whatever_fails(service: Service, scenario: Scenario, fault: str) -> None:
    if scenario.before:
        first = await service.settle(await service.send(scenario.before))
        assert first.status == "done", first.last_error
    await service.sim.faults(programs=[scenario.write], limit=TIMES, **FAULTS[fault])
    event = await service.settle(await service.send(scenario.event_type, scenario.data), timeout=60)
    assert event.status == "done", event.last_error
    stats = await service.sim.stats()
    # Before M3 runs it, the write is sent again and meets the second fault; after M3 ran it,
    # the read-back finds it, and the second fault meets the flow's next write of that kind (if any).
    assert stats["faults_injected"] == TIMES or (fault.endswith("_after") and stats["faults_injected"] == 1)
    scenario.check(await service.state())
