"""The acknowledgement rule: 2xx only after commit, duplicates change nothing, bad input stores nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from m3bng.inbox.ingest import GroupCommit, ingest_event
from m3bng.store.models import Event
from tests.conftest import LiveServer
from tests.support.webhooks import signed_headers

ORDER: dict[str, Any] = {
    "type": "order.created",
    "timestamp": "2026-11-24T10:00:00Z",
    "data": sample("order.created"),
}


async def count_events(sessions: async_sessionmaker[AsyncSession]) -> int:
    async with sessions() as session:
        return int((await session.execute(select(func.count()).select_from(Event))).scalar_one())


def post(client: httpx.AsyncClient, body: Any, webhook_id: str | None = "msg_1", **headers: str) -> Any:
    content = (
        body
        if isinstance(body, bytes)
        else body.encode()
        if isinstance(body, str)
        else json.dumps(body).encode()
    )
    hdrs = {**signed_headers(content, webhook_id or ""), **headers}
    if webhook_id is None:
        del hdrs["webhook-id"]
    return client.post("/webhooks/bng", content=content, headers=hdrs)


async def test_ingest_function_stores_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    kwargs: dict[str, Any] = {
        "source": "bng",
        "external_id": "msg_x",
        "event_type": "order.created",
        "payload": ORDER,
        "business_key": "order:SO-1001",
    }
    first = await ingest_event(sessions, **kwargs)
    second = await ingest_event(sessions, **kwargs)
    assert not first.duplicate and second.duplicate
    assert first.event_id == second.event_id
    assert await count_events(sessions) == 1


async def test_concurrent_duplicates_store_one_event(sessions: async_sessionmaker[AsyncSession]) -> None:
    async def deliver() -> Any:
        return await ingest_event(
            sessions,
            source="bng",
            external_id="msg_same",
            event_type="order.created",
            payload=ORDER,
            business_key="order:SO-1001",
        )

    results = await asyncio.gather(*(deliver() for _ in range(40)))
    assert len({r.event_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert await count_events(sessions) == 1


async def test_group_commit_batches_and_keeps_once_per_id(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Many events at once through the group commit: fewer commits than events, one event per
    id (repeats inside a batch and ids stored before alike), every copy told the same id."""
    group = GroupCommit(sessions)
    before = await ingest_event(
        sessions, source="bng", external_id="msg_old", event_type="order.created", payload=ORDER,
        business_key=None,
    )  # fmt: skip
    ids = [f"msg_{n % 60}" for n in range(120)] + ["msg_old"] * 5
    results = await asyncio.gather(
        *(
            ingest_event(
                sessions,
                source="bng",
                external_id=external_id,
                event_type="order.created",
                payload=ORDER,
                business_key=None,
                group=group,
            )
            for external_id in ids
        )
    )
    by_id: dict[str, set[int]] = {}
    created: dict[str, int] = {}
    for external_id, result in zip(ids, results, strict=True):
        by_id.setdefault(external_id, set()).add(result.event_id)
        created[external_id] = created.get(external_id, 0) + (not result.duplicate)
    assert all(len(found) == 1 for found in by_id.values())
    assert by_id["msg_old"] == {before.event_id} and created["msg_old"] == 0
    assert all(created[f"msg_{n}"] == 1 for n in range(60))
    assert await count_events(sessions) == 61
    assert group.events == len(ids) and group.batches < len(ids) / 10


async def test_a_failed_group_commit_fails_every_request_in_it(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: Any
) -> None:
    from m3bng.store import queue

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise ConnectionError("database gone")

    monkeypatch.setattr(queue, "store_events", broken)
    group = GroupCommit(sessions)
    results = await asyncio.gather(
        *(
            ingest_event(
                sessions, source="bng", external_id=f"msg_f{n}", event_type="order.created",
                payload=ORDER, business_key=None, group=group,
            )
            for n in range(10)
        ),
        return_exceptions=True,
    )  # fmt: skip
    assert all(isinstance(r, ConnectionError) for r in results)
    assert await count_events(sessions) == 0


