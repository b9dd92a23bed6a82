"""Flows used by the tests, loadable in worker processes via M3BNG_FLOW_PLUGINS.

``test.record`` performs one recorded "effect" step per successful run; tests count those steps
to prove an event was applied exactly once. ``data.sleep`` makes it slow (to kill it mid-way).
"""

from __future__ import annotations

import asyncio

from m3bng.flows.runtime import FlowContext, FlowRegistry


async def record_flow(ctx: FlowContext) -> None:
    data = ctx.payload.get("data", {})
    await ctx.checkpoint("started", True)
    delay = float(data.get("sleep", 0))
    if delay:
        await asyncio.sleep(delay)

    async with ctx.step("effect", target="test", operation="record", request=data) as step:
        step.response = {"applied": data.get("n")}


def register(registry: FlowRegistry) -> None:
    registry.register("test.record", record_flow)
