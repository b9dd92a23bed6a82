"""Key ranges of one M3 list read side by side, for the initial load (``m3bng sync customers|
items|suppliers``; sync.py).

M3's lists page by key: a page's last key starts the next one, so one scan makes one call at a
time, and a load takes (pages × M3's time per list call) however large the installation's M3
concurrency cap is. At a real tenant's hundreds of milliseconds per list of 500 records, that is
minutes for a catalogue of 100,000 items while the cap's other slots sit idle. So the list is
cut into ranges, each a scan of its own from its own start key, and up to ``readers`` of them are
read at once (``M3BNG_SYNC_READERS``, within the cap: every call still takes one of its slots).

* **Where a range ends, without knowing the keys in advance.** A range is only added once its
  first page has been read: its first key is then the key M3 holds at or above its start, and
  the range before it ends there (its pages are cut at that key). Until then the range before
  reads on as if alone. So the ranges together read the list exactly as one scan would, whatever
  the split keys were: a split key that lands badly (nothing of the range above it, or a key the
  range before has already passed) costs one call and is dropped, never a record. The keys are
  compared as Python strings, the same order the one scan's paging assumes (sync.py).
* **Where to split.** A split key is picked inside the widest remaining range, between its last
  key and its end (the next range's first key; for the last range an estimate from the keys it
  has seen: ``ITEM-00001`` … ``ITEM-00500`` is taken to run to about ``ITEM-01``), by counting
  each position in the alphabet of the character there (digits between digits, letters between
  letters). This only decides how well the work is spread, not what is read.
* **Resumable.** The chain of ranges (start, first key, last key stored, done) is stored with
  each page, in the page's transaction (``sync_runs.segments``); a continuing run reads each
  range on from its last stored key.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Record = tuple[str, dict[str, Any]]
# Reads one page of the list from a key: (start, inclusive) -> (records in key order, more).
# ``inclusive``: a range's first read, whose start is a split key (or the list's first key);
# otherwise the start is the last key read, which M3 answers again and the reader drops.
ReadFrom = Callable[[str, bool], Awaitable[tuple[list[Record], bool]]]

DIGITS = "0123456789"
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LOWER = "abcdefghijklmnopqrstuvwxyz"
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
_SCORE_WIDTH = 16  # characters of a key that count when estimating how many records a range holds
MAX_MISSES = 10  # splits of one range in a row that found nothing new before it is no longer split


@dataclass
class Segment:
    """One range of the list: read from ``start`` (inclusive) up to the next range's ``first``."""

    start: str
    first: str | None = None  # the first key M3 answered from ``start``
    pos: str | None = None  # the last key read (None: nothing read yet)
    done: bool = False  # read to its end (the next range's first key, or the end of the list)
    stored: str | None = None  # the last key stored with its page: a continuing run reads on from it
    stored_done: bool = False
    reading: bool = False
    probes: list[str] = field(default_factory=list)  # split keys of its splits in flight
    full: bool = True  # its last page was full: more may follow, worth splitting
    page_first: str | None = None  # the first key of its last page: the keys' spread there
    page_read: int = 0  # and how many records it held, to estimate what is left
    anchor: str | None = None  # the last range: where the run of keys it reads began
    hint: str | None = None  # a split at this key found nothing of this range at or above it
    misses: int = 0
    # a split found nothing of it above its split key: the next range is far, past a gap in the
    # keys, so its splits go by its own run of keys rather than the middle of the gap
    sparse: bool = False

    def state(self) -> dict[str, Any]:
        """What a continuing run needs (the stored page's position, not the read-ahead's)."""
        return {"start": self.start, "first": self.first, "pos": self.stored, "done": self.stored_done}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Segment:
        pos, done = state.get("pos"), bool(state.get("done"))
        return cls(
            start=str(state["start"]),
            first=state.get("first"),
            pos=pos,
            stored=pos,
            done=done,
            stored_done=done,
        )


@dataclass(frozen=True)
class Found:
    """A page read, waiting for the caller: its range, its records, whether the range ends."""

    segment: Segment
    records: list[Record]
    done: bool


@dataclass(frozen=True)
class RangePage:
    """A page of one range, in the order read; ``segments`` is the chain to store with it."""

    records: list[Record]
    cursor: str | None  # the first range's last stored key: the run's cursor as the ops API shows it
    segments: list[dict[str, Any]]


