"""Inbound webhook signatures: Standard Webhooks (default), Shopify-style and Stripe-style.

Written out rather than taken from the ``standardwebhooks`` package because a rejected webhook
must say *why* (missing header, stale timestamp, no matching signature) and malformed headers
must never raise anything but a clean 401; the test suite checks this code against that
package's signer. Every scheme verifies over the raw body bytes, compares in constant time and
accepts several secrets at once so that a secret can be rotated without dropping events.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from m3bng.errors import Unauthenticated

DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(Unauthenticated):
    """The request is not provably from BNG; the message says which check failed."""

    code = "invalid_signature"


@dataclass(frozen=True)
class Verified:
    message_id: str  # the deduplication key
    timestamp: int | None


@functools.lru_cache(maxsize=64)  # the configured secrets, decoded once rather than per webhook
def decode_secret(secret: str) -> bytes:
    """``whsec_<base64>`` (Standard Webhooks) or any other string taken as raw bytes."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_") + "==", validate=False)
        except (binascii.Error, ValueError):
            raise ValueError("a whsec_ secret must be base64 after the prefix") from None
    return secret.encode()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")  # OpenSSL's one-shot HMAC, without an HMAC object


def _check_time(timestamp: str, tolerance: int, now: float | None) -> int:
    try:
        value = int(timestamp)
    except ValueError:
        raise SignatureError(f"timestamp {timestamp[:40]!r} is not a Unix time in seconds") from None
    skew = (time.time() if now is None else now) - value
    if abs(skew) > tolerance:
        which = "old" if skew > 0 else "far in the future"
        raise SignatureError(f"timestamp is {abs(int(skew))} s {which}; the tolerance is {tolerance} s")
    return value


def sign_standard(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64>``: used by the tests and by the BNG simulator to sign what it sends."""
    payload = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(_hmac(decode_secret(secret), payload)).decode()


def verify_standard(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> Verified:
    message_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signature = headers.get("webhook-signature", "")
    missing = [
        name
        for name, v in (
            ("webhook-id", message_id),
            ("webhook-timestamp", timestamp),
            ("webhook-signature", signature),
        )
        if not v
    ]
    if missing:
        raise SignatureError(f"missing header(s): {', '.join(missing)}")
    ts = _check_time(timestamp, tolerance, now)
    payload = f"{message_id}.{timestamp}.".encode() + body
    offered = []
    for part in signature.split():
        version, _, value = part.partition(",")
        if version == "v1" and value:
            try:
                offered.append(base64.b64decode(value, validate=True))
            except (binascii.Error, ValueError):
                continue
    if not offered:
        raise SignatureError("webhook-signature holds no v1 signature")
    for secret in secrets:
        expected = _hmac(decode_secret(secret), payload)
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return Verified(message_id, ts)
    raise SignatureError("no signature matches any configured secret")


def verify_shopify(headers: Mapping[str, str], body: bytes, secrets: Sequence[str]) -> Verified:
    """``X-Shopify-Hmac-Sha256: base64(HMAC-SHA256(secret, body))``; id from X-Shopify-Webhook-Id."""
    signature = headers.get("x-shopify-hmac-sha256", "")
    message_id = headers.get("x-shopify-webhook-id") or headers.get("x-shopify-event-id") or ""
    if not signature:
        raise SignatureError("missing header: X-Shopify-Hmac-Sha256")
    if not message_id:
        raise SignatureError("missing header: X-Shopify-Webhook-Id")
    try:
        offered = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("X-Shopify-Hmac-Sha256 is not base64") from None
    for secret in secrets:
        if hmac.compare_digest(_hmac(secret.encode(), body), offered):
            return Verified(message_id, None)
    raise SignatureError("no signature matches any configured secret")


def verify_stripe(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    *,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> Verified:
    """``Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>]`` over ``"{t}.{body}"``.

    The message id comes from the body's ``id`` (Stripe puts it there), so the caller supplies it
    after parsing; this returns a Verified with an empty id for the caller to fill.
    """
    header = headers.get("stripe-signature", "")
    if not header:
        raise SignatureError("missing header: Stripe-Signature")
    timestamp, offered = "", []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            try:
                offered.append(bytes.fromhex(value))
            except ValueError:
                continue
    if not timestamp or not offered:
        raise SignatureError("Stripe-Signature needs t= and at least one v1=")
    ts = _check_time(timestamp, tolerance, now)
    payload = f"{timestamp}.".encode() + body
    for secret in secrets:
        expected = _hmac(secret.encode(), payload)
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return Verified("", ts)
    raise SignatureError("no signature matches any configured secret")
