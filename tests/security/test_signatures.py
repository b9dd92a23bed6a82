"""Forged, replayed and tampered webhooks, rotated secrets, and ION inbound credentials, over HTTP.

Every refused request gets 401 in the project's error shape, saying which check failed, without
echoing the credentials it was sent, and stores nothing. The bodies are valid events (valid BODs
for ION), so the signature or the credentials are the only thing wrong with them: a check that
let one through would store it, and the row counts would show it. The unit tests of the schemes
themselves are in tests/unit/bng/test_signatures.py.
"""

from __future__ import annotations

import base64
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.security.conftest import (
    ION_BASIC,
    ION_BEARER,
    ION_PASSWORD,
    ION_TOKEN,
    ION_USER,
    Service,
    security_settings,
)
from tests.security.corpus import MULTIPART, ORDER_BOD, XML, dumps, message, order, parameters
from tests.support.webhooks import OTHER_SECRET, TEST_SECRET, scheme_headers

SCHEMES = ("standard", "shopify", "stripe")
Headers = dict[str, str]
NEW_SECRET = "whsec_bmV3LXNlY3JldC1hZnRlci1yb3RhdGlvbi0wMQ=="


def event_body() -> bytes:
    """A valid order event with a fresh id (the Stripe-style dedup key)."""
    return dumps(order() | {"id": f"evt_{uuid.uuid4().hex}"})


def signed(scheme: str, body: bytes, *, secret: str = TEST_SECRET, timestamp: int | None = None) -> Headers:
    return scheme_headers(scheme, body, f"msg_{uuid.uuid4().hex}", secret=secret, timestamp=timestamp)


SIGNATURE_HEADER = {
    "standard": "webhook-signature",
    "shopify": "x-shopify-hmac-sha256",
    "stripe": "stripe-signature",
}


def random_signature(scheme: str) -> str:
    if scheme == "standard":
        return "v1," + base64.b64encode(secrets.token_bytes(32)).decode()
    if scheme == "shopify":
        return base64.b64encode(secrets.token_bytes(32)).decode()
    return f"t={int(time.time())},v1={secrets.token_hex(32)}"


def replace_signature(scheme: str, headers: Headers, value: str) -> Headers:
    return {**headers, SIGNATURE_HEADER[scheme]: value}


# A forgery: scheme → (body, headers) of a request that must be refused.
Forgery = Callable[[str], tuple[bytes, Headers]]


def unsigned(scheme: str) -> tuple[bytes, Headers]:
    body = event_body()
    headers = signed(scheme, body)
    headers.pop(SIGNATURE_HEADER[scheme])
    return body, headers


def unsigned_garbage(scheme: str) -> tuple[bytes, Headers]:
    """Not even JSON, and no signature: refused at the signature step, before any parsing."""
    return b"\xff\x00{{ not json", {"content-type": "application/json"}


def garbage_signature(scheme: str) -> tuple[bytes, Headers]:
    body = event_body()
    return body, replace_signature(scheme, signed(scheme, body), "%%% not a signature %%%")


def random_sig(scheme: str) -> tuple[bytes, Headers]:
    body = event_body()
    return body, replace_signature(scheme, signed(scheme, body), random_signature(scheme))


def signature_of_another_body(scheme: str) -> tuple[bytes, Headers]:
    body, other = event_body(), event_body()
    return body, {**signed(scheme, other), "content-type": "application/json"}


def wrong_secret(scheme: str) -> tuple[bytes, Headers]:
    body = event_body()
    return body, signed(scheme, body, secret=OTHER_SECRET)


def tampered_one_byte(scheme: str) -> tuple[bytes, Headers]:
    body = event_body()
    headers = signed(scheme, body)
    return body.replace(b'"SO-', b'"SP-', 1), headers


def tampered_trailing_byte(scheme: str) -> tuple[bytes, Headers]:
    body = event_body()
    return body + b" ", signed(scheme, body)


def header_id_changed(scheme: str) -> tuple[bytes, Headers]:
    """The id (Standard) and the timestamp (Stripe-style) are signed with the body."""
    body = event_body()
    headers = signed(scheme, body)
    if scheme == "standard":
        return body, {**headers, "webhook-id": headers["webhook-id"] + "x"}
    t, _, rest = headers["stripe-signature"].partition(",")
    return body, {**headers, "stripe-signature": f"t={int(t[2:]) - 1},{rest}"}