async def test_a_batch_the_database_refuses_stores_none_of_it(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """PostgreSQL's group commit is one statement without BEGIN/COMMIT: when one row of the
    batch is refused (a business key beyond its column), none of the batch is stored and every
    request fails; the next batch is stored normally."""
    if sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("SQLite does not enforce column lengths")
    group = GroupCommit(sessions)

    def event(n: int, key: str | None) -> Any:
        return ingest_event(
            sessions, source="bng", external_id=f"msg_r{n}", event_type="order.created",
            payload=ORDER, business_key=key, group=group,
        )  # fmt: skip

    results = await asyncio.gather(
        *(event(n, "k" * 300 if n == 5 else None) for n in range(10)), return_exceptions=True
    )
    assert all(isinstance(r, Exception) for r in results), results
    assert await count_events(sessions) == 0
    again = await asyncio.gather(*(event(n, None) for n in range(10)))
    assert [r.duplicate for r in again] == [False] * 10
    assert await count_events(sessions) == 10


async def test_http_new_then_duplicate(
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with live_server(make_settings()) as server, server.client() as client:
        first = await post(client, ORDER, **{"x-correlation-id": "corr-42"})
        assert first.status_code == 202, first.text
        again = await post(client, ORDER)
        assert again.status_code == 200
        assert again.json()["duplicate"] is True
        assert again.json()["event_id"] == first.json()["event_id"]
        # Many concurrent deliveries of one id over HTTP: one row.
        burst = await asyncio.gather(*(post(client, ORDER, webhook_id="msg_burst") for _ in range(30)))
        assert sorted({r.status_code for r in burst}) in ([200, 202], [202])
        assert sum(r.status_code == 202 for r in burst) == 1
    assert await count_events(sessions) == 2
    async with sessions() as session:
        event = (await session.execute(select(Event).where(Event.external_id == "msg_1"))).scalar_one()
    assert event.status == "pending"
    assert event.business_key == "order:SO-1001"
    assert event.payload == ORDER
    assert event.correlation_id == "corr-42"


async def test_http_bad_input_is_rejected_and_stores_nothing(
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with live_server(make_settings(max_body_bytes=2048)) as server, server.client() as client:
        cases: list[tuple[Any, dict[str, Any], int, str]] = [
            (b'{"type": "order.created", "data": ', {}, 400, "not valid JSON"),
            (b"\xff\xfe", {}, 400, "not valid JSON"),
            ({"data": {}}, {}, 422, "type: Field required"),
            ({"type": "order.created"}, {}, 422, "data: Field required"),
            ({"type": "order.created", "data": []}, {}, 422, "data: Input should be a valid dictionary"),
            ({"type": "not a type", "data": {}}, {}, 422, "type: String should match pattern"),
            ([1, 2], {}, 422, "Input should be a valid dictionary"),
            ({"type": "order.shipped", "data": {}}, {}, 422, "unknown event type 'order.shipped'"),
            (
                {**ORDER, "data": {**ORDER["data"], "Lines": []}},
                {},
                422,
                "data.Lines: List should have at least 1",
            ),
            (
                {**ORDER, "data": {**ORDER["data"], "OrderDate": "24/11/2026"}},
                {},
                422,
                "data.OrderDate: Input should be a valid date",
            ),
            ({"type": "customer.created", "data": {"CustomerID": "C1"}}, {}, 422, "CompanyName, FirstName"),
            ({**ORDER, "data": {**ORDER["data"], "Note": "y" * 4096}}, {}, 413, "limit"),
            (ORDER, {"webhook_id": None}, 401, "missing header(s): webhook-id"),
            (ORDER, {"content-type": "text/plain"}, 415, "application/json"),
        ]
        for body, opts, status, message in cases:
            webhook_id = opts.pop("webhook_id", "msg_bad")
            response = await post(client, body, webhook_id=webhook_id, **opts)
            assert response.status_code == status, (body, response.text)
            assert message in response.json()["error"]["message"], response.text
        # The same id, now valid, is accepted as new: nothing was stored for the bad attempts.
        assert (await post(client, ORDER, webhook_id="msg_bad")).status_code == 202
    assert await count_events(sessions) == 1


async def test_ingest_fails_loudly_when_store_is_down(
    make_settings: Callable[..., Settings], live_server: Callable[..., LiveServer]
) -> None:
    """No 2xx without a commit: a store that cannot be written answers 5xx, so BNG retries."""
    settings = make_settings()
    async with live_server(settings) as server, server.client() as client:
        await server.app.state.runtime.engine.dispose()
        broken = Settings(database_url="sqlite+aiosqlite:////nonexistent-dir/x.db")
        from m3bng.store.db import create_engine, session_factory

        runtime = server.app.state.runtime
        runtime.sessions = session_factory(create_engine(broken))
        runtime.ingest_group = GroupCommit(runtime.sessions)
        response = await post(client, ORDER, webhook_id="msg_down")
        assert response.status_code >= 500
