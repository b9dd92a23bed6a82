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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from m3bng.storefront.cache import Entry


@dataclass(frozen=True, slots=True)
class HeldAnswer:
    customer: str  # the BNG id asked
    cuno: str  # the M3 customer it was linked to when the answer was built
    day: int | None  # UTC day (since the epoch) the price date defaulted to; None: the body named one
    lines: tuple[tuple[Any, Entry[Any]], ...]  # (cache key, entry) per line, in the order asked
    unique: int  # distinct keys among the lines (what a read counts as cache hits)
    pieces: tuple[bytes, ...]  # the encoded answer around the lines' ages: len(lines) + 1 pieces


class AnswerCache:
    """At most ``max_entries`` held answers (0: none), least recently used dropped first."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._answers: OrderedDict[bytes, HeldAnswer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, raw: bytes) -> HeldAnswer | None:
        found = self._answers.get(raw)
        if found is not None:
            self._answers.move_to_end(raw)
        return found

    def put(self, raw: bytes, answer: HeldAnswer) -> None:
        if self.max_entries <= 0:
            return
        self._answers[raw] = answer
        self._answers.move_to_end(raw)
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)

    def drop(self, raw: bytes) -> None:
        self._answers.pop(raw, None)


def splice(pieces: Sequence[bytes], ages: Sequence[bytes]) -> bytes:
    """The answer's bytes: ``pieces`` with each line's encoded age between them."""
    parts = [piece for pair in zip(pieces, ages, strict=False) for piece in pair]
    parts.append(pieces[-1])
    return b"".join(parts)
