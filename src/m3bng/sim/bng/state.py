"""What the simulated BNG remembers: resources, idempotency keys and request windows.

Plain in-memory structures, changed only from the event loop, so no locking is needed beyond the
one the app holds around "look up the key, apply, store the answer".
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse

from m3bng.errors import M3bngError

# Collection → the body fields that make up a resource's id, in path order.
COLLECTIONS: dict[str, tuple[str, ...]] = {
    "orders": ("OrderID",),
    "customers": ("CustomerID",),
    "products": ("SKU",),
    "vendors": ("VendorID",),
    "inventory": ("Warehouse", "SKU"),
    "invoices": ("InvoiceNumber",),
}


class SimError(M3bngError):
    """An answer in BNG's error shape: ``{"error", "message", "field"}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "field": self.field}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def resource_id(parts: tuple[str, ...] | list[str]) -> str:
    return "/".join(parts)


@dataclass
class Resources:
    data: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {name: {} for name in COLLECTIONS}
    )
    # When each resource last changed (UTC, ISO 8601): the list endpoint's updated_since filter.
    updated: dict[str, dict[str, str]] = field(default_factory=lambda: {name: {} for name in COLLECTIONS})

    def get(self, collection: str, rid: str) -> dict[str, Any] | None:
        found = self.data[collection].get(rid)
        return copy.deepcopy(found) if found is not None else None

    def put(self, collection: str, rid: str, resource: dict[str, Any]) -> bool:
        """Store ``resource``; True when it was created."""
        created = rid not in self.data[collection]
        self.data[collection][rid] = copy.deepcopy(resource)
        self.updated[collection][rid] = datetime.now(UTC).isoformat(timespec="microseconds")
        return created

    def changed_since(
        self, collection: str, since: str | None, after: tuple[str, str] | None, limit: int
    ) -> list[tuple[str, str, dict[str, Any]]]:
        """``(updated_at, id, resource)`` changed at or after ``since``, in change order, from
        after the ``after`` position on; at most ``limit``."""
        rows = sorted(
            (at, rid) for rid, at in self.updated[collection].items() if since is None or at >= since
        )
        if after is not None:
            rows = [row for row in rows if row > after]
        return [(at, rid, copy.deepcopy(self.data[collection][rid])) for at, rid in rows[:limit]]

    def seed(self, seed: dict[str, dict[str, dict[str, Any]]]) -> int:
        count = 0
        for collection, items in seed.items():
            if collection not in COLLECTIONS:
                raise SimError(
                    422,
                    "unknown_collection",
                    f"no collection {collection!r}; known: {', '.join(COLLECTIONS)}",
                )
            if not isinstance(items, dict):
                raise SimError(422, "invalid_body", f"{collection} must map ids to resources", collection)
            for rid, resource in items.items():
                if not isinstance(resource, dict):
                    raise SimError(422, "invalid_body", f"{collection}/{rid} must be an object", collection)
                parts = rid.split("/")
                if len(parts) == len(COLLECTIONS[collection]):
                    resource = {**resource, **dict(zip(COLLECTIONS[collection], parts, strict=True))}
                self.put(collection, rid, resource)
                count += 1
        return count

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        return copy.deepcopy(self.data)


def fingerprint(method: str, path: str, body: bytes) -> str:
    """Same method, path and JSON body (whitespace and key order aside) → same fingerprint."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return hashlib.sha256(f"{method} {path}\n".encode() + canonical).hexdigest()


@dataclass(frozen=True)
class StoredAnswer:
    fingerprint: str
    status: int
    body: Any
    stored_at: float


@dataclass
class IdempotencyKeys:
    ttl: float
    clock: Callable[[], float] = time.monotonic
    answers: dict[str, StoredAnswer] = field(default_factory=dict)

    def lookup(self, key: str) -> StoredAnswer | None:
        answer = self.answers.get(key)
        if answer is not None and self.clock() - answer.stored_at > self.ttl:
            del self.answers[key]
            return None
        return answer

    def store(self, key: str, fp: str, status: int, body: Any) -> None:
        self.answers[key] = StoredAnswer(fp, status, copy.deepcopy(body), self.clock())


@dataclass
class Window:
    """Times of the requests accepted in the last second (for 429s and for the stats)."""

    times: deque[float] = field(default_factory=deque)

    def count(self, now: float, length: float = 1.0) -> int:
        while self.times and self.times[0] <= now - length:
            self.times.popleft()
        return len(self.times)

    def add(self, now: float) -> int:
        self.count(now)
        self.times.append(now)
        return len(self.times)

    def seconds_until_free(self, now: float, length: float = 1.0) -> float:
        return max(self.times[0] + length - now, 0.0) if self.times else 0.0
