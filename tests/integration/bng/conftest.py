"""The BNG simulator over real HTTP, and production BNG clients pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from m3bng.connectors.bng.client import BngClient
from tests.support.bng import BngSim, running_bng_sim


@pytest.fixture
async def bng_sim() -> AsyncIterator[BngSim]:
    async with running_bng_sim() as sim:
        yield sim


@pytest.fixture
async def bng_client(bng_sim: BngSim) -> AsyncIterator[Callable[..., BngClient]]:
    """``bng_client(**settings)``: a client with the sim's API key; ``oauth=True`` for OAuth2."""
    clients: list[BngClient] = []

    def make(*, oauth: bool = False, **overrides: Any) -> BngClient:
        settings = bng_sim.oauth_settings(**overrides) if oauth else bng_sim.settings(**overrides)
        client = BngClient.from_settings(settings)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
