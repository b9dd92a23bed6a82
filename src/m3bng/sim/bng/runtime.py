"""The live state of one simulated BNG: resources, keys, tokens, faults, the call log, stats."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import httpx

from m3bng.sim.bng.config import BngSimConfig, Faults
from m3bng.sim.bng.state import IdempotencyKeys, Resources, Window
from m3bng.sim.bng.webhooks import Emitter


@dataclass
class Runtime:
    config: BngSimConfig
    webhook_transport: httpx.AsyncBaseTransport | None = None
    resources: Resources = field(default_factory=Resources)
    idempotency: IdempotencyKeys = field(init=False)
    faults: Faults = field(default_factory=Faults)
    outage_until: float = 0.0
    tokens: dict[str, tuple[float, str]] = field(default_factory=dict)  # token → (expiry, client id)
    windows: dict[str, Window] = field(default_factory=dict)  # per client, for 429s
    accepted: Window = field(default_factory=Window)  # every client, for the "rate respected" stat
    arrivals: Window = field(default_factory=Window)  # every request, refused ones too
    calls: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=10_000))
    stats: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    max_window: int = 0
    max_arrivals: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    rng: random.Random = field(default_factory=random.Random)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    emitter: Emitter = field(init=False)

    def __post_init__(self) -> None:
        self.idempotency = IdempotencyKeys(self.config.idempotency_ttl_seconds)
        self.emitter = Emitter(
            self.config.webhooks.model_copy(), self.record, self.webhook_transport, rng=self.rng
        )
        self.reset()

    def reset(self) -> None:
        """Back to the configured seed and faults; issued tokens stay valid (clients hold them)."""
        self.resources = Resources()
        self.resources.seed(self.config.seed)
        self.idempotency = IdempotencyKeys(self.config.idempotency_ttl_seconds)
        self.set_faults(self.config.faults.model_copy(deep=True))
        self.emitter.target = self.config.webhooks.model_copy()
        self.windows.clear()
        self.accepted = Window()
        self.arrivals = Window()
        self.calls.clear()
        self.stats.clear()
        self.by_status.clear()
        self.max_window = 0
        self.max_arrivals = 0
        self.max_in_flight = 0
        self.rng.seed(self.config.random_seed)

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self.outage_until = time.monotonic() + faults.outage_seconds if faults.outage_seconds else 0.0
        self.stats["faults_injected"] = 0

    def record(self, entry: dict[str, Any]) -> None:
        entry.setdefault("time", time.time())
        self.calls.append(entry)
        if entry.get("kind") == "webhook":
            outcome = (
                "skipped" if entry.get("skipped") else "failed" if entry.get("status") is None else "sent"
            )
            self.stats[f"webhooks_{outcome}"] += 1

    def accept(self, principal: str, now: float) -> float | None:
        """Count a request against its client's window; the Retry-After seconds when over the limit."""
        limit = self.faults.rate_limit_per_second
        # How fast the client sends, whatever the answer: a client that keeps its configured rate
        # keeps this at or under it even while it is being answered 429.
        self.max_arrivals = max(self.max_arrivals, self.arrivals.add(now))
        window = self.windows.setdefault(principal, Window())
        if limit and window.count(now) + 1 > limit:
            return self.faults.retry_after or max(window.seconds_until_free(now), 0.001)
        window.add(now)
        self.max_window = max(self.max_window, self.accepted.add(now))
        return None

    def fault_allowed(self) -> bool:
        limit = self.faults.limit
        return not limit or self.stats["faults_injected"] < limit

    def snapshot_stats(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            **self.stats,
            "requests": sum(self.by_status.values()),
            "by_status": dict(self.by_status),
            "throttled": self.by_status.get("429", 0),
            "max_requests_per_second": self.max_window,
            "max_arrivals_per_second": self.max_arrivals,
            "rate_limit_per_second": self.faults.rate_limit_per_second,
            "applied_writes": self.stats["applied_writes"],
            "replays": self.stats["replays"],
            "token_requests": self.stats["token_requests"],
            "faults_injected": self.stats["faults_injected"],
            "webhooks_sent": self.stats["webhooks_sent"],
            "webhooks_failed": self.stats["webhooks_failed"],
            "webhooks_skipped": self.stats["webhooks_skipped"],
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "valid_tokens": sum(1 for expiry, _ in self.tokens.values() if expiry > now),
        }