def stale(scheme: str) -> tuple[bytes, Headers]:
    body = event_body()
    return body, signed(scheme, body, timestamp=int(time.time()) - 301)


def future(scheme: str) -> tuple[bytes, Headers]:
    body = event_body()
    return body, signed(scheme, body, timestamp=int(time.time()) + 400)


def not_a_timestamp(scheme: str) -> tuple[bytes, Headers]:
    body = event_body()
    headers = signed(scheme, body)
    if scheme == "standard":
        return body, {**headers, "webhook-timestamp": "yesterday"}
    return body, {**headers, "stripe-signature": headers["stripe-signature"].replace("t=", "t=x", 1)}


GARBAGE = {"standard": "no v1 signature", "shopify": "not base64", "stripe": "needs t= and at least one v1="}
# Shopify-style signs the body only, with no id or timestamp in the signature: the forgeries of
# those do not apply to it (test_shopify_replay_is_a_duplicate, and docs/security.md).
SIGNED_ID_AND_TIME = ("standard", "stripe")
FORGERIES: list[tuple[str, Forgery, str | dict[str, str], tuple[str, ...]]] = [
    ("unsigned", unsigned, "missing header", SCHEMES),
    ("unsigned_garbage_body", unsigned_garbage, "missing header", SCHEMES),
    ("garbage_signature", garbage_signature, GARBAGE, SCHEMES),
    ("random_signature", random_sig, "no signature matches", SCHEMES),
    ("signature_of_another_body", signature_of_another_body, "no signature matches", SCHEMES),
    ("wrong_secret", wrong_secret, "no signature matches", SCHEMES),
    ("tampered_one_byte", tampered_one_byte, "no signature matches", SCHEMES),
    ("tampered_trailing_byte", tampered_trailing_byte, "no signature matches", SCHEMES),
    ("header_id_changed", header_id_changed, "no signature matches", SIGNED_ID_AND_TIME),
    ("replayed_301_s_old", stale, "s old; the tolerance is 300 s", SIGNED_ID_AND_TIME),
    ("from_400_s_in_the_future", future, "far in the future", SIGNED_ID_AND_TIME),
    ("timestamp_not_a_number", not_a_timestamp, "not a Unix time", SIGNED_ID_AND_TIME),
]
FORGERY_CASES = [
    pytest.param(scheme, forge, says, id=f"{name}-{scheme}")
    for name, forge, says, schemes in FORGERIES
    for scheme in schemes
]


async def post(client: httpx.AsyncClient, body: bytes, headers: Headers) -> httpx.Response:
    return await client.post("/webhooks/bng", content=body, headers=headers)


def assert_401(response: httpx.Response, says: str, *credentials: str) -> None:
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert set(response.json()) == {"error"} and error["code"] in ("invalid_signature", "unauthorized"), error
    assert says.lower() in error["message"].lower(), error
    for credential in credentials:
        assert credential not in response.text


@pytest.mark.parametrize(("scheme", "forge", "says"), FORGERY_CASES)
async def test_forged_webhooks_are_refused(
    service: Service, scheme: str, forge: Forgery, says: str | dict[str, str]
) -> None:
    body, headers = forge(scheme)
    response = await service.stores_nothing(post(service.clients[scheme], body, headers))
    assert_401(response, says if isinstance(says, str) else says[scheme], TEST_SECRET, OTHER_SECRET)


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_a_signed_event_is_accepted_once(service: Service, scheme: str) -> None:
    """The control: the same construction, signed properly, is stored; sent again it is not."""
    client = service.clients[scheme]
    body = event_body()
    headers = signed(scheme, body)
    before = (await service.counts())["events"]
    first = await post(client, body, headers)
    assert first.status_code == 202, first.text
    again = await service.stores_nothing(post(client, body, headers))
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert (await service.counts())["events"] == before + 1


@pytest.mark.parametrize("scheme", SCHEMES)
async def test_rotation_then_removal_of_the_old_secret(service: Service, scheme: str) -> None:
    """Two secrets while BNG switches over, both accepted; once the old one is removed from the
    settings, events signed with it are refused and events signed with the new one stored."""
    url = service.settings.database_url
    for secrets_configured, accepted, refused in (
        ([NEW_SECRET, TEST_SECRET], [NEW_SECRET, TEST_SECRET], [OTHER_SECRET]),
        ([NEW_SECRET], [NEW_SECRET], [TEST_SECRET, OTHER_SECRET]),
    ):
        settings = security_settings(url, webhook_scheme=scheme, webhook_secrets=secrets_configured)
        async with LiveServer(settings, None, False) as server, server.client() as client:
            for secret in accepted:
                body = event_body()
                response = await post(client, body, signed(scheme, body, secret=secret))
                assert response.status_code == 202, (secrets_configured, secret, response.text)
            for secret in refused:
                body = event_body()
                headers = signed(scheme, body, secret=secret)
                response = await service.stores_nothing(post(client, body, headers))
                assert_401(response, "no signature matches", secret)


