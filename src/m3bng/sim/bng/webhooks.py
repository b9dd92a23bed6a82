"""BNG → m3bng: signed webhooks, sent on request (``/_sim/webhooks/send``) or on every change.

Signed with the Standard Webhooks scheme by the same ``sign_standard`` that m3bng's tests use,
so a webhook from the simulator is exactly what m3bng's ``POST /webhooks/bng`` verifies.
Auto-emitted webhooks go out after the API answer, one at a time in the order of the changes
(a later change of a customer never arrives before an earlier one), each with a timeout; a
failure is recorded in the call log and never reaches the API caller.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from m3bng.connectors.bng.models import EVENT_MODELS, ValidationError, validate_event_data
from m3bng.connectors.bng.signatures import sign_standard
from m3bng.sim.bng.config import WebhookTarget

# Which webhook a change to a collection produces; only types m3bng knows are emitted.
_CHANGE_TYPES = {
    "customers": "customer.updated",
    "products": "product.updated",
    "vendors": "vendor.updated",
    "orders": "order.updated",
}
CHANGE_TYPES = {collection: t for collection, t in _CHANGE_TYPES.items() if t in EVENT_MODELS}


def signed_request(
    secret: str, event_type: str, data: dict[str, Any], webhook_id: str | None = None
) -> tuple[str, dict[str, str], bytes]:
    """The webhook id, headers and body of one delivery."""
    message_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    envelope = {"type": event_type, "timestamp": datetime.now(UTC).isoformat(), "data": data}
    body = json.dumps(envelope, default=str).encode()
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_standard(secret, message_id, timestamp, body),
    }
    return message_id, headers, body


async def send_webhook(
    url: str,
    secret: str,
    event_type: str,
    data: dict[str, Any],
    *,
    webhook_id: str | None = None,
    timeout: float = 5.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[str, httpx.Response]:
    message_id, headers, body = signed_request(secret, event_type, data, webhook_id)
    async with httpx.AsyncClient(timeout=timeout, transport=transport) as client:
        response = await client.post(url, content=body, headers=headers)
    return message_id, response


class Emitter:
    """Sends ``{entity}.updated`` after each applied change, when a target is configured."""

    def __init__(
        self,
        target: WebhookTarget,
        record: Callable[[dict[str, Any]], None],
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.target = target
        self._record = record
        self._rng = rng or random.Random()
        self._transport = transport
        self._tasks: set[asyncio.Task[None]] = set()
        self._order = asyncio.Lock()  # FIFO: deliveries leave in the order of the changes

    @property
    def active(self) -> bool:
        return bool(self.target.enabled and self.target.url and self.target.secret)

    async def changed(self, collection: str, resource: dict[str, Any]) -> None:
        """Schedule the webhook for a change (async so that Starlette runs it in the event loop)."""
        event_type = CHANGE_TYPES.get(collection)
        if event_type is None or not self.active:
            return
        try:
            validate_event_data(event_type, resource)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "data"
            self._record(
                {"kind": "webhook", "type": event_type, "skipped": f"{where}: {first['msg']}", "status": None}
            )
            return
        if self._dropped(event_type, resource):
            return
        task = asyncio.create_task(self._deliver(event_type, resource))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def emit(self, event_type: str, data: dict[str, Any]) -> str:
        """Deliver one webhook now (a storefront's new order): ``sent``, ``dropped`` or ``off``."""
        if not self.active:
            return "off"
        if self._dropped(event_type, data):
            return "dropped"
        await self._deliver(event_type, data)
        return "sent"

    def _dropped(self, event_type: str, data: dict[str, Any]) -> bool:
        """``drop_rate`` of the deliveries are lost; the log keeps the data (a test delivers it late)."""
        if not self.target.drop_rate or self._rng.random() >= self.target.drop_rate:
            return False
        self._record({"kind": "webhook", "type": event_type, "dropped": True, "data": data, "status": None})
        return True

    async def _deliver(self, event_type: str, data: dict[str, Any]) -> None:
        target = self.target
        assert target.url is not None and target.secret is not None
        entry: dict[str, Any] = {"kind": "webhook", "type": event_type, "url": target.url}
        async with self._order:
            try:
                message_id, response = await send_webhook(
                    target.url,
                    target.secret,
                    event_type,
                    data,
                    timeout=target.timeout,
                    transport=self._transport,
                )
                entry.update(webhook_id=message_id, status=response.status_code)
            except (httpx.HTTPError, OSError) as exc:
                entry.update(status=None, error=f"{type(exc).__name__}: {exc}"[:300])
        self._record(entry)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for deliveries in flight (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
