"""The hostile-input corpus (corpus.py) against every inbound endpoint of the real app.

For every case: the answer is the expected 4xx (never 2xx, never 5xx), in the project's error
shape, with a message naming the field, header or limit at fault, and no row is added to
``events``, ``event_keys``, ``ion_messages`` or ``dead_letters``. Each runs on SQLite and on
PostgreSQL (module-scoped servers, conftest.py).

Webhook bodies are signed properly for the server's scheme, so each case reaches the validation
behind the signature check; refusals *at* the signature check are in test_signatures.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.security.conftest import ION_BEARER, Service, assert_refused
from tests.security.corpus import BOD_CORPUS, IMS_CORPUS, STRIPE_CORPUS, WEBHOOK_CORPUS, Case, dumps, order
from tests.support.webhooks import scheme_headers

IMS_PATHS = ("/ion/service/v3/multipartMessage", "/ion/service/v2/multipartMessage")


def headers_for(case: Case, base: dict[str, str]) -> dict[str, str]:
    headers = dict(base)
    for name, value in case.headers.items():
        headers.pop(name, None)
        if value is not None:
            headers[name] = value
    return headers


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for offset in range(0, len(body), 65536):
        yield body[offset : offset + 65536]


async def post(client: httpx.AsyncClient, path: str, case: Case, base: dict[str, str]) -> httpx.Response:
    content = _chunks(case.body) if case.chunked else case.body
    return await client.post(path, content=content, headers=headers_for(case, base))


async def post_webhook(service: Service, scheme: str, case: Case) -> httpx.Response:
    signed = scheme_headers(scheme, case.body, f"msg_{uuid.uuid4().hex}")
    return await post(service.clients[scheme], "/webhooks/bng", case, signed)


@pytest.mark.parametrize("scheme", ["standard", "shopify", "stripe"])
@pytest.mark.parametrize("case", WEBHOOK_CORPUS, ids=lambda c: c.name)
async def test_webhook_corpus(service: Service, scheme: str, case: Case) -> None:
    response = await service.stores_nothing(post_webhook(service, scheme, case))
    assert_refused(response, case.status, *case.names)


@pytest.mark.parametrize("case", STRIPE_CORPUS, ids=lambda c: c.name)
async def test_stripe_event_id_corpus(service: Service, case: Case) -> None:
    response = await service.stores_nothing(post_webhook(service, "stripe", case))
    assert_refused(response, case.status, *case.names)


async def test_overlong_headers(service: Service) -> None:
    body = dumps(order())  # valid: only the header is wrong
    cases = [
        ("standard", {"webhook-id": "m" * 256}, "webhook-id"),
        ("standard", {"x-correlation-id": "c" * 65}, "x-correlation-id"),
        ("shopify", {"x-shopify-webhook-id": "s" * 256}, "255"),
    ]
    for scheme, extra, name in cases:
        headers = {**scheme_headers(scheme, body, "msg_long"), **extra}
        client = service.clients[scheme]
        response = await service.stores_nothing(client.post("/webhooks/bng", content=body, headers=headers))
        assert response.status_code in (400, 422), response.text
        assert_refused(response, response.status_code, name)


@pytest.mark.parametrize("case", BOD_CORPUS, ids=lambda c: c.name)
async def test_bod_corpus(service: Service, case: Case) -> None:
    response = await service.stores_nothing(post(service.client, "/ion/bod", case, ION_BEARER))
    assert_refused(response, case.status, *case.names)


@pytest.mark.parametrize("path", IMS_PATHS, ids=["v3", "v2"])
@pytest.mark.parametrize("case", IMS_CORPUS, ids=lambda c: c.name)
async def test_ims_corpus(service: Service, path: str, case: Case) -> None:
    response = await service.stores_nothing(post(service.client, path, case, ION_BEARER))
    assert_refused(response, case.status, *case.names)
