"""The BNG simulator as a real HTTP server, with a handle on its control API, for any test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from pydantic import SecretStr

from m3bng.config import Settings
from m3bng.connectors.bng.client import BngClient
from m3bng.sim.bng import DEFAULT_API_KEY, DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, BngSimConfig, create_app
from tests.conftest import AsgiServer
from tests.support.webhooks import TEST_SECRET


class BngSim:
    """A running simulator: ``url`` for clients, the rest talks to ``/_sim/``."""

    def __init__(self, server: AsgiServer) -> None:
        self.server = server
        self.url = server.base_url
        self.control = httpx.AsyncClient(base_url=server.base_url, timeout=10)

    @property
    def runtime(self) -> Any:
        """The simulator's in-process state (for assertions the control API does not show)."""
        return self.server.app.state.sim

    async def _json(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.control.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    async def state(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", "/_sim/state")
        return result

    async def faults(self, **faults: Any) -> dict[str, Any]:
        """Replace the faults (unnamed ones go back to their defaults); the result as stored."""
        result: dict[str, Any] = await self._json("POST", "/_sim/faults", faults)
        return result

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._json("GET", "/_sim/stats")
        return result

    async def calls(self, kind: str | None = "api") -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = await self._json("GET", "/_sim/calls")
        return [c for c in calls if kind is None or c.get("kind") == kind]

    async def reset(self) -> None:
        await self._json("POST", "/_sim/reset")

    async def seed(self, data: dict[str, dict[str, dict[str, Any]]]) -> None:
        await self._json("POST", "/_sim/seed", data)

    async def expire_tokens(self) -> None:
        await self._json("POST", "/_sim/tokens/expire")

    async def webhooks(self, **target: Any) -> dict[str, Any]:
        """Configure auto-emit (``url``, ``secret``, ``enabled``)."""
        result: dict[str, Any] = await self._json("POST", "/_sim/webhooks/config", target)
        return result

    async def send_webhook(self, **request: Any) -> httpx.Response:
        return await self.control.post("/_sim/webhooks/send", json=request)

    async def drain_webhooks(self) -> None:
        await self.runtime.emitter.drain()

    def settings(self, **overrides: Any) -> Settings:
        """Settings for a production BngClient pointed at this simulator (API key by default)."""
        values: dict[str, Any] = {
            "bng_base_url": self.url,
            "bng_api_key": SecretStr(DEFAULT_API_KEY),
            "bng_timeout": 5.0,
            "bng_max_inline_wait": 1.0,
            "bng_rate_limit": 0.0,
            "webhook_secrets": [TEST_SECRET],
            "log_level": "WARNING",
        }
        values.update(overrides)
        return Settings(**values)

    def oauth_settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "bng_api_key": None,
            "bng_oauth_token_url": "/oauth/token",
            "bng_client_id": DEFAULT_CLIENT_ID,
            "bng_client_secret": SecretStr(DEFAULT_CLIENT_SECRET),
        }
        values.update(overrides)
        return self.settings(**values)

    def client(self, **overrides: Any) -> BngClient:
        return BngClient.from_settings(self.settings(**overrides))

    async def aclose(self) -> None:
        await self.drain_webhooks()
        await self.control.aclose()


@asynccontextmanager
async def running_bng_sim(config: BngSimConfig | None = None) -> AsyncIterator[BngSim]:
    """``async with running_bng_sim() as sim:`` — a fresh simulator on a free loopback port."""
    async with AsgiServer(create_app(config)) as server:
        sim = BngSim(server)
        try:
            yield sim
        finally:
            await sim.aclose()
