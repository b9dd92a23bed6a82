"""The real app behind uvicorn, once per module and backend, for the hostile-input suite.

One store per module and backend, and on it one server per webhook scheme (Standard Webhooks,
Shopify-style, Stripe-style), all with ION inbound credentials. No workers run, so whatever an
attack manages to store stays in the tables that :meth:`Service.counts` reads.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from m3bng.config import Settings
from m3bng.store.db import create_engine
from m3bng.store.models import DeadLetter, Event, EventKey, IonMessage
from tests.conftest import REPO_ROOT, LiveServer, fresh_store
from tests.support.ops import OPS_TOKEN_ENTRIES
from tests.support.webhooks import TEST_SECRET

ION_TOKEN = "ion-security-token-0123456789abcdef"
ION_USER, ION_PASSWORD = "ion-user", "ion-security-password-42"
ION_BEARER = {"Authorization": f"Bearer {ION_TOKEN}"}
ION_BASIC = {"Authorization": "Basic " + base64.b64encode(f"{ION_USER}:{ION_PASSWORD}".encode()).decode()}
SCHEMES = ("standard", "shopify", "stripe")
TABLES = {"events": Event, "event_keys": EventKey, "ion_messages": IonMessage, "dead_letters": DeadLetter}
T = TypeVar("T")


def security_settings(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "migrate_on_start": False,
        "run_workers": False,
        "log_level": "WARNING",
        "webhook_secrets": [TEST_SECRET],
        "ion_inbound_token": ION_TOKEN,
        "ion_inbound_username": ION_USER,
        "ion_inbound_password": ION_PASSWORD,
        "ops_tokens": OPS_TOKEN_ENTRIES,
        "mappings_dir": REPO_ROOT / "mappings",
        "retention_run_seconds": 0,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Service:
    """The servers on one store, a client for each, and row counts of the inbox tables."""

    backend: str
    settings: Settings
    servers: dict[str, LiveServer]
    clients: dict[str, httpx.AsyncClient]
    engine: AsyncEngine
    _seen: list[dict[str, int]] = field(default_factory=list)

    @property
    def client(self) -> httpx.AsyncClient:
        """The Standard Webhooks server's client (also the one for /ion and /api/v1)."""
        return self.clients["standard"]

    async def counts(self) -> dict[str, int]:
        async with self.engine.connect() as connection:
            return {
                name: int((await connection.execute(select(func.count()).select_from(table))).scalar_one())
                for name, table in TABLES.items()
            }

    async def stores_nothing(self, request: Awaitable[T]) -> T:
        """Await ``request`` (not started before this is awaited: a coroutine) and assert that no
        inbox table gained, or lost, a row meanwhile."""
        before = await self.counts()
        result = await request
        after = await self.counts()
        assert after == before, f"rows changed on {self.backend}: {before} -> {after}"
        return result


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def service(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    pg_template: str,
    sqlite_template: Path,
) -> AsyncIterator[Service]:
    backend: str = request.param
    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(
            fresh_store(backend, tmp_path_factory.mktemp("store"), pg_template, sqlite_template)
        )
        settings = security_settings(url)
        servers: dict[str, LiveServer] = {}
        clients: dict[str, httpx.AsyncClient] = {}
        for scheme in SCHEMES:
            server = LiveServer(security_settings(url, webhook_scheme=scheme), None, False)
            servers[scheme] = await stack.enter_async_context(server)
            clients[scheme] = await stack.enter_async_context(server.client())
        engine = create_engine(settings)
        stack.push_async_callback(engine.dispose)
        yield Service(backend, settings, servers, clients, engine)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The project's error shape, asserted: ``{"error": {"code", "message", ...}}``."""
    assert response.headers.get("content-type", "").startswith("application/json"), response.text[:300]
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], error
    assert isinstance(error.get("message"), str) and error["message"], error
    return error


def assert_refused(
    response: httpx.Response, status: int, *names: str, code: str | None = None
) -> dict[str, Any]:
    """A 4xx with the given status, in the error shape, whose message names each of ``names``."""
    assert 400 <= status < 500
    assert response.status_code == status, (response.status_code, response.text[:500])
    error = error_of(response)
    for name in names:
        assert name.lower() in error["message"].lower(), (name, error["message"][:500])
    if code is not None:
        assert error["code"] == code, error
    return error
