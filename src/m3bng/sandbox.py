"""Sandbox mode: the built-in simulators stand in for M3 (and later BNG).

This is the only production module that imports ``m3bng.sim``, and only when no real system is
configured. The simulator runs in-process behind ``httpx.ASGITransport``: the production client
still does everything it does against a tenant (OAuth token, URL layout, parsing, error
classes), it just does not open a socket. ``create_app`` mounts the same simulator under
``/_sim/m3`` so that a person can look at what was written (``/_sim/m3/_sim/state``).
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from m3bng.config import Settings
from m3bng.connectors.m3.client import M3Client
from m3bng.connectors.m3.ionapi import IonApiCredentials

SANDBOX_M3_HOST = "http://m3-sandbox"
M3_SIM_MOUNT = "/_sim/m3"


def sandbox_m3_client(settings: Settings) -> tuple[M3Client, Any]:
    """A production M3 client wired to an in-process simulator, and that simulator's ASGI app."""
    from m3bng.sim.m3 import M3SimConfig, create_app

    config = M3SimConfig()
    sim_app = create_app(config)
    credentials = IonApiCredentials.model_validate(ionapi_for(config, SANDBOX_M3_HOST))
    client = M3Client.from_ionapi(settings, credentials, transport=httpx.ASGITransport(app=sim_app))
    return client, sim_app


def ionapi_for(config: Any, base_url: str) -> dict[str, str]:
    """The .ionapi content the simulator accepts (the same keys a real tenant's file has)."""
    from m3bng.sim.m3 import ionapi_dict

    result: dict[str, str] = ionapi_dict(base_url, config)
    return result


def sandbox_webhook_secret(settings: Settings) -> str:
    """A webhook secret for the sandbox, generated once and kept beside the SQLite file.

    Kept rather than regenerated, so that a BNG test instance configured with it keeps working
    across restarts. Outside sandbox mode the settings refuse to start without real secrets.
    """
    url = make_url(settings.database_url)
    folder = (
        Path(url.database).resolve().parent if url.get_backend_name() == "sqlite" and url.database else Path()
    )
    path = folder / "m3bng-sandbox.secret"
    if path.is_file():
        existing = path.read_text().strip()
        if existing.startswith("whsec_"):
            return existing
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return secret
