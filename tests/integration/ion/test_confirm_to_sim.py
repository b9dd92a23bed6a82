"""ConfirmBODs to ION: the production ION client against the M3 simulator's ION messaging, over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from m3bng.config import Settings
from m3bng.connectors.ion.bod import parse_bod
from m3bng.connectors.ion.client import IonClient, IonRejected
from m3bng.connectors.ion.confirm import build_confirm_bod
from m3bng.connectors.m3.client import M3Client
from m3bng.errors import TargetUnavailable, TransientError
from tests.conftest import free_port
from tests.integration.m3.conftest import SimHandle
from tests.support.webhooks import TEST_SECRET
from tests.unit.ion.bods import LIMIT, bod


async def sent_to_ion(handle: SimHandle) -> list[dict[str, Any]]:
    response = await handle.control.get("/_sim/ion/messages")
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()
    return result


@pytest.fixture
async def ion(m3_sim: SimHandle) -> AsyncIterator[IonClient]:
    settings = Settings(ionapi_file=m3_sim.ionapi, webhook_secrets=[TEST_SECRET], m3_timeout=2)
    m3 = M3Client.from_settings(settings)
    client = IonClient.from_m3(m3, settings)
    yield client
    await client.aclose()
    await m3.aclose()


async def test_confirm_bod_arrives_at_ion(m3_sim: SimHandle, ion: IonClient) -> None:
    original = parse_bod(bod("SyncSalesOrder_v3.xml"), max_bytes=LIMIT).metadata()
    xml, bodid = build_confirm_bod(
        original, error="BNG has no order BNG-1001", logical_id=ion.logical_id, tenant_id=None
    )
    await ion.send_bod(
        document_name="ConfirmBOD",
        xml=xml,
        message_id="m3bng-confirm-1",
        accounting_entity="770_AAA",
        document_id="1000123",
    )
    (message,) = await sent_to_ion(m3_sim)
    assert message["documentName"] == "ConfirmBOD"
    assert message["messageId"] == "m3bng-confirm-1"
    assert message["tenant"] == "M3BNG_SANDBOX"
    assert message["parameters"] == {
        "documentName": "ConfirmBOD",
        "fromLogicalId": "lid://infor.m3bng.m3bng",
        "toLogicalId": "lid://default",
        "messageId": "m3bng-confirm-1",
        "document": {"characterSet": "UTF-8", "encoding": "NONE"},
        "accountingEntity": "770_AAA",
        "documentId": "1000123",
    }
    confirm = parse_bod(message["xml"].encode(), max_bytes=LIMIT)
    assert (confirm.bod_type, confirm.bodid) == ("ConfirmBOD", bodid)
    failure = confirm.data["BODFailureMessage"]["ErrorProcessMessage"]
    assert failure["Description"] == "BNG has no order BNG-1001"


async def test_expired_token_is_renewed(m3_sim: SimHandle, ion: IonClient) -> None:
    await ion.send_bod(document_name="ConfirmBOD", xml="<ConfirmBOD/>", message_id="m-1")
    (await m3_sim.control.post("/_sim/tokens/expire")).raise_for_status()
    await ion.send_bod(document_name="ConfirmBOD", xml="<ConfirmBOD/>", message_id="m-2")
    assert [m["messageId"] for m in await sent_to_ion(m3_sim)] == ["m-1", "m-2"]
    stats = (await m3_sim.control.get("/_sim/stats")).json()
    assert stats["token_requests"] == 2 and stats["ion_messages"] == 2


async def test_ion_outage_and_rejection(m3_sim: SimHandle, ion: IonClient) -> None:
    faults = {"programs": ["ION"], "error_rate": 1.0}
    (await m3_sim.control.put("/_sim/faults", json=faults)).raise_for_status()
    with pytest.raises(TransientError, match="ION answered HTTP 500"):
        await ion.send_bod(document_name="ConfirmBOD", xml="<ConfirmBOD/>", message_id="m-1")
    (await m3_sim.control.put("/_sim/faults", json={})).raise_for_status()
    with pytest.raises(IonRejected, match="HTTP 400"):
        await ion.send_bod(document_name="ConfirmBOD", xml="", message_id="m-2")  # no payload
    assert await sent_to_ion(m3_sim) == []


async def test_ion_unreachable(ion: IonClient) -> None:
    ion.messaging_url = f"http://127.0.0.1:{free_port()}/T/IONSERVICES/api/ion/messaging"
    with pytest.raises(TargetUnavailable, match="could not reach ION messaging"):
        await ion.send_bod(document_name="ConfirmBOD", xml="<ConfirmBOD/>", message_id="m-1")


async def test_ping_needs_a_token(m3_sim: SimHandle) -> None:
    url = "/M3BNG_SANDBOX/IONSERVICES/api/ion/messaging/service/ping"
    assert (await m3_sim.control.get(url)).status_code == 401
