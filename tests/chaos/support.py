"""What the chaos scenarios share: an order load, and the checks of the final state."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from m3bng.connectors.bng.samples import sample
from tests.support.cluster import Cluster, Delivery, Sender, orders_by_reference

Item = tuple[str, dict[str, Any], str]


def orders(prefix: str, count: int) -> list[Item]:
    """``count`` distinct BNG orders (the documented example, three lines, its own OrderID)."""
    return [
        ("order.created", {**sample("order.created"), "OrderID": f"{prefix}-{n:05d}"}, f"msg_{prefix}_{n}")
        for n in range(count)
    ]


async def send_orders(
    cluster: Cluster, items: list[Item], concurrency: int = 8, rate: float | None = None
) -> list[Delivery]:
    sender = Sender(cluster.api_url)
    try:
        return await sender.deliver_all(items, concurrency=concurrency, rate=rate)
    finally:
        await sender.aclose()


async def check_orders_once(cluster: Cluster, items: list[Item], deliveries: list[Delivery]) -> None:
    """Every acknowledged webhook is one stored event, done; exactly one M3 order per BNG order,
    with all its lines; no dead letter."""
    events = await cluster.events()
    assert sorted(e.external_id for e in events) == sorted(msg for _, _, msg in items)
    assert {d.event_id for d in deliveries} == {e.id for e in events}
    not_done = [(e.id, e.status, e.error_class, e.last_error) for e in events if e.status != "done"]
    assert not not_done, not_done
    assert await cluster.dead_letters() == []
    state = await cluster.m3_state()
    by_reference = orders_by_reference(state)
    for _, data, _ in items:
        ornos = by_reference.get(str(data["OrderID"]), [])
        assert len(ornos) == 1, (data["OrderID"], ornos)
        assert len(state["orders"][ornos[0]]["lines"]) == len(data["Lines"]), data["OrderID"]
    assert len(state["orders"]) == len(items)


class Stopwatch:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.marks: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        self.marks.append((name, time.monotonic() - self.started))

    def __str__(self) -> str:
        return ", ".join(f"{name} at {at:.1f} s" for name, at in self.marks)


async def sleep_until(stopwatch: Stopwatch, seconds: float) -> None:
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - stopwatch.started)))
