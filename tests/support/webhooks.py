"""Signing webhooks the way BNG does (Standard Webhooks; Shopify- and Stripe-style), for the tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from m3bng.connectors.bng.signatures import sign_standard

TEST_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_c2VjcmV0LW51bWJlci10d28tZm9yLXRlc3Rz"


def signed_headers(
    body: bytes, message_id: str, *, secret: str = TEST_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign_standard(secret, message_id, ts, body),
    }


def shopify_headers(body: bytes, message_id: str, *, secret: str = TEST_SECRET) -> dict[str, str]:
    """``X-Shopify-Hmac-Sha256``: base64 HMAC-SHA256 of the body, the secret taken as raw bytes."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {
        "content-type": "application/json",
        "x-shopify-hmac-sha256": base64.b64encode(digest).decode(),
        "x-shopify-webhook-id": message_id,
    }


def stripe_headers(body: bytes, *, secret: str = TEST_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """``Stripe-Signature: t=<unix>,v1=<hex>`` over ``"{t}." + body``; the id is in the body."""
    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"content-type": "application/json", "stripe-signature": f"t={ts},v1={digest}"}


def scheme_headers(
    scheme: str, body: bytes, message_id: str, *, secret: str = TEST_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """Headers signing ``body`` by ``scheme`` (``M3BNG_WEBHOOK_SCHEME``: standard, shopify, stripe)."""
    if scheme == "shopify":
        return shopify_headers(body, message_id, secret=secret)
    if scheme == "stripe":
        return stripe_headers(body, secret=secret, timestamp=timestamp)
    return signed_headers(body, message_id, secret=secret, timestamp=timestamp)


async def post_event(
    client: httpx.AsyncClient,
    body: Any,
    message_id: str = "msg_1",
    *,
    secret: str = TEST_SECRET,
    **headers: str,
) -> httpx.Response:
    content = (
        body
        if isinstance(body, bytes)
        else body.encode()
        if isinstance(body, str)
        else json.dumps(body).encode()
    )
    all_headers = {**signed_headers(content, message_id, secret=secret), **headers}
    return await client.post("/webhooks/bng", content=content, headers=all_headers)