async def test_shopify_replay_is_a_duplicate(service: Service) -> None:
    """Shopify-style signatures cover the body only, with no timestamp: a replayed delivery is
    caught by its X-Shopify-Webhook-Id (deduplication), never stored twice. (A replay under a
    new id is not detectable by this scheme: docs/security.md, known limits.)"""
    client = service.clients["shopify"]
    body = event_body()
    headers = signed("shopify", body)
    assert (await post(client, body, headers)).status_code == 202
    for _ in range(3):
        replay = await service.stores_nothing(post(client, body, headers))
        assert replay.status_code == 200 and replay.json()["duplicate"] is True


# -- ION inbound credentials -----------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


WRONG_CREDENTIALS: list[tuple[str, dict[str, str], str]] = [
    ("missing", {}, "missing"),
    ("empty", {"Authorization": ""}, "missing"),
    ("bearer_wrong_token", {"Authorization": "Bearer " + secrets.token_urlsafe(24)}, "wrong"),
    ("bearer_token_with_suffix", {"Authorization": f"Bearer {ION_TOKEN}x"}, "wrong"),
    ("bearer_token_prefix_only", {"Authorization": f"Bearer {ION_TOKEN[:-1]}"}, "wrong"),
    ("bearer_without_token", {"Authorization": "Bearer"}, "wrong"),
    ("token_without_scheme", {"Authorization": ION_TOKEN}, "wrong"),
    ("token_as_basic", {"Authorization": f"Basic {ION_TOKEN}"}, "wrong"),
    ("basic_wrong_password", {"Authorization": basic(ION_USER, ION_PASSWORD + "x")}, "wrong"),
    ("basic_wrong_user", {"Authorization": basic("other", ION_PASSWORD)}, "wrong"),
    ("basic_no_colon", {"Authorization": "Basic " + base64.b64encode(ION_USER.encode()).decode()}, "wrong"),
    ("basic_not_base64", {"Authorization": "Basic !!!not-base64!!!"}, "wrong"),
    ("basic_password_as_bearer", {"Authorization": f"Bearer {ION_PASSWORD}"}, "wrong"),
    ("digest_scheme", {"Authorization": f'Digest username="{ION_USER}"'}, "wrong"),
]

ION_ROUTES = {
    "bod": ("/ion/bod", XML),
    "ims_v3": ("/ion/service/v3/multipartMessage", MULTIPART),
    "ims_v2": ("/ion/service/v2/multipartMessage", MULTIPART),
}


def ion_body(route: str) -> bytes:
    if route == "bod":
        return ORDER_BOD
    return message(parameters(messageId=f"msg-{uuid.uuid4().hex}"))


@pytest.mark.parametrize("route", ION_ROUTES)
@pytest.mark.parametrize(
    ("name", "credentials", "says"), WRONG_CREDENTIALS, ids=[c[0] for c in WRONG_CREDENTIALS]
)
async def test_ion_wrong_or_missing_credentials(
    service: Service, route: str, name: str, credentials: dict[str, str], says: str
) -> None:
    path, content_type = ION_ROUTES[route]
    headers: dict[str, Any] = {**content_type, **credentials}
    response = await service.stores_nothing(
        service.client.post(path, content=ion_body(route), headers=headers)
    )
    assert_401(response, says, ION_TOKEN, ION_PASSWORD)
    assert response.headers.get_list("www-authenticate") == [
        'Bearer realm="m3bng-ion"',
        'Basic realm="m3bng-ion", charset="UTF-8"',
    ]


@pytest.mark.parametrize("route", ION_ROUTES)
async def test_ion_right_credentials_are_accepted(service: Service, route: str) -> None:
    """The control: the same requests with either configured method get past authentication."""
    path, content_type = ION_ROUTES[route]
    for credentials in (ION_BEARER, ION_BASIC):
        response = await service.client.post(
            path, content=ion_body(route), headers={**content_type, **credentials}
        )
        assert response.status_code in (200, 201, 202), response.text
