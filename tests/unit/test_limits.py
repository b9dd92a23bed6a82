"""The resizable limits a process's share of an installation-wide limit is applied with."""

from __future__ import annotations

import asyncio
import math

import pytest

from m3bng.connectors.limits import Gate
from m3bng.connectors.ratelimit import RateLimiter


async def test_gate_admits_its_size_and_follows_resizes() -> None:
    gate = Gate(2)
    inside = 0
    most = 0
    release = asyncio.Event()

    async def call() -> None:
        nonlocal inside, most
        async with gate:
            inside += 1
            most = max(most, inside)
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(call()) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert (inside, gate.in_use) == (2, 2)
    await gate.grow(4)
    await asyncio.sleep(0.01)
    assert inside == 4
    # Shrinking waits until the calls above the new size have left, and admits none meanwhile.
    shrink = asyncio.create_task(gate.shrink(1))
    await asyncio.sleep(0.01)
    assert not shrink.done() and gate.size == 1
    release.set()
    await asyncio.gather(*tasks)
    await shrink
    assert (most, gate.in_use) == (4, 0)


async def test_gate_of_size_zero_holds_callers_until_it_grows() -> None:
    gate = Gate(0)
    entered = asyncio.Event()

    async def call() -> None:
        async with gate:
            entered.set()

    task = asyncio.create_task(call())
    await asyncio.sleep(0.01)
    assert not entered.is_set()
    await gate.grow(1)
    await asyncio.wait_for(task, 1)
    assert entered.is_set()


def limiter(rate: float) -> tuple[RateLimiter, list[float]]:
    now = [100.0]

    async def sleep(seconds: float) -> None:
        now[0] += seconds
        await asyncio.sleep(0)

    return RateLimiter(rate, margin=0.0, clock=lambda: now[0], sleep=sleep), now


async def test_a_rate_slot_given_up_is_quiet_before_shrink_returns() -> None:
    rate, now = limiter(4)
    slots = [await rate.acquire() for _ in range(4)]
    assert sorted(slots) == [0, 1, 2, 3]
    rate.release(3)  # slot 3 answered at t=100: it may be used again at t=101
    shrink = asyncio.create_task(rate.shrink(2))
    await asyncio.sleep(0)
    assert not shrink.done()  # slot 2 is still in flight
    rate.release(2)
    await shrink
    assert now[0] >= 101.0  # and the shrink waited out slot 2's and 3's windows
    assert rate.limit == 2 and len(rate._free_at) == 2


async def test_a_rate_slot_received_waits_a_full_window() -> None:
    rate, now = limiter(2)
    await rate.shrink(0)
    waiter = asyncio.create_task(rate.acquire())
    await asyncio.sleep(0)
    assert not waiter.done()  # no share: nothing is sent
    rate.grow(1)
    slot = await asyncio.wait_for(waiter, 1)
    assert slot == 0 and now[0] >= 101.0  # the slot's previous holder may have just used it
    rate.release(slot)
    assert math.isfinite(rate._free_at[0])


@pytest.mark.parametrize("rate_value", [0.0, -1.0])
async def test_no_rate_limit_stays_unlimited(rate_value: float) -> None:
    rate, _ = limiter(rate_value)
    assert rate.unlimited and await rate.acquire() == -1
