"""What an order costs the store, counted statement by statement and round trip by round trip
(issue 15 §6).

A worker's CPU goes mostly to the store (docs/benchmarks.md), so the statements one order
makes are part of the design, and a change that adds one shows up here rather than as a
slower benchmark weeks later. Counted on the server's engine only (the test's own reads are
left out), after a first order has warmed the caches.
"""

from __future__ import annotations

import asyncio
import traceback
from collections import Counter
from typing import Any

import asyncpg
import pytest
from asyncpg.prepared_stmt import PreparedStatement
from sqlalchemy import event
from sqlalchemy.engine import Engine

from m3bng.connectors.bng.samples import sample
from tests.integration.flows.conftest import Service

# What a worker reads or writes on a timer, not per order: how many fall within one order varies.
# The scheduled jobs too (their leases, the retention purge's reads of finished events): one
# landing inside the order's window failed a CI run.
POLLS = (
    "SET status = 'processing'",
    "FROM controls",
    "FROM bulk_replays",
    "limit_shares",
    "scheduler_leases",
    "events.finished_at <",
)


async def _one_order(service: Service) -> int:
    data = sample("order.created")
    data["OrderID"] = "SO-COST"
    # Not the warm-up order's lines again: that would be a near-duplicate, and its flag a write
    # an ordinary order does not make.
    data["Lines"][0]["Quantity"] = "3"
    event_id = await service.send("order.created", data, msg_id="msg_cost")
    assert (await service.settle(event_id)).status == "done"
    return event_id


