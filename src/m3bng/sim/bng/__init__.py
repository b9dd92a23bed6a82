"""The BNG simulator: ``create_app(config)`` is an ASGI app that behaves like BNG's REST API
(docs/bng-api.md), with fault injection and a webhook sender for demos and tests."""

from __future__ import annotations

from m3bng.sim.bng.app import API_PREFIX, create_app
from m3bng.sim.bng.config import (
    DEFAULT_API_KEY,
    DEFAULT_API_KEY_HEADER,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    BngSimConfig,
    Faults,
    WebhookTarget,
)
from m3bng.sim.bng.state import COLLECTIONS
from m3bng.sim.bng.webhooks import CHANGE_TYPES, send_webhook, signed_request

__all__ = [
    "API_PREFIX",
    "CHANGE_TYPES",
    "COLLECTIONS",
    "DEFAULT_API_KEY",
    "DEFAULT_API_KEY_HEADER",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "BngSimConfig",
    "Faults",
    "WebhookTarget",
    "create_app",
    "send_webhook",
    "signed_request",
]
