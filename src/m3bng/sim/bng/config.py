"""Settings of the simulated BNG: credentials, fault injection, webhook target."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

# The sandbox's well-known credentials: the in-process sandbox, the CLI and the tests use them.
DEFAULT_API_KEY = "bng-sandbox-key"
DEFAULT_API_KEY_HEADER = "X-API-Key"
DEFAULT_CLIENT_ID = "m3bng"
DEFAULT_CLIENT_SECRET = "bng-sandbox-secret"


class Faults(BaseModel):
    """Faults applied to ``/api/v1`` calls (never to ``/oauth/token`` or the control API).

    ``rate_limit_per_second`` is BNG's own limit: more accepted requests than that from one client
    in any sliding one-second window are answered 429 with ``Retry-After: retry_after`` (or, when
    ``retry_after`` is 0, the time until a slot frees). ``drop_response_rate``: the write is
    applied and its answer stored for idempotent replay, then the client gets a 504 (``drop_mode
    = "504"``) or no answer for ``drop_seconds`` (``"hang"``) — the "applied, answer lost" case.
    """

    latency_ms: float = Field(default=0, ge=0)
    rate_limit_per_second: float = Field(default=0, ge=0)
    retry_after: float = Field(default=1.0, ge=0)
    error_rate: float = Field(default=0, ge=0, le=1)
    error_status: int = Field(default=500, ge=500, le=599)
    outage_seconds: float = Field(default=0, ge=0)
    outage_status: int = Field(default=503, ge=500, le=599)
    drop_response_rate: float = Field(default=0, ge=0, le=1)
    drop_mode: Literal["504", "hang"] = "504"
    drop_seconds: float = Field(default=5, ge=0)
    # Stop injecting after this many faults (0: never): "drop the next PUT's answer, once".
    limit: int = Field(default=0, ge=0)
    # Empty = everything; else path prefixes below /api/v1 (``customers``, ``orders/SO-1``) and methods.
    paths: list[str] = Field(default_factory=list)
    methods: list[str] = Field(default_factory=list)

    def applies_to(self, method: str, resource_path: str) -> bool:
        if self.methods and method.upper() not in {m.upper() for m in self.methods}:
            return False
        return not self.paths or any(resource_path.startswith(p.strip("/")) for p in self.paths)


class WebhookTarget(BaseModel):
    """Where BNG sends its webhooks when a resource changes (auto-emit)."""

    url: str | None = None
    secret: str | None = None
    enabled: bool = False
    timeout: float = Field(default=5.0, gt=0, le=60)
    # The share of webhooks never delivered (BNG gave up after its retries, the endpoint was down
    # for a day, the webhook was never registered): what reconciliation must find.
    drop_rate: float = Field(default=0, ge=0, le=1)

    def public(self) -> dict[str, Any]:
        """What the control API shows: never the secret itself."""
        return {**self.model_dump(exclude={"secret"}), "secret_set": bool(self.secret)}


class BngSimConfig(BaseModel):
    api_key: str = DEFAULT_API_KEY
    api_key_header: str = DEFAULT_API_KEY_HEADER
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    token_lifetime_seconds: float = Field(default=3600, gt=0)
    idempotency_ttl_seconds: float = Field(default=24 * 3600, gt=0)
    faults: Faults = Field(default_factory=Faults)
    webhooks: WebhookTarget = Field(default_factory=WebhookTarget)
    # {collection: {id: resource}} loaded on start and on every reset.
    seed: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    random_seed: int = 1
