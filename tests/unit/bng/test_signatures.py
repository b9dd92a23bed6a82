"""Signature schemes: valid, wrong secret, rotated secret, stale, tampered body, malformed headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from m3bng.connectors.bng.signatures import (
    SignatureError,
    sign_standard,
    verify_shopify,
    verify_standard,
    verify_stripe,
)
from tests.support.webhooks import OTHER_SECRET, TEST_SECRET, signed_headers

BODY = b'{"type":"order.created","data":{"OrderID":"SO-1"}}'


def test_valid_signature_and_message_id() -> None:
    verified = verify_standard(signed_headers(BODY, "msg_1"), BODY, [TEST_SECRET])
    assert verified.message_id == "msg_1"


def test_matches_the_standardwebhooks_reference_signer() -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    reference = Webhook(TEST_SECRET).sign("msg_ref", now, BODY.decode())
    assert reference == sign_standard(TEST_SECRET, "msg_ref", int(now.timestamp()), BODY)
    headers = {
        "webhook-id": "msg_ref",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": reference,
    }
    assert verify_standard(headers, BODY, [TEST_SECRET]).message_id == "msg_ref"


def test_rotation_accepts_old_and_new_secret_and_several_signatures() -> None:
    old = signed_headers(BODY, "msg_1", secret=OTHER_SECRET)
    assert verify_standard(old, BODY, [TEST_SECRET, OTHER_SECRET]).message_id == "msg_1"
    both = dict(old)
    both["webhook-signature"] = (
        signed_headers(BODY, "msg_1", timestamp=int(old["webhook-timestamp"]))["webhook-signature"]
        + " "
        + old["webhook-signature"]
    )
    assert verify_standard(both, BODY, [TEST_SECRET]).message_id == "msg_1"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda h, b: (h, b + b" "), "no signature matches"),
        (lambda h, b: ({**h, "webhook-id": "msg_2"}, b), "no signature matches"),
        (lambda h, b: ({**h, "webhook-timestamp": str(int(time.time()) - 301)}, b), "s old"),
        (lambda h, b: ({**h, "webhook-timestamp": str(int(time.time()) + 400)}, b), "far in the future"),
        (lambda h, b: ({**h, "webhook-timestamp": "yesterday"}, b), "not a Unix time"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), "missing header"),
        (lambda h, b: ({**h, "webhook-signature": "v1,%%%"}, b), "no v1 signature"),
        (lambda h, b: ({**h, "webhook-signature": "v2,abc"}, b), "no v1 signature"),
        (lambda h, b: ({**h, "webhook-signature": "garbage"}, b), "no v1 signature"),
    ],
)
def test_rejections_say_why(mutate: object, message: str) -> None:
    headers, body = mutate(signed_headers(BODY, "msg_1"), BODY)  # type: ignore[operator]
    with pytest.raises(SignatureError, match=message):
        verify_standard(headers, body, [TEST_SECRET])


def test_wrong_secret() -> None:
    with pytest.raises(SignatureError, match="no signature matches"):
        verify_standard(signed_headers(BODY, "msg_1", secret=OTHER_SECRET), BODY, [TEST_SECRET])


@given(st.text(max_size=40), st.text(max_size=40), st.text(max_size=80))
def test_malformed_headers_only_ever_raise_signature_error(msg_id: str, ts: str, sig: str) -> None:
    headers = {"webhook-id": msg_id, "webhook-timestamp": ts, "webhook-signature": sig}
    with pytest.raises(SignatureError):
        verify_standard(headers, BODY, [TEST_SECRET])


def test_shopify_style() -> None:
    secret = "shpss_0123456789abcdef0123456789"
    digest = base64.b64encode(hmac.new(secret.encode(), BODY, hashlib.sha256).digest()).decode()
    headers = {"x-shopify-hmac-sha256": digest, "x-shopify-webhook-id": "shop-1"}
    assert verify_shopify(headers, BODY, [secret]).message_id == "shop-1"
    with pytest.raises(SignatureError, match="no signature matches"):
        verify_shopify(headers, BODY + b"x", [secret])
    with pytest.raises(SignatureError, match="X-Shopify-Webhook-Id"):
        verify_shopify({"x-shopify-hmac-sha256": digest}, BODY, [secret])


def test_stripe_style() -> None:
    secret = "whsec_stripe_style_secret_value"
    ts = int(time.time())
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert verify_stripe({"stripe-signature": f"t={ts},v1={sig}"}, BODY, [secret]).timestamp == ts
    with pytest.raises(SignatureError, match="s old"):
        verify_stripe({"stripe-signature": f"t={ts - 1000},v1={sig}"}, BODY, [secret])
    with pytest.raises(SignatureError, match="needs t="):
        verify_stripe({"stripe-signature": f"v1={sig}"}, BODY, [secret])
