"""Several BNG instances (issue 18), with real worker processes: one instance's BNG is down while
M3 publishes a burst of item changes to every instance. Only that instance's breaker opens and
only its copies wait; the other instance's copies are applied meanwhile; when its BNG is back,
the waiting copies are applied, each exactly once, and nothing was dead-lettered."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from m3bng.store.models import Event
from tests.support.bods import item_master
from tests.support.cluster import BNG_API_KEY, Cluster, Process, Sender, free_port

# Each instance's signing secret (the file refuses secrets; they come from the environment).
SECRETS = {
    "a": "whsec_Y2hhb3MtaW5zdGFuY2UtYS1zZWNyZXQtMDE=",
    "b": "whsec_Y2hhb3MtaW5zdGFuY2UtYi1zZWNyZXQtMDI=",
}


def breaker_changes(cluster: Cluster) -> list[tuple[str, str, str]]:
    """(process, target, state) of every ``circuit.state_changed`` the processes logged."""
    changes = []
    for name, line in cluster.log_lines():
        if '"circuit.state_changed"' in line:
            entry = json.loads(line)
            changes.append((name, str(entry.get("target")), str(entry.get("state"))))
    return changes


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
    """Poll ``check`` until true, failing with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.2)


def applied_writes(calls: list[dict[str, object]]) -> dict[str, int]:
    """How many writes the BNG simulator applied, by path."""
    counts: dict[str, int] = {}
    for call in calls:
        if call.get("kind") == "api" and call.get("applied"):
            counts[str(call["path"])] = counts.get(str(call["path"]), 0) + 1
    return counts


async def test_one_instance_bng_down_opens_only_its_breaker_and_its_copies_wait(
    shared_pg_url: str, make_cluster: Callable[..., Cluster], scale: int, tmp_path: Path
) -> None:
    count = 20 * scale
    instances_file = tmp_path / "instances.yaml"
    settings = {
        "M3BNG_INSTANCES_FILE": str(instances_file),
        "M3BNG_BNG_CIRCUIT_FAILURES": "3",
        # Long enough that the failed calls before the breaker opens (and its probes) never use up
        # an event's attempts during the outage: its copies must wait, not be dead-lettered.
        "M3BNG_RETRY_SCHEDULE": "0.5,1,2,2,2,2,2,2,2,2,2,2,2,2,2",
    }
    for instance, secret in SECRETS.items():
        settings[f"M3BNG_INSTANCE_{instance.upper()}_WEBHOOK_SECRETS"] = secret
        settings[f"M3BNG_INSTANCE_{instance.upper()}_BNG_API_KEY"] = BNG_API_KEY
    cluster = make_cluster(shared_pg_url, workers=2, settings=settings)
    # Instance a's BNG is the cluster's simulator; instance b has a simulator of its own.
    b_port = free_port()
    b_url = f"http://127.0.0.1:{b_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("M3BNG_")} | {"PYTHONUNBUFFERED": "1"}
    bng_b = Process("bng-sim-b", ["sim", "bng", "--port", str(b_port)], env, cluster.folder / "bng-sim-b.log")
    instances_file.write_text(
        "instances:\n"
        "  default:\n"  # takes no master data here: the burst goes to a and b only
        '    routing: {accounting_entities: ["999"]}\n'
        "  a:\n"
        f"    bng_base_url: {cluster.bng_url}\n"
        "    routing: {all: true}\n"
        "  b:\n"
        f"    bng_base_url: {b_url}\n"
        "    routing: {all: true}\n"
    )
    items = [f"ITEM-INST-{n:04d}" for n in range(count)]
    bng_b.start()
    try:
        async with cluster:
            await cluster.wait_http(f"{b_url}/_sim/stats")
            await cluster.bng_faults(outage_seconds=3600)  # a's BNG: 503 to everything
            sender = Sender(cluster.api_url)
            try:
                for itno in items:
                    await sender.deliver_bod(item_master(itno, name=f"Item {itno}"))
            finally:
                await sender.aclose()

            async def by_instance() -> dict[str, list[Event]]:
                found: dict[str, list[Event]] = {}
                for event in await cluster.events():
                    found.setdefault(event.instance, []).append(event)
                return found

            async def b_applied_and_a_open() -> bool:
                events = await by_instance()
                b_done = len(events.get("b", [])) == count and all(e.status == "done" for e in events["b"])
                a_open = any(t == "bng:a" and s == "open" for _, t, s in breaker_changes(cluster))
                return b_done and a_open

            await until(b_applied_and_a_open, "b's copies done and a's breaker open", 30 * scale)
            events = await by_instance()
            assert set(events) == {"a", "b"}, sorted(events)  # one copy per instance, none for default
            assert len(events["a"]) == count
            waiting = {e.status for e in events["a"]}
            assert waiting <= {"pending", "processing"}, [(e.id, e.status, e.last_error) for e in events["a"]]
            assert await cluster.dead_letters() == []
            assert (await cluster.bng_state())["products"] == {}
            b_calls = (await cluster._http.get(f"{b_url}/_sim/calls")).json()
            assert applied_writes(b_calls) == {f"/api/v1/products/{itno}": 1 for itno in items}

            await cluster.bng_faults(outage_seconds=0)  # a's BNG is back
            await cluster.wait_settled(2 * count, timeout=60 * scale)
            events = await by_instance()
            dead = await cluster.dead_letters()
            a_calls = (await cluster._http.get(f"{cluster.bng_url}/_sim/calls")).json()
            b_calls = (await cluster._http.get(f"{b_url}/_sim/calls")).json()
            a_products = (await cluster.bng_state())["products"]
    finally:
        bng_b.stop()
    assert not dead, [(d.event_id, d.reason, d.error) for d in dead]
    assert all(e.status == "done" for e in events["a"]), [(e.id, e.status, e.last_error) for e in events["a"]]
    assert sorted(a_products) == items
    expected = {f"/api/v1/products/{itno}": 1 for itno in items}
    assert applied_writes(a_calls) == expected  # each applied exactly once, after the outage
    assert applied_writes(b_calls) == expected  # and b's none a second time
    changes = breaker_changes(cluster)
    assert any(t == "bng:a" and s == "open" for _, t, s in changes), changes
    assert not [c for c in changes if c[1] == "bng:b"], changes  # b's breaker never left closed
    assert {name for name, t, _ in changes if t == "bng:a"} <= {w.name for w in cluster.workers}
