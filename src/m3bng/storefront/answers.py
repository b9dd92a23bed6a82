"""Warm price answers kept whole, keyed by the request's raw bytes.

A warm 20-item price read spent most of its CPU validating the same request again, building the
same lines and encoding the same JSON, though every value came from the cache (docs/benchmarks.md,
storefront). A held answer skips all of that: the same body validates the same way, so its
bytes are the key, and the answer is kept as encoded pieces with only each line's age left out.

A held answer is only as good as the cache entries it was built from, so it keeps them (the
objects, not copies) and is served only while every one of them is still the entry a read of its
key would answer fresh (``ReadCache.still_fresh``): a BOD, the TTL, a refetch or an eviction
sends the next read down the normal path, which holds the new answer. Answers with an item error
or a stale line are never held: the normal path asks M3 again for those.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson

from m3bng.storefront.cache import Entry


@dataclass(slots=True)
class HeldAnswer:
    customer: str  # the BNG id asked
    cuno: str  # the M3 customer it was linked to when the answer was built
    day: int | None  # UTC day (since the epoch) the price date defaulted to; None: the body named one
    keys: tuple[Any, ...]  # the distinct cache keys of the lines
    entries: tuple[Entry[Any], ...]  # the entry each of ``keys`` held when the answer was built
    template: bytes  # the encoded answer, a %s per line's age (``template_of``)
    fetched: tuple[float, ...]  # the distinct fetch times of the lines (one per bulk M3 call)
    pick: Callable[[list[bytes]], Any]  # the encoded ages of ``fetched`` → one per line, in order
    touched: float = 0.0  # price cache clock when ``keys`` were last kept recent in its LRU

    def body(self, now: float) -> bytes:
        """The answer's bytes at clock ``now``: one age to encode per M3 call the lines came from
        (usually one), placed by C code (``%``, ``itemgetter``) rather than a Python loop."""
        ages: bytes | tuple[bytes, ...] = self.pick([encode_age(now - fetched) for fetched in self.fetched])
        return self.template % ages


def template_of(pieces: Sequence[bytes]) -> bytes:
    """``pieces`` joined by ``%s`` (each line's age goes there), their own ``%`` escaped."""
    return b"%s".join(piece.replace(b"%", b"%%") for piece in pieces)


def picker(fetched_at: Sequence[float]) -> tuple[tuple[float, ...], Callable[[list[bytes]], Any]]:
    """The distinct values of ``fetched_at`` and what maps their encoded ages to one per line (a
    tuple; for a single line, that age alone, which ``%`` takes as well)."""
    distinct = tuple(dict.fromkeys(fetched_at))
    index = {value: n for n, value in enumerate(distinct)}
    return distinct, itemgetter(*(index[value] for value in fetched_at))


def encode_age(seconds: float) -> bytes:
    """``age_seconds`` as the answer shows it (milliseconds), as orjson encodes the float."""
    return orjson.dumps(round(seconds, 3))


class AnswerCache:
    """Held answers of at most ``max_bytes`` in all (0: none), least recently used dropped first.
    Bytes, not entries: an answer of 200 lines is ten times one of 20, and the process has a
    memory budget (docs/benchmarks.md)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._answers: OrderedDict[bytes, HeldAnswer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, raw: bytes) -> HeldAnswer | None:
        found = self._answers.get(raw)
        if found is not None:
            self._answers.move_to_end(raw)
        return found

    def put(self, raw: bytes, answer: HeldAnswer) -> None:
        self.drop(raw)
        size = _size(raw, answer)
        if size > self.max_bytes:
            return
        self._answers[raw] = answer
        self.size += size
        while self.size > self.max_bytes:
            old, dropped = self._answers.popitem(last=False)
            self.size -= _size(old, dropped)

    def drop(self, raw: bytes) -> None:
        dropped = self._answers.pop(raw, None)
        if dropped is not None:
            self.size -= _size(raw, dropped)


def _size(raw: bytes, answer: HeldAnswer) -> int:
    """About what a held answer keeps alive: its key, its bytes, and a reference or two per line
    (the cached values it refers to are the price cache's)."""
    return len(raw) + len(answer.template) + 64 * len(answer.keys) + 256
