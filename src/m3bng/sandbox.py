"""Sandbox mode: the built-in simulators stand in for M3 and BNG.

This is the only production module that imports ``m3bng.sim``, and only when no real system is
configured. The simulator runs in-process behind ``httpx.ASGITransport``: the production client
still does everything it does against a tenant (OAuth token, URL layout, parsing, error
classes), it just does not open a socket. ``create_app`` mounts the same simulators under
``/_sim/m3`` and ``/_sim/bng`` so that a person can look at what was written
(``/_sim/m3/_sim/state``, ``/_sim/bng/_sim/state``).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from m3bng.config import Settings
from m3bng.connectors.bng.client import BngClient
from m3bng.connectors.m3.client import M3Client
from m3bng.connectors.m3.ionapi import IonApiCredentials
from m3bng.store.db import sqlite_file

SANDBOX_M3_HOST = "http://m3-sandbox"
M3_SIM_MOUNT = "/_sim/m3"
SANDBOX_BNG_HOST = "http://bng-sandbox"
BNG_SIM_MOUNT = "/_sim/bng"


def sandbox_m3_client(settings: Settings) -> tuple[M3Client, Any]:
    """A production M3 client wired to an in-process simulator, and that simulator's ASGI app."""
    from m3bng.sim.m3 import M3SimConfig, create_app

    config = M3SimConfig()
    sim_app = create_app(config)
    credentials = IonApiCredentials.model_validate(ionapi_for(config, SANDBOX_M3_HOST))
    client = M3Client.from_ionapi(settings, credentials, transport=httpx.ASGITransport(app=sim_app))
    return client, sim_app


def sandbox_bng_client(settings: Settings, *, name: str = "bng") -> tuple[BngClient, Any]:
    """A production BNG client wired to an in-process simulator (API-key auth), and its ASGI app."""
    from m3bng.sim.bng import DEFAULT_API_KEY, BngSimConfig, create_app

    config = BngSimConfig()
    sim_app = create_app(config)
    wired = settings.model_copy(
        update={
            "bng_base_url": SANDBOX_BNG_HOST,
            "bng_api_key": SecretStr(DEFAULT_API_KEY),
            "bng_api_key_header": config.api_key_header,
            "bng_oauth_token_url": None,
        }
    )
    client = BngClient.from_settings(wired, transport=httpx.ASGITransport(app=sim_app), name=name)
    return client, sim_app


def ionapi_for(config: Any, base_url: str) -> dict[str, str]:
    """The .ionapi content the simulator accepts (the same keys a real tenant's file has)."""
    from m3bng.sim.m3 import ionapi_dict

    result: dict[str, str] = ionapi_dict(base_url, config)
    return result


def _sandbox_folder(settings: Settings) -> Path:
    """Beside the SQLite file (the sandbox's own folder), else the working directory."""
    database = sqlite_file(settings.database_url)
    return database.resolve().parent if database is not None else Path()


def _kept_secret(settings: Settings, filename: str, prefix: str, make: Callable[[], str]) -> str:
    path = _sandbox_folder(settings) / filename
    if path.is_file():
        existing = path.read_text().strip()
        if existing.startswith(prefix):
            return existing
    secret = make()
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret


def sandbox_webhook_secret(settings: Settings) -> str:
    """A webhook secret for the sandbox, generated once and kept beside the SQLite file.

    Kept rather than regenerated, so that a BNG test instance configured with it keeps working
    across restarts. Outside sandbox mode the settings refuse to start without real secrets.
    """
    return _kept_secret(
        settings,
        "m3bng-sandbox.secret",
        "whsec_",
        lambda: "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode(),
    )


def sandbox_ops_token(settings: Settings) -> str:
    """An ops:admin token for the sandbox's ops API and dashboard, kept like the webhook secret
    (``m3bng-sandbox.ops-token``). Outside sandbox mode no token exists until one is configured."""
    from m3bng.ops.tokens import TOKEN_PREFIX, new_token

    return _kept_secret(settings, "m3bng-sandbox.ops-token", TOKEN_PREFIX, new_token)
