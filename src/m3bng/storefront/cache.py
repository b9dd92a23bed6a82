"""A read-through cache in front of M3 for the storefront: fresh for a TTL, single-flight on a
miss, and a fallback while M3 is slow or down.

Why it looks like this:

* **Single flight.** Sixteen shoppers opening the same catalogue page miss together; M3 is asked
  once per key, the others wait for that answer (``shared``). Misses of one request are fetched
  together (one bulk MI call per batch, storefront/service.py).
* **The caller never waits longer than ``wait`` for M3.** A fetch runs as a task of its own, so
  a read that gives up answers from the cache while the call goes on and fills the cache for
  the next read; nothing is cancelled half-way and no second call is started for the same key.
* **Stale rather than failing.** A value past its TTL (or invalidated by a BOD) is kept: when M3
  does not answer in time, it is served flagged ``stale`` with its age, up to ``max_stale``
  seconds old; past that, the key is ``unavailable`` and the caller answers 503.
* **Invalidation by item.** A BOD names items (and warehouses), not cache keys: an index from
  item to keys finds them, and a generation per item keeps a fetch that was already running
  when the BOD came from caching the old value.

Only errors ``degradable`` accepts (M3 down, slow, throttled) fall back to a stale value; an
answer M3 gave (no such item, no price) is the answer and is passed on, never cached.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Generic, TypeVar

from m3bng.errors import TransientError
from m3bng.observability import metrics

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Fetch = Callable[[list[K]], Awaitable[dict[K, "V | BaseException"]]]


@dataclass
class Entry(Generic[V]):
    value: V
    fetched_at: float  # monotonic, when M3 answered
    fetched_wall: float  # time.time() of the same moment (reported as as_of)
    valid: bool = True  # False once a BOD said it changed (still a stale fallback)
    current: bool = True  # False once replaced or evicted: no longer the cache's entry for its key


@dataclass(frozen=True)
class Lookup(Generic[V]):
    """One key's answer: a value (fresh or stale, with its age) or the error that stands instead."""

    value: V | None
    age: float = 0.0
    as_of: float = 0.0  # epoch seconds the value was read from M3
    stale: bool = False
    error: BaseException | None = None  # set: no value could be given
    unavailable: bool = False  # the error is M3's absence (and no value young enough was cached)


_VALID = attrgetter("valid")
_CURRENT = attrgetter("current")


class NoAnswerYet(TransientError):
    """No answer from M3 within the wait (the fetch goes on in the background)."""


