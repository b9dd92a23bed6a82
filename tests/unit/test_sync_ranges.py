"""Key ranges read side by side (sync_ranges.py): whatever the split keys, the keys M3 holds, the
page size, the readers and where a run is cut and continued, every record is read, and none
twice unless the list changed under the load."""

from __future__ import annotations

import asyncio
import bisect
import random
from typing import Any

import pytest
from bench.sync_ranges import rounds as load_in_rounds
from hypothesis import given, settings
from hypothesis import strategies as st

from m3bng.sync_ranges import RangeReader, Segment, estimated_end, split_key

KEY = st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-_ abcz~", min_size=1, max_size=12)


@given(KEY, KEY)
def test_a_split_key_lies_strictly_between_its_bounds(a: str, b: str) -> None:
    lo, hi = min(a, b), max(a, b)
    key = split_key(lo, hi)
    if key is not None:
        assert lo < key < hi


@given(KEY, KEY)
def test_the_estimated_end_of_a_range_lies_above_its_last_key(a: str, b: str) -> None:
    first, pos = min(a, b), max(a, b)
    assert estimated_end(first, pos) > pos


def test_split_keys_count_in_the_alphabet_of_each_position() -> None:
    assert split_key("ITEM-00500", "ITEM-01") == "ITEM-00750"
    assert estimated_end("ITEM-00001", "ITEM-00500") == "ITEM-01"
    assert estimated_end("10001", "10500") == "11"
    assert split_key("10500", "11") == "10750"
    assert split_key("A", "A") is None


class FakeList:
    """An M3 list paged by key (records at or above the start key, ``maxrecs`` at most), whose
    calls can be slow in random order and whose keys may change between calls."""

    def __init__(self, keys: list[str], page_size: int, seed: int, churn: float = 0.0) -> None:
        self.keys = sorted(set(keys))
        self.page_size = page_size
        self.random = random.Random(seed)
        self.churn = churn
        self.calls = 0
        self.deleted: set[str] = set()
        self.inserted: set[str] = set()
        self.at_once = self.most_at_once = 0

    async def read_from(self, start: str, inclusive: bool) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        self.calls += 1
        self.at_once += 1
        self.most_at_once = max(self.most_at_once, self.at_once)
        try:
            for _ in range(self.random.randint(0, 3)):
                await asyncio.sleep(0)
            if self.churn and self.random.random() < self.churn and self.keys:
                gone = self.random.choice(self.keys)
                self.keys.remove(gone)
                self.deleted.add(gone)
                new = gone + "5"
                if new not in self.keys:
                    bisect.insort(self.keys, new)
                    self.inserted.add(new)
            at = bisect.bisect_left(self.keys, start)
            page = self.keys[at : at + self.page_size]
            more = len(page) >= self.page_size
            kept = [k for k in page if k >= start] if inclusive else [k for k in page if k > start]
            return [(k, {"key": k}) for k in kept], more
        finally:
            self.at_once -= 1


async def _load(
    source: FakeList, readers: int, cut_after: list[int], page_size: int
) -> tuple[list[str], RangeReader]:
    """Every key the load stores, a run cut after each count of pages in ``cut_after`` and
    continued from the chain stored with its last page, as a killed ``m3bng sync`` is."""
    stored: list[str] = []
    state: list[dict[str, Any]] | None = None
    for cut in [*cut_after, None]:
        reader = RangeReader(
            source.read_from, first_key="", readers=readers, segments=state, page_size=page_size
        )
        pages = reader.pages()
        count = 0
        async for page in pages:
            stored.extend(k for k, _ in page.records)
            state = page.segments
            count += 1
            if cut is not None and count >= cut:
                break
        await pages.aclose()
    return stored, reader