def _alphabet(ch: str) -> str:
    for alphabet in (DIGITS, UPPER, LOWER):
        if ch in alphabet:
            return alphabet
    return PRINTABLE


def _index(alphabet: str, ch: str) -> int:
    """``ch``'s place in ``alphabet``, clamped: a character outside it counts as the nearest end."""
    if ch in alphabet:
        return alphabet.index(ch)
    return len(alphabet) - 1 if ch > alphabet[-1] else 0


def split_key(lo: str, hi: str, width: int = 6) -> str | None:
    """A key strictly between ``lo`` and ``hi`` (Python string order) near the middle of the
    keys that could lie between them, or None when there is no room.

    The positions after the common prefix are counted as digits of a mixed-radix number whose
    radix at each position is the alphabet of ``lo``'s character there (digits, upper or lower
    case letters, else printable ASCII): between ``ITEM-00500`` and ``ITEM-01`` that gives
    ``ITEM-00750``, where plain ASCII would give a key above every ``ITEM-009…``."""
    if not lo < hi:
        return None
    p = _shared(lo, hi)
    for extra in (0, 2, 4):
        size = max(len(lo) - p, 1) + extra
        size = min(size, width + extra)
        alphabets = [
            _alphabet(lo[i]) if i < len(lo) else _alphabet(lo[-1]) if lo else DIGITS
            for i in range(p, p + size)
        ]
        low = high = 0
        for n, alphabet in enumerate(alphabets):
            i = p + n
            radix = len(alphabet)
            low = low * radix + (_index(alphabet, lo[i]) if i < len(lo) else 0)
            if n == 0:
                # hi is above lo here: beyond the alphabet's last character counts one past it
                at = hi[i] if i < len(hi) else ""
                digit = radix if at > alphabet[-1] else _index(alphabet, at) if at else 0
            else:
                digit = _index(alphabet, hi[i]) if i < len(hi) else 0
            high = high * radix + digit
        middle = (low + high) // 2
        if middle <= low:
            continue
        chars = []
        for alphabet in reversed(alphabets):
            middle, digit = divmod(middle, len(alphabet))
            chars.append(alphabet[min(digit, len(alphabet) - 1)])
        key = (lo[:p] + "".join(reversed(chars))).rstrip(" ")
        if lo < key < hi:
            return key
    return None


def _increment(prefix: str) -> str | None:
    """The smallest key above every key that starts with ``prefix``, counting in the alphabet
    of each character (``ITEM-0`` → ``ITEM-1``, ``AZ`` → ``B``); None for an empty prefix or
    one at the top of every alphabet."""
    while prefix:
        last = prefix[-1]
        alphabet = _alphabet(last)
        if last < alphabet[-1]:
            return prefix[:-1] + alphabet[alphabet.index(last) + 1 if last in alphabet else -1]
        prefix = prefix[:-1]
    return None


def estimated_end(first: str, pos: str) -> str:
    """Where a range with no range after it probably ends, from the keys it has read: the keys
    from ``first`` to ``pos`` vary from the first character where they differ, so the range is
    taken to run to the end of their common prefix (``ITEM-00001`` … ``ITEM-00500`` → ``ITEM-01``).
    Only how the work is spread depends on it."""
    p = _shared(first, pos)
    end = _increment(pos[:p]) if p < len(pos) else _increment(pos)
    if end is None or not end > pos:
        top = _alphabet(pos[0])[-1] if pos else "~"
        end = top + "~" if top + "~" > pos else "~" * (len(pos) + 1)
    return end


def extrapolated_end(first: str, pos: str, factor: int) -> str | None:
    """Where keys running from ``first`` to ``pos`` get to if they go on ``factor`` times as far,
    counted in the alphabet of each of ``pos``'s characters (``B-0001000`` … ``B-0001499`` × 2 →
    ``B-0002499``); past the end of their common prefix, that prefix's end (``B-0001999`` … ×10 →
    ``B-001``... then ``B-1``); None when not even that is known (the keys differ at the first
    character)."""
    p = _shared(first, pos)
    if p >= len(pos):
        return None
    alphabets = [_alphabet(ch) for ch in pos[p : p + 8]]
    low, high = _number(first[p:], alphabets), _number(pos[p:], alphabets)
    key = _key(pos[:p], high + max(high - low, 1) * factor, alphabets)
    if key is None:
        return _increment(pos[:p])
    return key if key > pos else None


