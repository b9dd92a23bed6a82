"""GET /api/v1/audit on the real app: admin only, filters, paging."""

from __future__ import annotations

from typing import Any

import httpx

from m3bng.store import audit
from tests.integration.ops.conftest import Ops

URL = "/api/v1/audit"


async def actions(client: httpx.AsyncClient, **params: Any) -> list[tuple[str, str, str]]:
    response = await client.get(URL, params=params)
    assert response.status_code == 200, response.text
    return [(item["action"], item["actor"], item["target_id"]) for item in response.json()["items"]]


async def test_audit_is_admin_only_filterable_and_paged(ops: Ops) -> None:
    # The entries the write endpoints record (replay, discard, pause), written as they write them.
    async with ops.sessions.begin() as session:
        await audit.record(
            session,
            actor="alice",
            action="replay",
            target_type="event",
            target_id=5,
            before={"status": "dead"},
            after={"status": "pending"},
        )
        await audit.record(session, actor="bob", action="discard", target_type="event", target_id=6)
        await audit.record(
            session,
            actor="alice",
            action="pause",
            target_type="control",
            target_id="flow:order.created",
            detail="M3 upgrade tonight",
        )

    for client in (ops.read, ops.replay):
        response = await client.get(URL)
        assert response.status_code == 403, response.text
        assert "ops:admin" in response.json()["error"]["message"]
    assert (await ops.client.get(URL)).status_code == 401

    assert await actions(ops.admin) == [
        ("pause", "alice", "flow:order.created"),
        ("discard", "bob", "6"),
        ("replay", "alice", "5"),
    ]
    newest = (await ops.admin.get(URL, params={"limit": 1})).json()["items"][0]
    assert newest["detail"] == "M3 upgrade tonight" and newest["target_type"] == "control" and newest["at"]
    assert await actions(ops.admin, action="replay") == [("replay", "alice", "5")]
    assert await actions(ops.admin, action=["replay", "discard"]) == [
        ("discard", "bob", "6"),
        ("replay", "alice", "5"),
    ]
    assert await actions(ops.admin, actor="alice") == [
        ("pause", "alice", "flow:order.created"),
        ("replay", "alice", "5"),
    ]
    assert await actions(ops.admin, target_id="6") == [("discard", "bob", "6")]
    assert await actions(ops.admin, target_type="event", actor="alice") == [("replay", "alice", "5")]
    assert await actions(ops.admin, since="2999-01-01") == []

    replayed = (await ops.admin.get(URL, params={"action": "replay"})).json()["items"][0]
    assert (replayed["before"], replayed["after"]) == ({"status": "dead"}, {"status": "pending"})

    first = (await ops.admin.get(URL, params={"limit": 2})).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = (await ops.admin.get(URL, params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [item["action"] for item in rest["items"]] == ["replay"] and rest["next_cursor"] is None

    bad = await ops.admin.get(URL, params={"cursor": "nope"})
    assert bad.status_code == 422 and "cursor" in bad.json()["error"]["message"]
