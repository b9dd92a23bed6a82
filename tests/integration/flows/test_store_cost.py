"""What an order costs the store, counted statement by statement (issue 15 §6).

A worker's CPU goes mostly to the store (docs/benchmarks.md), so the statements one order
makes are part of the design, and a change that adds one shows up here rather than as a
slower benchmark weeks later. Counted on the server's engine only (the test's own reads are
left out), after a first order has warmed the caches.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from m3bng.connectors.bng.samples import sample
from tests.integration.flows.conftest import Service


async def test_an_order_costs_three_fenced_writes_and_twelve_statements(service: Service) -> None:
    await service.settle(await service.send("order.created", msg_id="msg_warm"))
    own_engine = service.sessions.kw["bind"].sync_engine
    statements: list[str] = []

    def count(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = " ".join(statement.split())
        if conn.engine is own_engine or text.startswith("BEGIN") or "SET status = 'processing'" in text:
            return  # the test's reads, SQLite's BEGIN IMMEDIATE, the worker's (polling) claims
        statements.append(text)

    event.listen(Engine, "before_cursor_execute", count)
    try:
        data = sample("order.created")
        data["OrderID"] = "SO-COST"
        event_id = await service.send("order.created", data, msg_id="msg_cost")
        assert (await service.settle(event_id)).status == "done"
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    kinds = Counter(" ".join(s.split()[:3]) for s in statements)
    # The webhook's insert; the head's mark (with the mapping version), the Confirm mark and the
    # outcome (with the last checkpoints), each one fenced UPDATE of the event.
    assert kinds["INSERT INTO events"] == 1 and kinds["UPDATE events SET"] == 3, kinds
    # Step rows ride with those three writes, one statement each at most.
    assert kinds["INSERT INTO steps"] <= 3, kinds
    # Lookups: is the order in M3 already, the customer's M3 number; then the new link (one
    # insert), what BNG holds (recorded, not read: order.created is never an echo), the keys.
    assert kinds["SELECT xrefs.m3_key FROM"] == 2 and kinds["INSERT INTO xrefs"] == 1, kinds
    assert not any(s.startswith(("DELETE", "SELECT bng_state")) for s in statements), statements
    # Twelve in all: the webhook's one and the worker's eleven (its claim left out above).
    assert len(statements) <= 12, "\n".join(statements)