def _number(text: str, alphabets: list[str]) -> int:
    """``text`` as a number whose digits are its characters' places in ``alphabets``."""
    number = 0
    for n, alphabet in enumerate(alphabets):
        number = number * len(alphabet) + (_index(alphabet, text[n]) if n < len(text) else 0)
    return number


def _key(prefix: str, number: int, alphabets: list[str]) -> str | None:
    """``_number``'s inverse after ``prefix``; None past the last key with that prefix."""
    chars = []
    for alphabet in reversed(alphabets):
        number, digit = divmod(number, len(alphabet))
        chars.append(alphabet[digit])
    return None if number else prefix + "".join(reversed(chars))


def _value(key: str) -> int:
    """A key as a number in its characters' order, to compare how far apart keys are."""
    number = 0
    for i in range(_SCORE_WIDTH):
        number = number * 96 + (min(max(ord(key[i]) - 0x1F, 0), 95) if i < len(key) else 0)
    return number


class RangeReader:
    """The pages of one list read as ranges side by side (module docstring), in the order they
    are read. The caller stores each page before it asks for the next; the reads go on in a
    task of their own meanwhile (``pages``)."""

    def __init__(
        self,
        read_from: ReadFrom,
        *,
        first_key: str,
        readers: int,
        segments: list[dict[str, Any]] | None = None,
        cursor: str | None = None,
        max_segments: int | None = None,
        page_size: int = 500,
    ) -> None:
        self.read_from = read_from
        self.readers = max(1, readers)
        self.max_segments = max_segments or self.readers * 8
        self.page_size = page_size
        if segments:
            self.segments = [Segment.from_state(s) for s in segments]
        else:  # a new run, or one an earlier version left with a single cursor
            self.segments = [Segment(first_key, pos=cursor, stored=cursor)]
        self.calls = 0  # list calls made (splits included)
        self.splits_dropped = 0
        self._room = asyncio.Event()  # set when the caller takes a page
        self._queued = 0  # pages read and not yet taken

    def _next_of(self, segment: Segment) -> Segment | None:
        at = self.segments.index(segment)
        return self.segments[at + 1] if at + 1 < len(self.segments) else None

    def _cut(self, segment: Segment, records: list[Record]) -> tuple[list[Record], bool]:
        """The records of ``segment`` alone: those below the next range's first key."""
        following = self._next_of(segment)
        if following is None or following.first is None:
            return records, False
        stop = following.first
        for n, (key, _) in enumerate(records):
            if key >= stop:
                return records[:n], True
        return records, False

    def _split_target(self) -> tuple[Segment, str] | None:
        """The range with the most records probably left, and a key to split it at."""
        best: tuple[float, Segment, str] | None = None
        for segment in self.segments:
            if segment.done or not segment.full or segment.pos is None or segment.page_first is None:
                continue
            following = self._next_of(segment)
            if segment.misses >= MAX_MISSES:
                continue
            bounds = [x for x in (following.first if following else None, segment.hint) if x is not None]
            hi = min(bounds) if bounds else None
            lo = max([segment.pos, *segment.probes])  # a split key goes above this
            if following is None or segment.sparse:
                # The last range, or one whose next range is far past a gap in the keys: its
                # run of keys (from its anchor, where the run began) is taken to go on. Its
                # splits are 1, 3, 7 … times as far ahead as the run has come, several in
                # flight at once, so the ranges spread over the list in a round trip or two and
                # each new range at the end of the run reaches twice as far again; below its
                # bounds (a split key that found nothing of it, the next range's first key).
                anchor = segment.anchor or segment.page_first
                ahead = extrapolated_end(anchor, segment.pos, 2 ** (len(segment.probes) + 1) - 1)
                if ahead is None and hi is None:
                    ahead = split_key(lo, estimated_end(anchor, segment.pos))
                if hi is not None and (ahead is None or ahead >= hi):
                    ahead = split_key(lo, hi)
                if ahead is None or ahead <= lo:
                    continue
                key = ahead
            else:
                # Any other range: split in the middle of what is left of it, one split at a
                # time, below the next range's first key and below the last key it was split
                # at (the new range began at the first key above that one).
                if segment.probes or hi is None:
                    continue
                found = split_key(segment.pos, hi)
                if found is None:
                    continue
                key = found
            snapped = self._snapped(segment, key)
            if snapped is not None and lo < snapped and (hi is None or snapped < hi):
                key = snapped
            spread = _value(segment.pos) - _value(segment.page_first)
            rest = _value(key) - _value(segment.pos)
            # records left ≈ the last page's density × the keys left; a page of one key (no
            # spread) is worth a split if the rest is wide at all
            left = segment.page_read * rest / spread if spread > 0 else float(self.page_size)
            if left < self.page_size / 2:
                continue
            if best is None or left > best[0]:
                best = (left, segment, key)
        return (best[1], best[2]) if best else None

    def _snapped(self, segment: Segment, key: str) -> str | None:
        """``key`` moved to where one of the range's pages would end, by the density of its last
        page: the range then ends on a full page whose last record is the new range's first
        key, not on a page cut short (a call for a few records), when the keys are as evenly
        spread as the page was (B-0000500 … B-0000999 → splits at B-0001498, B-0001997 …)."""
        first, pos = segment.page_first, segment.pos
        if first is None or pos is None or segment.page_read < 2:
            return None
        p = min(_shared(first, pos), _shared(pos, key))  # the rest counts in ``pos``'s alphabets
        if p >= len(pos):
            return None
        alphabets = [_alphabet(ch) for ch in pos[p : p + 8]]
        at_first, at_pos, at_key = (_number(k[p:], alphabets) for k in (first, pos, key))
        if at_pos <= at_first:
            return None
        per_page = (at_pos - at_first) * (self.page_size - 1) / (segment.page_read - 1)
        pages = max(1, round((at_key - at_pos) / per_page))
        return _key(pos[:p], at_pos + round(pages * per_page), alphabets)

    def _page(self, found: Found) -> RangePage:
        """The page as the caller stores it, with the chain as it will be once it is stored: the
        pages handed out before it are stored by then; ranges found since keep their start."""
        segment = found.segment
        if found.records:
            segment.stored = found.records[-1][0]
        segment.stored_done = found.done
        return RangePage(found.records, self.segments[0].stored, [s.state() for s in self.segments])

    async def pages(self) -> AsyncGenerator[RangePage]:
        """The pages in the order they are read. The reads go on in a task of their own while
        the caller stores a page (a range's next read starts as soon as its page is read), up to
        twice ``readers`` pages ahead of the caller."""
        queue: asyncio.Queue[Found | BaseException | None] = asyncio.Queue()
        reading = asyncio.ensure_future(self._read_all(queue))
        try:
            while True:
                found = await queue.get()
                if found is None:
                    return
                if isinstance(found, BaseException):
                    raise found
                self._queued -= 1
                self._room.set()
                yield self._page(found)
        finally:
            reading.cancel()
            with contextlib.suppress(BaseException):
                await reading

    def _issue(
        self, flying: dict[asyncio.Future[tuple[list[Record], bool]], tuple[Segment, Segment | None]]
    ) -> bool:
        """Start one call: the next page of an open range first, else a split; False: none."""
        for segment in self.segments:
            if not segment.done and not segment.reading:
                start = segment.pos if segment.pos is not None else segment.start
                flying[asyncio.ensure_future(self.read_from(start, segment.pos is None))] = (segment, None)
                segment.reading = True
                self.calls += 1
                return True
        if len(self.segments) >= self.max_segments:
            return False
        target = self._split_target()
        if target is None:
            return False
        parent, key = target
        parent.probes.append(key)
        flying[asyncio.ensure_future(self.read_from(key, True))] = (parent, Segment(key))
        self.calls += 1
        return True

    async def _read_all(self, queue: asyncio.Queue[Found | BaseException | None]) -> None:
        flying: dict[asyncio.Future[tuple[list[Record], bool]], tuple[Segment, Segment | None]] = {}
        ahead = self.readers * 2  # pages read and not yet taken by the caller, at most
        try:
            while True:
                while len(flying) < self.readers and len(flying) + self._queued < ahead:
                    if not self._issue(flying):
                        break
                if not flying:
                    if all(segment.done for segment in self.segments):
                        queue.put_nowait(None)
                        return
                    self._room.clear()  # as many pages ahead as allowed: wait for the caller
                    await self._room.wait()
                    continue
                finished, _ = await asyncio.wait(flying, return_when=asyncio.FIRST_COMPLETED)
                for task in [t for t in flying if t in finished]:  # in the order they were made
                    segment, new = flying.pop(task)
                    records, more = task.result()
                    found: Found | None
                    if new is None:
                        segment.reading = False
                        found = self._read(segment, records, more)
                    else:
                        segment.probes.remove(new.start)
                        found = self._added(segment, new, records, more)
                    if found is not None:
                        self._queued += 1
                        queue.put_nowait(found)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a failed call ends the load: the caller raises it
            queue.put_nowait(exc)
        finally:
            for task in flying:
                task.cancel()
            for task in flying:
                with contextlib.suppress(BaseException):
                    await task

    def _read(self, segment: Segment, records: list[Record], more: bool) -> Found:
        kept, cut = self._cut(segment, records)
        if kept:
            segment.pos = kept[-1][0]
            segment.page_first, segment.page_read = _recent(kept)
            if segment.first is None:
                segment.first = kept[0][0]
            if segment.anchor is None or _shared(segment.anchor, segment.pos) + 2 < _shared(
                segment.page_first, segment.pos
            ):
                # a new run of keys: the range read on past the end of its run into keys of
                # another kind (TUBE-19999, then X9-00000 …), which the old run says nothing of
                segment.anchor = segment.page_first
        segment.full = more and not cut
        segment.done = cut or not more or not records
        return Found(segment, kept, segment.done)

    def _covering(self, key: str) -> Segment:
        """The range ``key`` falls in: the last one whose first key is not above it."""
        covering = self.segments[0]
        for segment in self.segments[1:]:
            if segment.first is not None and segment.first <= key:
                covering = segment
        return covering

    def _added(self, issuer: Segment, new: Segment, records: list[Record], more: bool) -> Found | None:
        """A split's first page: the new range joins the chain after the range its split key
        falls in, unless the page holds nothing of that range that it has not read already."""
        parent = self._covering(new.start)
        kept, cut = self._cut(parent, records)
        first = kept[0][0] if kept else None
        if first is None or parent.done or (parent.pos is not None and first <= parent.pos):
            if first is None and (parent.pos is None or new.start > parent.pos):
                # the first key at or above the split key is the next range's (or there is
                # none): nothing of this range lies above the split key
                parent.hint = new.start if parent.hint is None else min(parent.hint, new.start)
                parent.sparse = True
            issuer.misses += 1
            self.splits_dropped += 1
            return None
        issuer.misses = 0
        # nothing lies between the split key and the new range's first key: the parent's keys
        # are all below the split key
        parent.hint = new.start if parent.hint is None else min(parent.hint, new.start)
        new.first, new.pos = first, kept[-1][0]
        new.page_first, new.page_read = _recent(kept)
        # the new range has the parent's next range, and goes on with its run of keys if that
        # next range is far (or there is none)
        runs_on = self._next_of(parent) is None or parent.sparse
        if runs_on and _shared(first, new.start) < _shared(parent.pos or "", new.start):
            runs_on = False  # it landed past the run's end, on keys of another kind (BIKE- after ACC-)
        new.anchor = parent.anchor if runs_on and parent.anchor else None
        new.sparse, parent.sparse = parent.sparse, False
        new.full = more and not cut
        new.done = cut or not more
        self.segments.insert(self.segments.index(parent) + 1, new)
        return Found(new, kept, new.done)


def _recent(records: list[Record]) -> tuple[str, int]:
    """The first key of a page's second half, and the records from it on: the keys' spread where
    the range goes on, not where the page began (a page from BIKE-100 to ITEM-00497 runs on as
    ITEM- keys do)."""
    half = len(records) // 2
    return records[half][0], len(records) - half


def _shared(a: str, b: str) -> int:
    """How many characters ``a`` and ``b`` begin with alike."""
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n
