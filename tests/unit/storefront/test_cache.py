"""The storefront's read-through cache on its own: a fake clock, fetches the test controls."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from m3bng.errors import PermanentError, TransientError
from m3bng.storefront.cache import Entry, NoAnswerYet, ReadCache


@dataclass(frozen=True)
class Key:
    itno: str
    whlo: str = "100"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache(clock: Clock, **overrides: float) -> ReadCache[Key, str]:
    values = {"ttl": 10.0, "max_stale": 60.0, "max_entries": 100}
    values.update(overrides)
    return ReadCache(
        "test",
        ttl=values["ttl"],
        max_stale=values["max_stale"],
        max_entries=int(values["max_entries"]),
        item_of=lambda k: k.itno,
        degradable=lambda e: isinstance(e, TransientError),
        clock=clock,
    )


class Source:
    """A fetch that counts its calls and answers what ``answers`` holds (or raises ``error``)."""

    def __init__(self) -> None:
        self.calls: list[list[Key]] = []
        self.error: BaseException | None = None
        self.gate: asyncio.Event | None = None
        self.version = "v1"

    async def __call__(self, keys: list[Key]) -> dict[Key, str | BaseException]:
        self.calls.append(keys)
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return {k: f"{k.itno}/{k.whlo}@{self.version}" for k in keys}


async def test_misses_are_fetched_once_together_and_hits_skip_the_fetch() -> None:
    clock, source = Clock(), Source()
    c = cache(clock)
    found = await c.get_many([Key("A"), Key("B"), Key("A")], source, wait=1)
    assert source.calls == [[Key("A"), Key("B")]] and found[Key("B")].value == "B/100@v1"
    clock.now += 5
    again = await c.get_many([Key("A"), Key("B")], source, wait=1)
    assert len(source.calls) == 1 and again[Key("A")].age == 5 and not again[Key("A")].stale


async def test_concurrent_readers_share_one_fetch() -> None:
    clock, source = Clock(), Source()
    source.gate = asyncio.Event()
    c = cache(clock)
    readers = [asyncio.create_task(c.get_many([Key("A")], source, wait=5)) for _ in range(20)]
    await asyncio.sleep(0)
    source.gate.set()
    results = await asyncio.gather(*readers)
    assert len(source.calls) == 1 and all(r[Key("A")].value == "A/100@v1" for r in results)


async def test_outage_serves_stale_with_its_age_until_the_maximum() -> None:
    clock, source = Clock(), Source()
    c = cache(clock, ttl=10, max_stale=60)
    await c.get_many([Key("A")], source, wait=1)
    source.error = TransientError("M3 down")
    clock.now += 30
    stale = (await c.get_many([Key("A")], source, wait=1))[Key("A")]
    assert stale.stale and stale.value == "A/100@v1" and stale.age == 30
    clock.now += 31
    gone = (await c.get_many([Key("A")], source, wait=1))[Key("A")]
    assert gone.value is None and gone.unavailable and isinstance(gone.error, TransientError)


async def test_a_slow_m3_answers_stale_after_the_wait_and_the_fetch_still_fills_the_cache() -> None:
    clock, source = Clock(), Source()
    c = cache(clock)
    await c.get_many([Key("A")], source, wait=1)
    clock.now += 11
    source.gate, source.version = asyncio.Event(), "v2"
    slow = (await c.get_many([Key("A")], source, wait=0.01))[Key("A")]
    assert slow.stale and slow.value == "A/100@v1"
    # A read while that fetch is still out does not wait again: stale at once, no second call.
    again = (await c.get_many([Key("A")], source, wait=0.01))[Key("A")]
    assert again.stale and len(source.calls) == 2
    source.gate.set()
    for _ in range(100):
        await asyncio.sleep(0)
        if (await c.get_many([Key("A")], source, wait=1))[Key("A")].value == "A/100@v2":
            break
    assert (await c.get_many([Key("A")], source, wait=1))[Key("A")].value == "A/100@v2"
    assert len(source.calls) == 2


async def test_with_nothing_cached_a_slow_m3_is_unavailable() -> None:
    clock, source = Clock(), Source()
    source.gate = asyncio.Event()
    c = cache(clock)
    answer = (await c.get_many([Key("A")], source, wait=0.01))[Key("A")]
    assert answer.unavailable and isinstance(answer.error, NoAnswerYet)
    source.gate.set()
    await c.aclose()


async def test_m3s_own_answer_is_passed_on_never_served_stale_nor_cached() -> None:
    clock, source = Clock(), Source()
    c = cache(clock)
    await c.get_many([Key("A")], source, wait=1)
    clock.now += 11
    source.error = PermanentError("no such item")
    answer = (await c.get_many([Key("A")], source, wait=1))[Key("A")]
    assert answer.value is None and not answer.unavailable and isinstance(answer.error, PermanentError)


async def test_invalidation_by_item_and_warehouse_and_a_fetch_older_than_it_is_not_kept() -> None:
    clock, source = Clock(), Source()
    c = cache(clock)
    keys = [Key("A", "100"), Key("A", "200"), Key("B", "100")]
    await c.get_many(keys, source, wait=1)
    assert c.invalidate(["A"], keep=lambda k: k.whlo != "100") == 1
    source.version = "v2"
    found = await c.get_many(keys, source, wait=1)
    assert source.calls[-1] == [Key("A", "100")]
    assert [found[k].value for k in keys] == ["A/100@v2", "A/200@v1", "B/100@v1"]

    # A fetch that started before the BOD came answers its readers but is not cached.
    source.gate, source.version = asyncio.Event(), "v3"
    clock.now += 11
    reader = asyncio.create_task(c.get_many([Key("B")], source, wait=5))
    await asyncio.sleep(0)
    c.invalidate(["B"])
    source.gate.set()
    assert (await reader)[Key("B")].value == "B/100@v3"
    source.gate, source.version = None, "v4"
    assert (await c.get_many([Key("B")], source, wait=1))[Key("B")].value == "B/100@v4"


async def test_least_recently_used_entries_go_first() -> None:
    clock, source = Clock(), Source()
    c = cache(clock, max_entries=2)
    await c.get_many([Key("A"), Key("B")], source, wait=1)
    await c.get_many([Key("A")], source, wait=1)  # A used: B is now the oldest
    await c.get_many([Key("C")], source, wait=1)
    assert len(c) == 2
    await c.get_many([Key("A"), Key("C")], source, wait=1)
    assert len(source.calls) == 2  # A and C still cached
    await c.get_many([Key("B")], source, wait=1)
    assert source.calls[-1] == [Key("B")]


@pytest.mark.parametrize("error", [TransientError("x"), RuntimeError("bug")])
async def test_a_failed_fetch_reaches_every_reader(error: BaseException) -> None:
    clock, source = Clock(), Source()
    source.error = error
    c: ReadCache[Key, str] = ReadCache(
        "test",
        ttl=1,
        max_stale=1,
        max_entries=10,
        item_of=lambda k: k.itno,
        degradable=lambda e: True,
        clock=clock,
    )
    answer = (await c.get_many([Key("A")], source, wait=1))[Key("A")]
    assert answer.error is error and answer.unavailable


def test_held_entries_stay_fresh_until_replaced_evicted_invalidated_or_past_the_ttl() -> None:
    clock = Clock()
    c = cache(clock, max_entries=2)
    c.put(Key("A"), "a")
    c.put(Key("B"), "b")

    def held(*keys: Key) -> list[Entry[str]]:
        entries = [c.fresh_entry(k, c._entries[k].value) for k in keys]
        assert all(e is not None for e in entries)
        return [e for e in entries if e is not None]

    assert c.still_fresh(held(Key("A"), Key("B")), clock.now) == clock.now
    a, b = held(Key("A"), Key("B"))
    c.put(Key("A"), "a2")  # a newer value replaces the entry
    assert c.still_fresh([a], clock.now) is None and c.still_fresh([b], clock.now) is not None
    c.invalidate(["B"])  # a BOD
    assert c.still_fresh([b], clock.now) is None
    [a2] = held(Key("A"))
    clock.now += 10  # the TTL
    assert c.still_fresh([a2], clock.now - 10) is None
    clock.now -= 10
    c.touch([Key("B")])  # kept recent: A (refetched after B) is the least recently used now
    c.put(Key("C"), "c")
    assert Key("A") not in c._entries and not a2.current and Key("B") in c._entries
    [c_entry] = held(Key("C"))
    c.put(Key("D"), "d")  # evicts B, then C
    c.put(Key("E"), "e")
    assert c.still_fresh([c_entry], clock.now) is None and not c_entry.current
