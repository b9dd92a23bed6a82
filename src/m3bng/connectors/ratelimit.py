"""Client-side rate limiting: never send a target more requests per second than it allows.

Not a token bucket: a bucket of N tokens refilled at N/s lets up to 2N requests through within
one second (a full bucket, then the refill), which is exactly what a server counting "requests
in the last second" answers with 429. And not a plain log of start times either: the server
counts a request when it *arrives*, and a request can arrive late (a new connection's handshake,
a busy network) while the next one on a warm connection arrives early, so two starts one second
apart can land within one second at the server.

Instead there are N slots. A request holds a slot from the moment it leaves until its answer
(headers) is back, and the slot is free again only ``window`` seconds after that. The server
received the request before it answered, so two requests that used the same slot arrive at least
``window`` apart, and no one-second window on the server ever holds more than N — whatever the
latency. The price is that a slot is busy for latency + one second, so a slow target gets a
little less than N per second.

The limiter sits in the HTTP transport (``RateLimitedTransport``), so every request on the wire
counts — including one repeated by the auth flow after a 401. ``pause()`` honours a server's
``Retry-After`` for every caller at once: after a 429 nobody sends until the pause is over.

With several worker processes on PostgreSQL the rate is the installation's: each process holds
some of the N slots (``connectors/shares.py``), and ``resize`` moves them. A slot given up is
handed over only once its last request's window has passed (``shrink`` waits for that), and a
slot received starts with a full window, so a slot moving between processes never lets two
requests closer than ``window`` apart.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

import httpx

from m3bng.errors import M3bngError


class RateLimitPaused(M3bngError):
    """The target asked us to hold off for longer than the caller is willing to wait."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"requests to this target are paused for {seconds:.1f} s")
        self.seconds = seconds


class RateLimiter:
    """At most ``rate`` request arrivals in any one second at the target (0 = no limit)."""

    def __init__(
        self,
        rate: float,
        *,
        margin: float = 0.01,
        max_wait: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.unlimited = rate <= 0
        # A fractional rate is rounded down (2.5/s → 2 per second); below 1/s it is one request
        # per 1/rate seconds. Either way the configured rate is never exceeded.
        self.slots = max(math.floor(rate), 1) if rate > 0 else 0  # the whole rate's slots
        self.limit = self.slots  # the slots this process may use now (resize)
        self.window = (1.0 if rate >= 1 else 1.0 / rate) + margin if rate > 0 else 0.0
        self.max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self._free_at = [0.0] * self.limit  # per slot: when it may be used again (inf: in flight)
        self._lock = asyncio.Lock()  # FIFO: callers get slots in the order they asked
        self._released = asyncio.Event()
        self._paused_until = 0.0
        self.waits = 0  # how often a caller had to wait (for metrics)
        self.waited_seconds = 0.0

    def pause(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (a server's Retry-After)."""
        self._paused_until = max(self._paused_until, self._clock() + max(seconds, 0.0))

    def paused_for(self) -> float:
        return max(self._paused_until - self._clock(), 0.0)

    async def acquire(self) -> int:
        """Wait for a slot and return it (-1 when unlimited); ``release`` it when answered.

        Raises RateLimitPaused when a pause is longer than ``max_wait``.
        """
        if self.unlimited and not self.paused_for():
            return -1
        async with self._lock:
            while True:
                now = self._clock()
                paused = self._paused_until - now
                if paused > 0:
                    if self.max_wait is not None and paused > self.max_wait:
                        raise RateLimitPaused(paused)
                    await self._wait(paused)
                    continue
                if self.unlimited:
                    return -1
                if not self.limit:  # this process holds no share of the rate right now
                    self._released.clear()
                    await self._released.wait()
                    continue
                slot = min(range(self.limit), key=self._free_at.__getitem__)
                ready = self._free_at[slot]
                if ready <= now + 1e-9:  # (slack: a clock read right after a wait may round below)
                    self._free_at[slot] = math.inf
                    return slot
                if ready == math.inf:  # every slot is in flight: wait for an answer
                    self._released.clear()
                    self.waits += 1
                    await self._released.wait()
                else:
                    await self._wait(max(ready - now, 0.001))

    def release(self, slot: int) -> None:
        if slot >= 0:
            self._free_at[slot] = self._clock() + self.window
            self._released.set()

    def grow(self, limit: int) -> None:
        """Use ``limit`` slots from now on; new ones wait a full window first (their previous
        holder, another process, may just have used them)."""
        if limit <= self.limit:
            return
        fresh = self._clock() + self.window
        while len(self._free_at) < limit:
            self._free_at.append(fresh)
        for slot in range(self.limit, limit):
            self._free_at[slot] = max(self._free_at[slot], fresh)
        self.limit = limit
        self._released.set()

    async def shrink(self, limit: int) -> None:
        """Use no more than ``limit`` slots from now on, and return once the slots given up are
        quiet: no request in flight on them, and their window passed."""
        self.limit = min(self.limit, limit)
        while True:
            now = self._clock()
            busy = [at for at in self._free_at[limit:] if at > now]
            if not busy:
                del self._free_at[limit:]
                return
            if any(at == math.inf for at in busy):
                self._released.clear()
                await self._released.wait()
            else:
                await self._sleep(max(busy) - now)

    async def _wait(self, seconds: float) -> None:
        self.waits += 1
        self.waited_seconds += seconds
        await self._sleep(seconds)


class RateLimitedTransport(httpx.AsyncBaseTransport):
    """Holds a limiter slot from just before a request is sent until its answer is back."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limiter: RateLimiter) -> None:
        self.inner = inner
        self.limiter = limiter

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        slot = await self.limiter.acquire()
        try:
            return await self.inner.handle_async_request(request)
        finally:
            self.limiter.release(slot)

    async def aclose(self) -> None:
        await self.inner.aclose()
