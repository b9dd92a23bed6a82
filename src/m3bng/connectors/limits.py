"""A concurrency limit whose size may change while calls hold it.

The M3 and BNG clients cap the calls in flight with a :class:`Gate`. On one process the size
is the configured cap; with several worker processes on PostgreSQL the cap is the
installation's, and each process holds a share of it that moves as processes come and go
(``connectors/shares.py``). Shrinking therefore has to wait: a share is given back only once
the calls it covers have ended (``shrink``), so the processes together never exceed the cap.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Gate:
    """At most ``size`` holders at once; waiters are served in the order they came."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_use < self.size)
            self.in_use += 1

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        async with self._changed:
            self.in_use -= 1
            self._changed.notify_all()

    async def grow(self, size: int) -> None:
        async with self._changed:
            self.size = max(self.size, size)
            self._changed.notify_all()

    async def shrink(self, size: int) -> None:
        """Admit no more than ``size`` from now on, and return once no more than that are in."""
        async with self._changed:
            self.size = min(self.size, size)
            await self._changed.wait_for(lambda: self.in_use <= size)