async def test_an_order_costs_three_fenced_writes_and_thirteen_statements(service: Service) -> None:
    """Counted at SQLAlchemy: every statement on SQLite; none on PostgreSQL."""
    await service.settle(await service.send("order.created", msg_id="msg_warm"))
    own_engine = service.sessions.kw["bind"].sync_engine
    seen: list[tuple[str, str]] = []  # (task, statement)

    def count(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = " ".join(statement.split())
        if conn.engine is own_engine or text.startswith(("BEGIN", "INSERT INTO events")):
            return  # the test's reads, SQLite's BEGIN IMMEDIATE, the webhook's insert
        if any(poll in text for poll in POLLS):
            return  # what the worker polls (claims, paused flows, bulk replays, shares)
        current = asyncio.current_task()
        seen.append((current.get_name() if current else "", text))

    event.listen(Engine, "before_cursor_execute", count)
    try:
        event_id = await _one_order(service)
    finally:
        event.remove(Engine, "before_cursor_execute", count)
    # Only what the event's own task sent: the scheduled jobs and alert checks (the ops reads of
    # dead letters, backlog, reconcile runs) run in tasks of their own, and one landing in the
    # order's window failed runs on a busy machine.
    statements = [text for task, text in seen if task == f"event-{event_id}"]
    kinds = Counter(" ".join(s.split()[:3]) for s in statements)
    if service.sessions.kw["bind"].dialect.name == "postgresql":
        # The three durable writes go to asyncpg as one statement each (store/fenced.py), and
        # the two reads of links too (documents.read_xref), past SQLAlchemy: counted at the
        # driver by the next test. The anomaly rules' one read of the order's history is built
        # by SQLAlchemy (a UNION of bounded reads, store/anomalies.py) and runs through it.
        assert len(statements) == 1 and "order_history" in statements[0], statements
        return
    # The head's mark (with the mapping version), the Confirm mark and the outcome (with the
    # last checkpoints), each one fenced UPDATE of the event.
    assert kinds["UPDATE events SET"] == 3, kinds
    # Step rows ride with those three writes, one statement each at most.
    assert kinds["INSERT INTO steps"] <= 3, kinds
    # Lookups: is the order in M3 already, the customer's M3 number; then the new link (one
    # insert), what BNG holds (recorded, not read: order.created is never an echo), the keys.
    assert kinds["SELECT xrefs.m3_key FROM"] == 2 and kinds["INSERT INTO xrefs"] == 1, kinds
    assert not any(s.startswith(("DELETE", "SELECT bng_state")) for s in statements), statements
    # The anomaly rules (mapping section ``anomalies:``): one bounded read of the order's
    # history before the first M3 call, and the order's history rows in one INSERT with the
    # outcome. Two statements of the thirteen; a mapping without the section costs eleven.
    assert sum(s.startswith("SELECT anon_1.id") and "order_history" in s for s in statements) == 1, statements
    assert sum(s.startswith("INSERT INTO order_history") for s in statements) == 1, statements
    assert len(statements) <= 13, "\n".join(statements)


async def test_an_order_costs_the_worker_six_round_trips_to_postgresql(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted where they happen, at the driver: BEGIN, COMMIT and ROLLBACK are round trips
    too. Reads and the claim run in autocommit (store/db.single_statement), so each is one;
    each of the three durable writes is one statement on asyncpg (store/fenced.py), with the
    writes that ride with it, and no transaction around it."""
    if service.sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("asyncpg is PostgreSQL's driver")
    await service.settle(await service.send("order.created", msg_id="msg_warm"))
    trips: list[tuple[str, str]] = []
    sent: list[tuple[str, str]] = []  # (task, statement text) of the worker's writes

    def caller() -> str | None:
        """The m3bng function that made the call, or None for the test's own reads."""
        frames = [
            f for f in traceback.extract_stack() if "/m3bng/" in f.filename and "/tests/" not in f.filename
        ]
        return frames[-1].name if frames else None

    in_transaction: dict[int, str] = {}  # connection → the task whose BEGIN was counted

    def counted(original: Any, text: Any) -> Any:
        async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            statement = text(self, args)
            verb = statement.split()[0].rstrip(";")
            where = caller()
            current = asyncio.current_task()
            task = current.get_name() if current else ""
            if verb == "BEGIN" and where is not None:
                in_transaction[id(self)] = task
            if verb in ("COMMIT", "ROLLBACK") and id(self) in in_transaction:
                # SQLAlchemy ends it from another call stack, in a task of its own (shielded)
                where, task = where or "end", in_transaction.pop(id(self))
            if where is not None:
                trips.append((task, f"{verb} @ {where}"))
                sent.append((task, " ".join(statement.split())))
            return await original(self, *args, **kwargs)

        return call

    for name in ("execute", "fetch", "fetchval", "fetchrow", "executemany"):
        original = getattr(asyncpg.Connection, name)
        monkeypatch.setattr(asyncpg.Connection, name, counted(original, lambda _s, a: a[0]))
    for name in ("fetch", "fetchval", "fetchrow", "executemany"):
        original = getattr(PreparedStatement, name)
        monkeypatch.setattr(PreparedStatement, name, counted(original, lambda s, _a: s.get_query()))
    event_id = await _one_order(service)
    # The worker runs each event in a task of its own: what that task sent is the order's cost,
    # whatever the worker's timers (leases, polls) did meanwhile.
    task = f"event-{event_id}"
    worker = [trip for name, trip in trips if name == task]
    kinds = Counter(t.split()[0] for t in worker)
    # No transaction at all: three reads (the two links, and the anomaly rules' history of the
    # order's SKUs and customer) and three statements.
    assert kinds == {"SELECT": 3, "WITH": 3}, "\n".join(worker)
    writes = [text for name, text in sent if name == task and text.startswith("WITH")]
    # Each is the event's fenced UPDATE, with what rides along: the head's mark with what BNG
    # holds and the first steps' rows, the Confirm mark with the head's and lines' rows, the
    # outcome with the Confirm's row, the order's link and the event's keys.
    assert all(w.startswith("WITH fence AS (UPDATE events SET") for w in writes), writes
    assert "INSERT INTO bng_state" in writes[0] and "INSERT INTO steps" in writes[0], writes[0]
    assert "INSERT INTO steps" in writes[1], writes[1]
    # ... and the order's history (the anomaly rules, ``anomalies:`` in order_to_cash.yaml).
    riders = ("INSERT INTO steps", "INSERT INTO xrefs", "event_keys", "INSERT INTO order_history")
    assert all(table in writes[2] for table in riders), writes[2]
    # The claim is one round trip, straight on asyncpg (queue.claim): no transaction around it.
    assert "UPDATE @ claim" in {trip for _, trip in trips}, trips
    assert not any(trip.startswith("BEGIN @ claim") for _, trip in trips), trips
