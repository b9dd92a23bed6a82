"""Chaos tests: real processes (API, workers, simulators, PostgreSQL), faults injected mid-load,
and the final state of the M3 and BNG simulators checked against what was sent.

Each test runs a short load that fits the CI budget. ``--soak`` (or ``M3BNG_CHAOS_SOAK=1``) runs the
long variant: ten times the orders, more kills, and the full 60 s M3 outage.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import postgres
from tests.support.cluster import Cluster, ClusterConfig, PrivatePostgres

pytestmark = pytest.mark.slow


def soak(request: pytest.FixtureRequest) -> bool:
    return (
        bool(request.config.getoption("--soak", default=False)) or os.environ.get("M3BNG_CHAOS_SOAK") == "1"
    )


@pytest.fixture
def scale(request: pytest.FixtureRequest) -> int:
    """1 in CI, 10 for the soak run: multiplies the number of orders and faults."""
    return 10 if soak(request) else 1


# Settings for chaos runs: quick recovery (short leases, a short retry schedule that still
# outlasts the faults), so a CI-sized run finishes in seconds.
FAST = {
    "M3BNG_WORKER_POLL_INTERVAL": "0.05",
    "M3BNG_LEASE_SECONDS": "3",
    "M3BNG_M3_TIMEOUT": "2",
    "M3BNG_M3_CONNECT_TIMEOUT": "1",
    "M3BNG_M3_MAX_INLINE_WAIT": "0.5",
    "M3BNG_M3_CIRCUIT_RESET_SECONDS": "1",
    "M3BNG_BNG_TIMEOUT": "2",
    "M3BNG_BNG_CIRCUIT_RESET_SECONDS": "1",
    "M3BNG_RETRY_SCHEDULE": "0.2,0.5,1,2,3,5,5,5,5,5",
    "M3BNG_RETRY_JITTER": "0.1",
    "M3BNG_SHUTDOWN_GRACE_SECONDS": "2",
    "M3BNG_DB_CONNECT_TIMEOUT": "2",
}


@pytest.fixture
async def shared_pg_url(pg_template: str) -> AsyncIterator[str]:
    """A fresh, empty database on the shared test server (the cluster migrates it itself)."""
    name = postgres.unique_name("m3bng_chaos")
    await postgres.create_database(name)
    yield postgres.async_url(name)
    await postgres.drop_database(name)


@pytest.fixture
def private_pg() -> Any:
    server = PrivatePostgres()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Callable[..., Cluster]:
    def make(database_url: str, **options: Any) -> Cluster:
        settings = {**FAST, **options.pop("settings", {})}
        return Cluster(
            ClusterConfig(database_url=database_url, settings=settings, **options), tmp_path / "cluster"
        )

    return make