@settings(max_examples=150, deadline=None)
@given(
    keys=st.lists(KEY, min_size=0, max_size=400),
    page_size=st.integers(min_value=2, max_value=40),
    readers=st.integers(min_value=1, max_value=6),
    cuts=st.lists(st.integers(min_value=1, max_value=8), max_size=3),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_every_record_is_read_exactly_once_across_cuts(
    keys: list[str], page_size: int, readers: int, cuts: list[int], seed: int
) -> None:
    source = FakeList(keys, page_size, seed)
    stored, _ = asyncio.run(_load(source, readers, cuts, page_size))
    expected = sorted(set(keys))
    if not cuts:
        assert sorted(stored) == expected  # each once
    else:  # a cut run loses the pages read ahead, not stored: read again, never lost
        assert sorted(set(stored)) == expected
        assert len(stored) == len(expected)  # what was stored is not stored again
    assert source.most_at_once <= readers


@settings(max_examples=100, deadline=None)
@given(
    keys=st.lists(KEY, min_size=50, max_size=300, unique=True),
    page_size=st.integers(min_value=2, max_value=20),
    readers=st.integers(min_value=2, max_value=5),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_records_that_stay_in_a_changing_list_are_all_read(
    keys: list[str], page_size: int, readers: int, seed: int
) -> None:
    source = FakeList(keys, page_size, seed, churn=0.3)
    stored, _ = asyncio.run(_load(source, readers, [], page_size))
    stayed = set(keys) - source.deleted
    assert stayed <= set(stored)
    assert len(stored) == len(set(stored))  # one scan's order: no range reads another's keys


async def test_ten_thousand_items_are_read_in_ranges_with_few_wasted_calls() -> None:
    keys = [f"ITEM-{n:05d}" for n in range(1, 10_001)] + ["BIKE-100", "BIKE-200", "HELMET-1", "TUBE-26"]
    source = FakeList(keys, 500, seed=1)
    stored, reader = await _load(source, 4, [], 500)
    assert sorted(stored) == sorted(keys)
    assert source.most_at_once == 4
    assert len(reader.segments) > 4  # it found ranges to read side by side
    # one scan takes 21 calls; ranges add a call per range for its cut page and a few probes
    assert source.calls <= 21 + 2 * len(reader.segments) + reader.splits_dropped


async def test_a_run_an_earlier_version_left_with_a_single_cursor_continues_from_it() -> None:
    keys = [f"C{n:04d}" for n in range(100)]
    source = FakeList(keys, 10, seed=2)
    reader = RangeReader(source.read_from, first_key="", readers=3, cursor="C0049", page_size=10)
    stored = [k for page in [p async for p in reader.pages()] for k, _ in page.records]
    assert sorted(stored) == keys[50:]


def test_a_stored_chain_comes_back_as_it_was_stored() -> None:
    segment = Segment("ITEM-05", first="ITEM-05000", pos="ITEM-05300", stored="ITEM-05200", stored_done=False)
    again = Segment.from_state(segment.state())
    assert (again.start, again.first, again.pos, again.done) == ("ITEM-05", "ITEM-05000", "ITEM-05200", False)


@pytest.mark.parametrize("readers", [1, 2, 8])
async def test_an_empty_list_is_read_with_one_call(readers: int) -> None:
    source = FakeList([], 10, seed=3)
    stored, _ = await _load(source, readers, [], 10)
    assert stored == [] and source.calls == 1


@pytest.mark.parametrize(
    ("count", "readers", "share"),
    [(100_000, 4, 0.9), (200_000, 4, 0.95), (100_000, 2, 0.95), (200_000, 8, 0.88), (50_000, 4, 0.8)],
)
async def test_ranges_keep_the_readers_busy(count: int, readers: int, share: float) -> None:
    """The share of the cap-bound limit (readers × a page a round) the ranges reach, counted in
    rounds, not seconds: what is lost is the first page (read alone), the rounds the ranges take
    to spread, and each range's last page, cut short at the next range's first key."""
    keys = [f"B-{n:07d}" for n in range(count)] + ["BIKE-100", "BIKE-200", "HELMET-1", "TUBE-26"]
    rounds, calls, _ = await load_in_rounds(keys, 500, readers)
    bound = len(keys) / 500 / readers
    assert bound / rounds >= share, (rounds, bound)
    assert calls <= len(keys) / 500 * 1.1 + 2 * readers  # one scan takes a call a page
