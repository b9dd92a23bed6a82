"""The one Settings class.

Every setting is read from the environment (prefix ``M3BNG_``) or a ``.env`` file and is listed,
with a comment, in ``.env.example``. Components receive the values they need from an explicit
``Settings`` instance; nothing reads the environment anywhere else, so tests build settings
directly and never leak state between each other.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from m3bng.errors import M3bngError
from m3bng.ops.tokens import Scope, parse_token_entry

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./m3bng.db"

# Delays in seconds before attempt 2, 3, ... : 8 attempts spread over ~25.6 hours, so an M3 or BNG
# outage of a full working day still ends in success rather than a dead letter.
DEFAULT_RETRY_SCHEDULE = (60.0, 300.0, 1800.0, 3600.0, 14400.0, 28800.0, 43200.0)


# The storefront's lane when M3BNG_STOREFRONT_M3_SHARE is unset and a storefront is served.
DEFAULT_STOREFRONT_SHARE = 0.25


class SettingsError(M3bngError):
    """Raised with a message naming the offending ``M3BNG_*`` variable(s)."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="M3BNG_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,  # `M3BNG_X=` in .env means "not set", as in .env.example
        frozen=True,
    )

    # --- store -------------------------------------------------------------------------------
    database_url: str = DEFAULT_SQLITE_URL
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=20, ge=0, le=500)
    db_connect_timeout: float = Field(default=10.0, gt=0)
    migrate_on_start: bool | None = None  # None: migrate only in sandbox mode

    # --- HTTP --------------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)

    # --- workers -----------------------------------------------------------------------------
    run_workers: bool = True
    worker_concurrency: int = Field(default=8, ge=1, le=1024)
    worker_poll_interval: float = Field(default=0.5, gt=0, le=60)
    lease_seconds: float = Field(default=60.0, ge=1)
    retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE)
    )
    retry_jitter: float = Field(default=0.2, ge=0, le=1)
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    flow_plugins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- mappings ------------------------------------------------------------------------------
    # Unset: in sandbox mode ./mappings when it exists, else the default mappings shipped in the
    # package; outside sandbox mode a folder must be named (``mappings_folder``).
    mappings_dir: Path | None = None
    # How often a process asks the store whether a mapping version was published (0: only at
    # start-up). Workers then run the new live versions without a restart.
    mappings_refresh_seconds: float = Field(default=5.0, ge=0, le=3600)

    # --- BNG instances (instances.py) ------------------------------------------------------------
    # Unset: one BNG, the instance ``default`` made of the settings below.
    instances_file: Path | None = None

    # --- inbound webhooks from BNG ----------------------------------------------------------------
    webhook_scheme: Literal["standard", "shopify", "stripe"] = "standard"
    webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    webhook_tolerance_seconds: int = Field(default=300, ge=30, le=3600)

    # --- connectors (used by the M3 and BNG connectors; absent = sandbox simulators) ---------
    ionapi_file: Path | None = None
    bng_base_url: str | None = None

    # --- M3 ------------------------------------------------------------------------------------
    m3_base_url: str | None = None  # default {iu}/{ti}/M3/m3api-rest from the .ionapi file
    m3_api_version: Literal["v2", "v1"] = "v2"
    m3_cono: int | None = Field(default=None, ge=0, le=999)
    m3_divi: str | None = Field(default=None, max_length=3)
    m3_timeout: float = Field(default=30.0, gt=0, le=600)
    m3_connect_timeout: float = Field(default=10.0, gt=0, le=120)
    m3_max_concurrency: int = Field(default=8, ge=1, le=256)
    # On PostgreSQL the M3 and BNG limits hold for all worker processes together (each takes a
    # share: connectors/shares.py); False makes them per process, as on SQLite.
    shared_limits: bool = True
    m3_call_attempts: int = Field(default=3, ge=1, le=10)
    m3_max_inline_wait: float = Field(default=10.0, ge=0, le=300)
    m3_circuit_failures: int = Field(default=5, ge=1, le=1000)
    m3_circuit_reset_seconds: float = Field(default=30.0, gt=0, le=3600)
    m3_maintenance_windows: Annotated[list[str], NoDecode] = Field(default_factory=list)
    m3_metadata_ttl_hours: float = Field(default=24.0, gt=0)

    # --- storefront reads (api/storefront.py, docs/storefront-api.md) ----------------------------
    # The part of M3BNG_M3_MAX_CONCURRENCY kept for storefront reads (at least one call): they
    # wait for each other there, never for order entry, and order entry keeps the rest. 0: no
    # lane (the flows keep the whole cap; storefront reads, if any, share it). Unset: 0.25 when
    # the installation can serve a storefront (a storefront:read token in M3BNG_OPS_TOKENS, or
    # SSO tokens, whose scopes are only known per request), else 0, so an installation without
    # a storefront keeps its whole cap for order entry after an upgrade.
    storefront_m3_share: float | None = Field(default=None, ge=0, le=0.9)
    storefront_price_ttl_seconds: float = Field(default=300.0, gt=0, le=86400)
    storefront_stock_ttl_seconds: float = Field(default=60.0, gt=0, le=86400)
    # While M3 is slow or down, cached values up to this old are answered, flagged stale;
    # past it the read answers 503 with Retry-After.
    storefront_max_stale_seconds: float = Field(default=1800.0, ge=0, le=7 * 86400)
    # How long a storefront read waits for M3 before it answers from the cache (the M3 call
    # goes on and fills the cache for the next read).
    storefront_m3_wait_seconds: float = Field(default=2.0, gt=0, le=60)
    storefront_cache_entries: int = Field(default=200_000, ge=100, le=10_000_000)
    # Memory for warm price answers kept whole per instance, keyed by the request body (0: none):
    # a repeated read whose every line is still a fresh cached value skips validating and encoding.
    storefront_answer_cache_bytes: int = Field(default=16_777_216, ge=0, le=1_073_741_824)
    # How often a serving process looks in the store for BODs another process received (0: never;
    # then only the receiving process's cache is invalidated, the others' at their TTL).
    storefront_bod_follow_seconds: float = Field(default=1.0, ge=0, le=3600)
    storefront_max_items: int = Field(default=200, ge=1, le=1000)  # per price/availability request
    storefront_bulk_size: int = Field(default=50, ge=1, le=500)  # transactions per bulk MI POST
    storefront_list_page: int = Field(default=100, ge=1, le=10_000)  # records per MI list page
    # The catalog price push (``m3bng sync prices --to bng``, sync.py): the M3 customer number
    # (CUNO) whose net price at quantity 1 is each product's catalog Price in BNG. Unset: the
    # push is refused (there is no catalog price without a customer to price for). Per
    # instance: ``catalog_customer`` in M3BNG_INSTANCES_FILE.
    storefront_catalog_customer: str | None = Field(default=None, min_length=1, max_length=10)
    # The same push on a schedule, every so many seconds, for each instance with a catalog
    # customer, in the process that holds the job's lease (a worker process). 0: off.
    sync_prices_seconds: float = Field(default=0.0, ge=0)
    # Key ranges of an M3 list the initial load reads at once (m3bng sync customers|items|
    # suppliers; sync_ranges.py), each call within M3BNG_M3_MAX_CONCURRENCY. 1: one scan.
    sync_readers: int = Field(default=4, ge=1, le=64)

    # --- BNG REST API (outbound: M3 → BNG) ---------------------------------------------------------
    bng_api_key: SecretStr | None = None
    bng_api_key_header: str = Field(default="X-API-Key", min_length=1, max_length=64)
    bng_oauth_token_url: str | None = None  # set: OAuth2 client credentials instead of an API key
    bng_client_id: str | None = None
    bng_client_secret: SecretStr | None = None
    bng_oauth_scope: str | None = None
    bng_timeout: float = Field(default=30.0, gt=0, le=600)
    bng_connect_timeout: float = Field(default=10.0, gt=0, le=120)
    bng_max_concurrency: int = Field(default=8, ge=1, le=256)
    bng_rate_limit: float = Field(default=10.0, ge=0)  # requests per second; 0 = unlimited
    bng_call_attempts: int = Field(default=3, ge=1, le=10)
    bng_max_inline_wait: float = Field(default=10.0, ge=0, le=300)
    bng_circuit_failures: int = Field(default=5, ge=1, le=1000)
    bng_circuit_reset_seconds: float = Field(default=30.0, gt=0, le=3600)

    # --- ION (inbound BODs, outbound ConfirmBOD) ---------------------------------------------------
    ion_inbound_token: SecretStr | None = None
    ion_inbound_username: str | None = None
    ion_inbound_password: SecretStr | None = None
    ion_max_bod_bytes: int = Field(default=5_242_880, ge=1024)
    ion_logical_id: str = Field(default="lid://infor.m3bng.m3bng", pattern=r"^lid://\S+$")
    ion_messaging_url: str | None = None  # default {iu}/{ti}/IONSERVICES/api/ion/messaging
    ion_confirm_bods: bool = True

    # --- inventory poller (tenants that publish no inventory BOD) ---------------------------------
    inventory_poll_seconds: float | None = Field(default=None, ge=5)  # None: poller off
    inventory_poll_warehouses: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # --- reconciliation (docs/reconciliation.md) ----------------------------------------------------
    reconcile_orders_seconds: float = Field(default=0.0, ge=0)  # 0: no scheduled run
    reconcile_orders_window_hours: float = Field(default=48.0, gt=0)  # BNG orders changed since
    reconcile_orders_fix: bool = False  # take in the orders whose webhook never arrived
    reconcile_grace_minutes: float = Field(default=10.0, ge=0)
    reconcile_sla_minutes: float = Field(default=30.0, gt=0)
    # stock, customers and items are compared in full (no window): interval, and whether to fix
    reconcile_stock_seconds: float = Field(default=0.0, ge=0)
    reconcile_stock_fix: bool = False  # correct drift and missing balances in BNG from M3
    reconcile_stock_tolerance: float = Field(default=0.0, ge=0)  # a difference up to it is matching
    reconcile_customers_seconds: float = Field(default=0.0, ge=0)
    reconcile_customers_fix: bool = False  # write M3's customer to BNG where missing or different
    reconcile_items_seconds: float = Field(default=0.0, ge=0)
    reconcile_items_fix: bool = False

    # --- ops API (/api/v1, /ui) -------------------------------------------------------------------
    # Entries "NAME SCOPE HASH" separated by commas; HASH is sha256:<hex> of the token
    # (`m3bng ops token new` prints one). SCOPE: ops:read, ops:replay or ops:admin.
    ops_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    ops_jwt_jwks_file: Path | None = None  # SSO: JSON Web Key Set of the identity provider
    ops_jwt_jwks_url: str | None = None  # ... or its URL (fetched with a timeout, cached)
    ops_jwt_issuer: str | None = None
    ops_jwt_audience: str | None = None
    ops_jwt_scope_claim: str = Field(default="scope", min_length=1, max_length=64)
    ops_jwt_name_claim: str = Field(default="sub", min_length=1, max_length=64)
    ops_replay_rate: float = Field(default=10.0, ge=0.01, le=10_000)  # bulk replays per second
    ops_page_size_max: int = Field(default=200, ge=10, le=1000)

    # --- alerts ---------------------------------------------------------------------------------
    alert_webhook_url: str | None = None  # None: alerts are only shown in /api/v1/alerts and /ui
    alert_format: Literal["slack", "teams", "generic"] = "slack"
    alert_check_seconds: float = Field(default=30.0, ge=1, le=3600)
    alert_repeat_minutes: float = Field(default=60.0, ge=1)
    alert_backlog_minutes: float = Field(default=15.0, gt=0)
    alert_order_sla_minutes: float = Field(default=30.0, gt=0)
    alert_timeout: float = Field(default=10.0, gt=0, le=120)

    # --- retention (GDPR: docs/operations.md) ---------------------------------------------------
    retention_payload_days: float = Field(default=30.0, gt=0)  # payloads, steps, BNG state
    retention_dead_letter_days: float = Field(default=90.0, gt=0)  # payloads of dead letters
    retention_key_days: float = Field(default=400.0, gt=0)  # event rows: ids, keys, hashes (dedup)
    retention_order_history_days: float = Field(default=180.0, gt=0)  # anomaly rules' history
    retention_run_seconds: float = Field(default=3600.0, ge=0)  # 0: never purge

    # --- tracing ----------------------------------------------------------------------------------
    otel_enabled: bool = False
    otel_endpoint: str | None = None  # OTLP/HTTP traces endpoint, e.g. http://collector:4318/v1/traces
    otel_service_name: str = "m3bng"

    # --- assist (docs/assist.md) -------------------------------------------------------------
    # An OpenAI-compatible endpoint (its base URL, ending in /v1) that re-ranks and explains the
    # mapping suggestions; None: off, the suggestions are the offline scorer's alone.
    assist_llm_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    assist_llm_model: str = Field(default="default", min_length=1, max_length=200)
    assist_llm_api_key: SecretStr | None = None
    assist_llm_timeout: float = Field(default=20.0, gt=0, le=120)

    # --- logging -----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    @field_validator("retry_schedule", mode="before")
    @classmethod
    def _parse_schedule(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("m3_maintenance_windows", mode="before")
    @classmethod
    def _parse_windows(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("m3_maintenance_windows")
    @classmethod
    def _check_windows(cls, value: list[str]) -> list[str]:
        from m3bng.connectors.m3.protection import MaintenanceWindow

        for window in value:
            MaintenanceWindow.parse(window)
        return value

    @field_validator("inventory_poll_warehouses", mode="before")
    @classmethod
    def _parse_warehouses(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("webhook_secrets", mode="before")
    @classmethod
    def _parse_secrets(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("webhook_secrets")
    @classmethod
    def _check_secrets(cls, value: list[SecretStr]) -> list[SecretStr]:
        from m3bng.connectors.bng.signatures import decode_secret

        for secret in value:
            raw = secret.get_secret_value()
            if len(decode_secret(raw)) < 16:
                raise ValueError(
                    "each secret must hold at least 16 bytes (whsec_ + base64, or a long string)"
                )
        return value

    @field_validator("ops_tokens", mode="before")
    @classmethod
    def _parse_ops_tokens(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("ops_tokens")
    @classmethod
    def _check_ops_tokens(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_token_entry(entry)
        return value

    @field_validator("flow_plugins", mode="before")
    @classmethod
    def _parse_plugins(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("retry_schedule")
    @classmethod
    def _check_schedule(cls, value: list[float]) -> list[float]:
        if any(delay <= 0 for delay in value):
            raise ValueError("every delay must be a positive number of seconds")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "must start with sqlite+aiosqlite:// or postgresql+asyncpg:// "
                "(the store is async; plain sqlite:// or postgresql:// drivers are not supported)"
            )
        return value

    @field_validator("ionapi_file")
    @classmethod
    def _check_ionapi(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {str(value)!r} does not exist")
        return value

    @model_validator(mode="after")
    def _check_lease(self) -> Settings:
        if self.worker_poll_interval >= self.lease_seconds:
            raise ValueError("M3BNG_WORKER_POLL_INTERVAL must be shorter than M3BNG_LEASE_SECONDS")
        if self.bng_oauth_token_url and not (self.bng_client_id and self.bng_client_secret):
            raise ValueError(
                "M3BNG_BNG_OAUTH_TOKEN_URL needs M3BNG_BNG_CLIENT_ID and M3BNG_BNG_CLIENT_SECRET"
            )
        if bool(self.ion_inbound_username) != bool(self.ion_inbound_password):
            raise ValueError("M3BNG_ION_INBOUND_USERNAME and M3BNG_ION_INBOUND_PASSWORD go together")
        if self.inventory_poll_seconds and not self.inventory_poll_warehouses:
            raise ValueError("M3BNG_INVENTORY_POLL_SECONDS needs M3BNG_INVENTORY_POLL_WAREHOUSES")
        if self.ops_jwt_jwks_file and self.ops_jwt_jwks_url:
            raise ValueError("set M3BNG_OPS_JWT_JWKS_FILE or M3BNG_OPS_JWT_JWKS_URL, not both")
        if self.retention_key_days < max(self.retention_payload_days, self.retention_dead_letter_days):
            raise ValueError(
                "M3BNG_RETENTION_KEY_DAYS must be at least M3BNG_RETENTION_PAYLOAD_DAYS and "
                "M3BNG_RETENTION_DEAD_LETTER_DAYS (keys outlive payloads, for deduplication)"
            )
        return self

    @property
    def storefront_m3_slots(self) -> int:
        """Calls of M3BNG_M3_MAX_CONCURRENCY kept for storefront reads (0: no lane asked for, or
        a cap of 1, too small to split; the storefront then shares the cap)."""
        cap = self.m3_max_concurrency
        share = self.storefront_m3_share
        if share is None:
            share = DEFAULT_STOREFRONT_SHARE if self.serves_storefront else 0.0
        if cap < 2 or not share:
            return 0
        return min(cap - 1, max(1, round(cap * share)))

    @property
    def serves_storefront(self) -> bool:
        """Whether a storefront token can exist: a static one with the scope, or SSO."""
        jwt = self.ops_jwt_jwks_file is not None or self.ops_jwt_jwks_url is not None
        static = any(parse_token_entry(e).scope == Scope.STOREFRONT_READ for e in self.ops_tokens)
        return jwt or static

    def require_webhook_secrets(self) -> None:
        """BNG's signing secret, required outside sandbox mode by the processes that verify or
        sign webhooks (serve, worker, webhook send), and only by them: an Infor admin running
        ``m3 check`` or ``db upgrade`` first is not asked for BNG's secret."""
        if not self.sandbox and not self.webhook_secrets:
            raise SettingsError(
                "M3BNG_WEBHOOK_SECRETS is required outside sandbox mode (BNG's signing secret, whsec_...)"
            )

    @property
    def sandbox(self) -> bool:
        """Sandbox mode: no real M3 and no real BNG configured, so the simulators stand in."""
        return self.ionapi_file is None and self.bng_base_url is None

    @property
    def mappings_folder(self) -> Path:
        """The mappings to load. Outside sandbox mode nothing is guessed: a relative default
        worked only when a process started in the repository's root, and an installed service
        would have run on whatever ``mappings`` folder its working directory held."""
        if self.mappings_dir is not None:
            return self.mappings_dir
        if not self.sandbox:
            raise SettingsError(
                "M3BNG_MAPPINGS_DIR: not set; outside sandbox mode name the folder that holds your "
                "mappings (`m3bng init DIR` writes a copy of the default ones to edit)"
            )
        local = Path("mappings")
        return local if local.is_dir() else Path(str(files("m3bng") / "mappings"))

    @property
    def should_migrate_on_start(self) -> bool:
        return self.sandbox if self.migrate_on_start is None else self.migrate_on_start

    @property
    def ops_jwt_enabled(self) -> bool:
        return bool(self.ops_jwt_jwks_file or self.ops_jwt_jwks_url)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def limits_shared(self) -> bool:
        return self.shared_limits and not self.is_sqlite

    @property
    def max_attempts(self) -> int:
        return len(self.retry_schedule) + 1


_SECRET_WORDS = ("SECRET", "PASSWORD", "TOKEN", "KEY")


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's error into one that names each ``M3BNG_*`` variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = [str(part) for part in err["loc"] if not isinstance(part, int)]
            name = "M3BNG_" + loc[0].upper() if loc else "settings"
            msg = err["msg"].removeprefix("Value error, ")
            # Whole-model checks get the whole input (passwords in URLs, secrets): never echo it.
            secret = not loc or any(word in name for word in _SECRET_WORDS) or "URL" in name
            shown = "" if secret else f" (got {err.get('input')!r})"
            lines.append(f"invalid setting {name}: {msg}{shown}")
        raise SettingsError("\n".join(lines)) from None
