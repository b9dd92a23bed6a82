from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from m3bng.config import Settings
from m3bng.store import migrate
from m3bng.store.db import create_engine
from tests.conftest import LiveServer


async def test_live_and_ready(
    make_settings: Callable[..., Settings], live_server: Callable[..., LiveServer]
) -> None:
    async with live_server(make_settings()) as server, server.client() as client:
        assert (await client.get("/health/live")).json() == {"status": "ok"}
        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"database": "ok", "schema": "ok"}


async def test_ready_reports_pending_migrations(
    make_settings: Callable[..., Settings], live_server: Callable[..., LiveServer]
) -> None:
    settings = make_settings()
    engine = create_engine(settings)
    await migrate.downgrade(engine, "base")
    await engine.dispose()
    async with live_server(settings) as server, server.client() as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["schema"] == "migrations pending"


async def test_ready_reports_unreachable_database(live_server: Callable[..., LiveServer]) -> None:
    settings = Settings(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/nothing",
        migrate_on_start=False,
        db_connect_timeout=1,
    )
    server = live_server(settings)
    server.app.router.lifespan_context = _no_start  # the store is down: start without it
    async with server, server.client() as client:
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("unreachable")


@asynccontextmanager
async def _no_start(_app: Any) -> AsyncIterator[None]:
    yield


async def test_metrics_endpoint_exposes_m3_call_metrics(
    make_settings: Callable[..., Settings], live_server: Callable[..., LiveServer]
) -> None:
    from m3bng.observability import metrics

    metrics.observe_m3_call("CRS610MI", "GetBasicData", "ok", 0.02)
    async with live_server(make_settings()) as server, server.client() as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    assert 'm3bng_m3_calls_total{outcome="ok",program="CRS610MI",transaction="GetBasicData"}' in response.text
    assert "m3bng_m3_call_duration_seconds_bucket" in response.text
