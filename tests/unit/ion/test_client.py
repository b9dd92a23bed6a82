"""The ION client's answers that the simulator does not produce: classification by status, with respx."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from m3bng.config import Settings
from m3bng.connectors.ion.client import IonClient, IonRejected
from m3bng.connectors.m3.client import M3Client, M3ClientConfig
from m3bng.connectors.m3.ionapi import IonApiCredentials
from m3bng.errors import TargetUnavailable, TransientError
from tests.support.webhooks import TEST_SECRET

IONAPI = {
    "ti": "TENANT",
    "ci": "TENANT~abc",
    "cs": "client-secret-value",
    "iu": "https://ionapi.example",
    "pu": "https://sso.example/TENANT/as/",
    "ot": "token.oauth2",
    "saak": "TENANT#key",
    "sask": "service-secret-value",
}
TOKEN_URL = "https://sso.example/TENANT/as/token.oauth2"
SEND_URL = "https://ionapi.example/TENANT/IONSERVICES/api/ion/messaging/service/v3/multipartMessage"


def settings(**overrides: Any) -> Settings:
    return Settings(webhook_secrets=[TEST_SECRET], m3_timeout=2, **overrides)


@pytest.fixture
async def ion() -> AsyncIterator[IonClient]:
    m3 = M3Client.from_ionapi(settings(), IonApiCredentials.model_validate(IONAPI))
    client = IonClient.from_m3(m3, settings())
    yield client
    await client.aclose()
    await m3.aclose()


async def send(client: IonClient) -> None:
    await client.send_bod(
        document_name="ConfirmBOD", xml="<ConfirmBOD/>", message_id="m-1", accounting_entity="770_AAA"
    )


def token_route(mock: respx.MockRouter) -> respx.Route:
    """A token endpoint handing out a new token each time."""
    counter = itertools.count(1)
    return mock.post(TOKEN_URL).mock(
        side_effect=lambda _r: httpx.Response(
            200, json={"access_token": f"tok-{next(counter)}", "expires_in": 3600}
        )
    )


def test_from_m3_derives_url_tenant_and_logical_id() -> None:
    m3 = M3Client.from_ionapi(settings(), IonApiCredentials.model_validate(IONAPI))
    client = IonClient.from_m3(m3, settings(ion_logical_id="lid://infor.m3bng.test"))
    assert client.messaging_url == "https://ionapi.example/TENANT/IONSERVICES/api/ion/messaging"
    assert (client.tenant, client.logical_id) == ("TENANT", "lid://infor.m3bng.test")
    other = IonClient.from_m3(m3, settings(ion_messaging_url="https://ion.example/messaging/"))
    assert other.messaging_url == "https://ion.example/messaging"


def test_from_m3_without_credentials_needs_the_url() -> None:
    bare = M3Client(M3ClientConfig(base_url="http://m3.example"))
    with pytest.raises(ValueError, match="M3BNG_ION_MESSAGING_URL"):
        IonClient.from_m3(bare, settings())
    assert IonClient.from_m3(bare, settings(ion_messaging_url="http://ion/x")).tenant is None


async def test_request_shape(ion: IonClient) -> None:
    with respx.mock(assert_all_called=True) as mock:
        token_route(mock)
        route = mock.post(SEND_URL).mock(return_value=httpx.Response(202))
        await send(ion)
    request = route.calls.last.request
    assert request.headers["X-TenantId"] == "TENANT"
    assert request.headers["Authorization"].startswith("Bearer tok-")
    body = request.content.decode()
    assert 'name="ParameterRequest"' in body and 'name="MessagePayload"; filename="message.xml"' in body
    parameters = json.loads(body.split("application/json\r\n\r\n", 1)[1].split("\r\n--", 1)[0])
    assert parameters == {
        "documentName": "ConfirmBOD",
        "fromLogicalId": "lid://infor.m3bng.m3bng",
        "toLogicalId": "lid://default",
        "messageId": "m-1",
        "document": {"characterSet": "UTF-8", "encoding": "NONE"},
        "accountingEntity": "770_AAA",
    }


async def test_401_renews_the_token_once(ion: IonClient) -> None:
    with respx.mock() as mock:
        tokens = token_route(mock)
        route = mock.post(SEND_URL).mock(side_effect=[httpx.Response(401), httpx.Response(202)])
        await send(ion)
    assert route.call_count == 2 and tokens.call_count == 2
    first, second = (c.request.headers["Authorization"] for c in route.calls)
    assert first != second


async def test_401_after_renewal_waits(ion: IonClient) -> None:
    with respx.mock() as mock:
        token_route(mock)
        mock.post(SEND_URL).mock(return_value=httpx.Response(401, json={"error": "invalid_token"}))
        with pytest.raises(TargetUnavailable, match="ION refused the token") as caught:
            await send(ion)
    assert caught.value.target == "ion"


@pytest.mark.parametrize("status", [400, 403, 412, 404])
async def test_rejections_are_permanent(ion: IonClient, status: int) -> None:
    with respx.mock() as mock:
        token_route(mock)
        mock.post(SEND_URL).mock(return_value=httpx.Response(status, json={"message": "Document not active"}))
        with pytest.raises(IonRejected, match=f"HTTP {status}\\): Document not active") as caught:
            await send(ion)
    assert caught.value.status == status and caught.value.error_class == "ion_rejected"


@pytest.mark.parametrize(("status", "retry_after"), [(500, None), (503, "7"), (429, "2.5")])
async def test_server_errors_are_transient(ion: IonClient, status: int, retry_after: str | None) -> None:
    headers = {"Retry-After": retry_after} if retry_after else {}
    with respx.mock() as mock:
        token_route(mock)
        mock.post(SEND_URL).mock(return_value=httpx.Response(status, text="busy", headers=headers))
        with pytest.raises(TransientError, match=f"HTTP {status}: busy") as caught:
            await send(ion)
    assert not isinstance(caught.value, TargetUnavailable)
    assert caught.value.retry_after == (float(retry_after) if retry_after else None)


async def test_connection_refused_is_target_unavailable(ion: IonClient) -> None:
    with respx.mock() as mock:
        token_route(mock)
        mock.post(SEND_URL).mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(TargetUnavailable, match="could not reach ION") as caught:
            await send(ion)
    assert caught.value.target == "ion"


async def test_read_timeout_is_transient(ion: IonClient) -> None:
    with respx.mock() as mock:
        token_route(mock)
        mock.post(SEND_URL).mock(side_effect=httpx.ReadTimeout("slow"))
        with pytest.raises(TransientError, match="no answer from ION messaging"):
            await send(ion)
