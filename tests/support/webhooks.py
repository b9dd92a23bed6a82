"""Signing webhooks the way BNG does (Standard Webhooks), for the tests."""

from __future__ import annotations

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