class ReadCache(Generic[K, V]):
    def __init__(
        self,
        kind: str,
        *,
        ttl: float,
        max_stale: float,
        max_entries: int,
        item_of: Callable[[K], str],
        degradable: Callable[[BaseException], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kind = kind
        self.ttl, self.max_stale, self.max_entries = ttl, max_stale, max_entries
        self._item_of, self._degradable, self._clock = item_of, degradable, clock
        self._entries: OrderedDict[K, Entry[V]] = OrderedDict()
        self._by_item: dict[str, set[K]] = {}
        self._generation: dict[str, int] = {}
        self._inflight: dict[K, asyncio.Future[V]] = {}
        self._since: dict[K, float] = {}  # when each in-flight fetch started
        self._tasks: set[asyncio.Task[None]] = set()
        self._hits = metrics.storefront_cache_counter(kind, "hit")

    def __len__(self) -> int:
        return len(self._entries)

    async def get_many(self, keys: Sequence[K], fetch: Fetch[K, V], *, wait: float) -> dict[K, Lookup[V]]:
        """Every key's answer: cached if fresh, else from M3 (one ``fetch`` for the keys no other
        read is fetching already), else stale from the cache, else the error."""
        now = self._clock()
        out: dict[K, Lookup[V]] = {}
        waiting: dict[K, asyncio.Future[V]] = {}
        lead: list[K] = []
        hits = shared = 0
        for key in dict.fromkeys(keys):
            entry = self._entries.get(key)
            if entry is not None and entry.valid and now - entry.fetched_at < self.ttl:
                self._entries.move_to_end(key)
                out[key] = Lookup(entry.value, now - entry.fetched_at, entry.fetched_wall)
                hits += 1
                continue
            future = self._inflight.get(key)
            if future is None:
                future = self._inflight[key] = asyncio.get_running_loop().create_future()
                self._since[key] = now
                lead.append(key)
            elif entry is not None and now - self._since.get(key, now) >= wait:
                # M3 has kept an earlier read of this key waiting longer than a read may wait:
                # answer from the cache at once instead of waiting out the same wait again.
                out[key] = self._answer(key, future)
                continue
            else:
                shared += 1
            waiting[key] = future
        metrics.observe_storefront_cache(self.kind, "hit", hits)
        metrics.observe_storefront_cache(self.kind, "shared", shared)
        metrics.observe_storefront_cache(self.kind, "miss", len(lead))
        if lead:
            # The generations now, when the read asks: a BOD that comes before M3 answers makes
            # the answer too old to keep, even if the fetch has not started running yet.
            generations = {key: self._generation.get(self._item_of(key), 0) for key in lead}
            task = asyncio.create_task(self._fill(generations, fetch), name=f"storefront-{self.kind}-fill")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if waiting:
            # asyncio.wait never cancels what it waits for: a timeout leaves the fetch running.
            await asyncio.wait(set(waiting.values()), timeout=wait)
            for key, future in waiting.items():
                out[key] = self._answer(key, future)
        return {key: out[key] for key in dict.fromkeys(keys)}

    def _answer(self, key: K, future: asyncio.Future[V]) -> Lookup[V]:
        error: BaseException
        if future.done() and not future.cancelled():
            failure = future.exception()
            if failure is None:
                value = future.result()
                entry = self._entries.get(key)
                if entry is not None and entry.value is value:  # cached when it came: its age
                    return Lookup(value, self._clock() - entry.fetched_at, entry.fetched_wall)
                return Lookup(value, 0.0, time.time())
            error = failure
        else:
            error = NoAnswerYet(f"M3 did not answer within the wait ({self.kind})")
        if not isinstance(error, NoAnswerYet) and not self._degradable(error):
            return Lookup(None, error=error)
        entry = self._entries.get(key)
        now = self._clock()
        if entry is not None and now - entry.fetched_at <= self.max_stale:
            metrics.observe_storefront_cache(self.kind, "stale")
            return Lookup(entry.value, now - entry.fetched_at, entry.fetched_wall, stale=True)
        metrics.observe_storefront_cache(self.kind, "unavailable")
        return Lookup(None, error=error, unavailable=True)

    async def _fill(self, generations: dict[K, int], fetch: Fetch[K, V]) -> None:
        keys = list(generations)
        try:
            results: dict[K, V | BaseException] = await fetch(keys)
        except asyncio.CancelledError:  # shutting down: the waiters get no answer, and must know
            for key in keys:
                future = self._inflight.pop(key, None)
                self._since.pop(key, None)
                if future is not None and not future.done():
                    future.cancel()
            raise
        except Exception as exc:  # handed to every waiter, not swallowed
            results = dict.fromkeys(keys, exc)
        now, wall = self._clock(), time.time()
        for key in keys:
            future = self._inflight.pop(key, None)
            self._since.pop(key, None)
            result = results.get(key, NoAnswerYet(f"M3 gave no answer for {key!r}"))
            if isinstance(result, BaseException):
                if future is not None and not future.done():
                    future.set_exception(result)
                    future.exception()  # retrieved: a read that gave up is no "never retrieved" log
                continue
            if generations[key] == self._generation.get(self._item_of(key), 0):
                self._store(key, Entry(result, now, wall))
            if future is not None and not future.done():
                future.set_result(result)

    def _store(self, key: K, entry: Entry[V]) -> None:
        replaced = self._entries.get(key)
        if replaced is not None:
            replaced.current = False
        self._entries[key] = entry
        self._entries.move_to_end(key)
        self._by_item.setdefault(self._item_of(key), set()).add(key)
        while len(self._entries) > self.max_entries:
            old, evicted = self._entries.popitem(last=False)
            evicted.current = False
            keys = self._by_item.get(self._item_of(old))
            if keys is not None:
                keys.discard(old)
                if not keys:
                    del self._by_item[self._item_of(old)]

    def fresh_entry(self, key: K, value: object) -> Entry[V] | None:
        """The entry a read of ``key`` would answer fresh right now, if it holds ``value``: what a
        held price answer (storefront/answers.py) may rest on; None when a BOD, the TTL or a
        newer fetch has made that value something a read would not serve fresh."""
        entry = self._entries.get(key)
        if entry is None or entry.value is not value or not entry.valid:
            return None
        return entry if self._clock() - entry.fetched_at < self.ttl else None

    def still_fresh(self, held: Sequence[Entry[V]], oldest: float) -> float | None:
        """The clock now if every ``held`` entry is still the one a read of its key would answer
        fresh (still the cache's: not replaced by a refetch or ``put``, not evicted; not marked
        changed by a BOD; the ``oldest`` fetch among them within the TTL), else None. Counted as
        the hits they stand for, so that a held answer does not hide its reads from the metrics.
        Flags, not key look-ups: hashing twenty keys again was most of a held answer's cost."""
        now = self._clock()
        if now - oldest >= self.ttl or not all(map(_CURRENT, held)) or not all(map(_VALID, held)):
            return None
        self._hits.inc(len(held))
        return now

    def touch(self, keys: Iterable[K]) -> None:
        """Keep ``keys`` recent in the LRU, as a read of them would (a held answer's entries are
        read without a look-up, and would otherwise be the first evicted)."""
        entries = self._entries
        for key in keys:
            if key in entries:
                entries.move_to_end(key)

    def put(self, key: K, value: V) -> None:
        """A value read elsewhere (m3bng sync, a test): cached as if fetched now."""
        self._store(key, Entry(value, self._clock(), time.time()))

    def invalidate(self, items: Iterable[str], keep: Callable[[K], bool] | None = None) -> int:
        """Mark the items' entries changed (all, or those ``keep`` does not spare): the next read
        asks M3, and until it answers they are only a stale fallback. Returns how many."""
        count = 0
        for item in items:
            self._generation[item] = self._generation.get(item, 0) + 1
            for key in self._by_item.get(item, ()):
                entry = self._entries.get(key)
                if entry is not None and entry.valid and (keep is None or not keep(key)):
                    entry.valid = False
                    count += 1
        metrics.observe_storefront_cache(self.kind, "invalidated", count)
        return count

    def invalidate_all(self) -> int:
        return self.invalidate(list(self._by_item))

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
