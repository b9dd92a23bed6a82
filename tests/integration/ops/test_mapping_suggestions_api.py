"""``POST /api/v1/mappings/{flow}/suggestions`` against the real app and the M3 simulator's
metadata: a field the working copy leaves empty is suggested with its reasons, and accepting
the suggestion is the ordinary form edit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from tests.conftest import LiveServer
from tests.integration.m3.conftest import SimHandle
from tests.integration.ops.conftest import Ops, ops_settings, running_ops
from tests.unit.assist.fake_model import fake_model

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

URL = "/api/v1/mappings/order_to_cash"


def field_of(body: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [f for f in body["fields"] if f["field"]["name"] == name]
    assert len(found) == 1, name
    return found[0]


async def without(ops: Ops, url: str, call: str, *fields: str) -> str:
    """Version 1's text with ``fields`` of ``call`` removed by form edits."""
    text = str((await ops.read.get(f"{url}/versions/1")).json()["text"])
    for field in fields:
        edit = {"text": text, "call": call, "field": field, "remove": True}
        response = await ops.admin.post(f"{url}/edit", json=edit)
        assert response.status_code == 200, response.text
        text = str(response.json()["text"])
    return text


async def test_an_empty_field_is_suggested_and_accepted_by_a_form_edit(ops: Ops) -> None:
    text = str((await ops.read.get(f"{URL}/versions/1")).json()["text"])
    removed = await ops.admin.post(
        f"{URL}/edit", json={"text": text, "call": "head", "field": "CUCD", "remove": True}
    )
    assert removed.status_code == 200, removed.text
    working = removed.json()["text"]

    response = await ops.read.post(f"{URL}/suggestions", json={"text": working, "call": "head"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["operation"], body["metadata"], body["input"]["kind"]) == (
        "OIS100MI/AddBatchHead",
        "tenant",
        "shipped_sample",
    )
    assert body["ranking"] == "offline"  # no model configured: the default
    names = [f["field"]["name"] for f in body["fields"]]
    assert "ORDT" not in names and "CONO" not in names  # filled already; the connection's
    cucd = field_of(body, "CUCD")
    best = cucd["candidates"][0]
    assert cucd["good"] and best["path"] == "Currency" and best["example"] == "SEK"
    assert any("currency" in r for r in best["reasons"])
    assert best["in_sample"] is True

    accepted = await ops.admin.post(
        f"{URL}/edit", json={"text": working, "call": "head", "field": "CUCD", "rule": best["rule"]}
    )
    assert accepted.status_code == 200, accepted.text
    table = (await ops.read.post(f"{URL}/fields", json={"text": accepted.json()["text"]})).json()
    [head] = [c for c in table["calls"] if c["call"] == "head"]
    [row] = [f for f in head["fields"] if f["field"] == "CUCD"]
    assert row["path"] == "Currency"


async def test_a_pasted_sample_a_call_per_line_and_refusals(ops: Ops) -> None:
    order = {**sample("order.created"), "Lines": [{"Article": "BIKE-9", "Qty": "4"}]}
    response = await ops.read.post(f"{URL}/suggestions", json={"call": "find_batch", "sample": order})
    assert response.status_code == 200, response.text

    text = await without(ops, URL, "line", "ITNO", "ORQT")
    response = await ops.read.post(f"{URL}/suggestions", json={"text": text, "call": "line", "sample": order})
    body = response.json()
    assert field_of(body, "ITNO")["candidates"][0]["path"] == "_line.Article"
    assert field_of(body, "ORQT")["candidates"][0]["rule"] == {"from": "_line.Qty", "type": "decimal"}

    unknown = await ops.read.post(f"{URL}/suggestions", json={"call": "nope"})
    assert unknown.status_code == 422
    assert "suggestions are for M3 calls" in unknown.text


async def test_a_configured_model_re_ranks_with_a_timeout(
    m3_sim: SimHandle,
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """M3BNG_ASSIST_LLM_URL set: the route asks the (fake, local) model and says so."""
    with fake_model() as model:
        model.answer = {"fields": {"NREF": {"order": ["OrderID", "CustomerID"], "why": "the order's own id"}}}
        settings = ops_settings(make_settings, m3_sim, assist_llm_url=model.url, assist_llm_timeout=5)
        async with running_ops(live_server(settings, run_workers=False), m3_sim, sessions) as ops:
            response = await ops.read.post(f"{URL}/suggestions", json={"call": "head"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["ranking"] == "re-ranked by default: 1 fields moved"
        nref = field_of(body, "NREF")["candidates"][0]
        assert nref["path"] == "OrderID" and nref["reasons"][-1] == "model: the order's own id"
        assert len(model.requests) == 1


async def test_examples_are_masked_for_callers_without_admin(ops: Ops) -> None:
    url = "/api/v1/mappings/customer_sync"
    text = await without(ops, url, "add", "MAIL", "CSCD")
    asked = {"text": text, "call": "add"}
    read = (await ops.read.post(f"{url}/suggestions", json=asked)).json()
    admin = (await ops.admin.post(f"{url}/suggestions", json=asked)).json()
    email = sample("customer.created")["Email"]
    [read_mail, admin_mail] = [field_of(b, "MAIL")["candidates"][0] for b in (read, admin)]
    assert read_mail["path"] == admin_mail["path"] == "Email"
    assert admin_mail["example"] == email
    assert read_mail["example"] != email and "***" in read_mail["example"]
    # The country is no personal data: kept, as on the transaction pages.
    assert field_of(read, "CSCD")["candidates"][0]["example"] == "SE"
