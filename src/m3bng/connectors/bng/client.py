"""The BNG REST client: the one way m3bng calls BNG (contract: docs/bng-api.md).

``request()`` sends one call to ``{bng_base_url}/api/v1{path}`` and returns a ``BngResponse`` or
raises a classified error (errors.py). Around every call: the concurrency cap, the circuit
breaker (the same one as toward M3), the process-wide rate limit (ratelimit.py, in the transport
so that it counts every request on the wire), short in-call retries (tenacity) for transient
failures, and one structured log line with method, path, status and duration — never a body, a
key or a token.

Every write carries an ``Idempotency-Key`` (a write without one is a programming error). That is
what makes a lost answer harmless: the retry, inline here or later by the worker, repeats the
key, and BNG answers with the stored response instead of applying the write twice. So unlike
toward M3, writes are retried inline after an unknown outcome too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import structlog
from pydantic import SecretStr

from m3bng.config import Settings
from m3bng.connectors.bearer import BearerAuth
from m3bng.connectors.bng.auth import ApiKeyAuth, ClientCredentialsTokens
from m3bng.connectors.bng.errors import (
    BngAuthError,
    BngConflict,
    BngDataError,
    BngError,
    BngNotFound,
    BngThrottled,
    BngTransientError,
    BngUnavailable,
    BngUnknownOutcome,
)
from m3bng.connectors.limits import Gate
from m3bng.connectors.protection import CircuitBreaker, CircuitState, inline_retrying
from m3bng.connectors.ratelimit import RateLimitedTransport, RateLimiter, RateLimitPaused
from m3bng.connectors.wire import AiohttpTransport
from m3bng.observability import metrics

log = structlog.get_logger(__name__)

API_PREFIX = "/api/v1"
WRITE_METHODS = frozenset({"PUT", "PATCH", "POST", "DELETE"})
DEFAULT_THROTTLE_SECONDS = 1.0  # a 429 without Retry-After


@dataclass(frozen=True)
class BngResponse:
    status: int
    body: Any
    replayed: bool = False  # BNG answered from its idempotency store: nothing was applied again


@dataclass(frozen=True)
class BngClientConfig:
    base_url: str
    api_key: SecretStr | None = None
    api_key_header: str = "X-API-Key"
    oauth_token_url: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    oauth_scope: str | None = None
    timeout: float = 30.0
    connect_timeout: float = 10.0
    max_concurrency: int = 8
    rate_limit: float = 10.0
    call_attempts: int = 3
    max_inline_wait: float = 10.0
    circuit_failures: int = 5
    circuit_reset_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> BngClientConfig:
        if not settings.bng_base_url:
            raise ValueError("M3BNG_BNG_BASE_URL is not set")
        if not settings.bng_oauth_token_url and settings.bng_api_key is None:
            raise ValueError(
                "set M3BNG_BNG_API_KEY, or M3BNG_BNG_OAUTH_TOKEN_URL with a client id and secret"
            )
        return cls(
            base_url=root_url(settings.bng_base_url),
            api_key=settings.bng_api_key,
            api_key_header=settings.bng_api_key_header,
            oauth_token_url=settings.bng_oauth_token_url,
            client_id=settings.bng_client_id,
            client_secret=settings.bng_client_secret,
            oauth_scope=settings.bng_oauth_scope,
            timeout=settings.bng_timeout,
            connect_timeout=settings.bng_connect_timeout,
            max_concurrency=settings.bng_max_concurrency,
            rate_limit=settings.bng_rate_limit,
            call_attempts=settings.bng_call_attempts,
            max_inline_wait=settings.bng_max_inline_wait,
            circuit_failures=settings.bng_circuit_failures,
            circuit_reset_seconds=settings.bng_circuit_reset_seconds,
        )

    def token_url(self) -> str | None:
        """The token endpoint; a relative one (``/oauth/token``) is taken below the base URL."""
        url = self.oauth_token_url
        if not url or url.startswith(("http://", "https://")):
            return url
        return f"{self.base_url}/{url.lstrip('/')}"


def root_url(base_url: str) -> str:
    """``https://bng.example/api/v1/`` and ``https://bng.example`` both mean the server root."""
    url = base_url.rstrip("/")
    return url.removesuffix(API_PREFIX)


class BngClient:
    def __init__(
        self,
        config: BngClientConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: RateLimiter | None = None,
        name: str = "bng",
    ) -> None:
        """``limiter``: pass one to share a rate limit between clients of the same BNG.
        ``name``: the circuit breaker's, in metrics and alerts (``bng:us`` for an instance)."""
        self.name = name
        self.config = config
        self.limiter = limiter or RateLimiter(config.rate_limit, max_wait=config.max_inline_wait)
        self.tokens: ClientCredentialsTokens | None = None
        auth: httpx.Auth
        token_url = config.token_url()
        if token_url:
            if not config.client_id or config.client_secret is None:
                raise ValueError("OAuth2 for BNG needs M3BNG_BNG_CLIENT_ID and M3BNG_BNG_CLIENT_SECRET")
            self.tokens = ClientCredentialsTokens(
                token_url,
                config.client_id,
                config.client_secret,
                scope=config.oauth_scope,
                timeout=config.timeout,
                transport=transport,
            )
            auth = BearerAuth(self.tokens)
        elif config.api_key is not None:
            auth = ApiKeyAuth(config.api_key_header, config.api_key)
        else:
            raise ValueError("BNG needs an API key or OAuth2 client credentials")
        inner = transport or AiohttpTransport(limits=httpx.Limits(max_connections=config.max_concurrency * 2))
        self._http = httpx.AsyncClient(
            base_url=config.base_url,
            auth=auth,
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            transport=RateLimitedTransport(inner, self.limiter),
            headers={"Accept": "application/json"},
        )
        # Calls in flight; resized when the cap is shared between worker processes (shares.py).
        self.gate = Gate(config.max_concurrency)
        self.breaker = CircuitBreaker(
            name,
            failure_threshold=config.circuit_failures,
            reset_seconds=config.circuit_reset_seconds,
            on_change=metrics.set_circuit_state,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None, name: str = "bng"
    ) -> BngClient:
        return cls(BngClientConfig.from_settings(settings), transport=transport, name=name)

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- public calls -----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        idempotency_key: str | None = None,
        params: dict[str, str] | None = None,
    ) -> BngResponse:
        """One call; ``path`` is below ``/api/v1`` (``/orders/SO-1``; a full ``/api/v1/…`` works too)."""
        method = method.upper()
        if method in WRITE_METHODS and not idempotency_key:
            raise ValueError(f"{method} {path}: every write to BNG needs an idempotency_key")
        url = path if path.startswith("/api/") else API_PREFIX + "/" + path.lstrip("/")
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return await self._call(method, url, json=json, params=params, headers=headers)

    async def get(self, path: str, *, params: dict[str, str] | None = None) -> Any | None:
        """The resource's body, or None when BNG does not have it (404)."""
        try:
            return (await self.request("GET", path, params=params)).body
        except BngNotFound:
            return None

    async def put(self, path: str, body: Any, *, idempotency_key: str) -> BngResponse:
        return await self.request("PUT", path, json=body, idempotency_key=idempotency_key)

    async def patch(self, path: str, body: Any, *, idempotency_key: str) -> BngResponse:
        return await self.request("PATCH", path, json=body, idempotency_key=idempotency_key)

    async def post(self, path: str, body: Any, *, idempotency_key: str) -> BngResponse:
        return await self.request("POST", path, json=body, idempotency_key=idempotency_key)

    async def changed_since(
        self, collection: str, since: datetime, *, page_size: int = 100
    ) -> list[dict[str, Any]]:
        """Every resource of ``collection`` changed at or after ``since``, page by page to the
        end (``GET /api/v1/{collection}?updated_since=…``, docs/bng-api.md): what reconciliation
        compares with m3bng's store and M3, whether or not its webhooks ever arrived."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            page, cursor = await self.changed_page(collection, since, cursor=cursor, page_size=page_size)
            items += page
            if cursor is None:
                return items

    async def changed_page(
        self, collection: str, since: datetime, *, cursor: str | None = None, page_size: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of ``changed_since`` and the cursor of the next (None after the last): for a
        reader that stores where it is between pages (the initial load from BNG)."""
        params = {"updated_since": since.astimezone(UTC).isoformat(), "limit": str(page_size)}
        if cursor:
            params["cursor"] = cursor
        body = (await self.request("GET", f"/{collection}", params=params)).body
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise BngDataError(f"GET /{collection}: the answer has no `items` list")
        items = [item for item in body["items"] if isinstance(item, dict)]
        return items, str(body.get("next_cursor") or "") or None

    # -- the guarded call -------------------------------------------------------------------------

    async def _call(
        self, method: str, url: str, *, json: Any, params: dict[str, str] | None, headers: dict[str, str]
    ) -> BngResponse:
        # An unknown outcome is retried like any transient error: the idempotency key makes the
        # repeat safe (BNG replays its stored answer instead of applying again).
        retrying = inline_retrying(
            lambda exc: isinstance(exc, BngTransientError),
            attempts=self.config.call_attempts,
            max_wait=self.config.max_inline_wait,
        )
        async for attempt in retrying:
            with attempt:
                return await self._guarded(
                    method, url, json, params, headers, attempt.retry_state.attempt_number
                )
        raise AssertionError("unreachable")  # pragma: no cover

    async def _guarded(
        self,
        method: str,
        url: str,
        json: Any,
        params: dict[str, str] | None,
        headers: dict[str, str],
        attempt: int,
    ) -> BngResponse:
        where: dict[str, Any] = {"method": method, "path": url}
        async with self.gate:
            blocked = self.breaker.before_call()
            if blocked is not None:
                raise BngUnavailable("circuit open after repeated BNG failures", retry_after=blocked, **where)
            started = time.perf_counter()
            outcome, status = "ok", None
            try:
                response = await self._send(method, url, json, params, headers)
                status = response.status_code
                result = self._classify(method, url, response)
            except BngError as exc:
                outcome = str(getattr(exc, "error_class", "error"))
                raise self._judge(exc, where) from None
            else:
                self.breaker.record_success()
                return result
            finally:
                log.info(
                    "bng.call",
                    method=method,
                    path=url,
                    status=status,
                    outcome=outcome,
                    attempt=attempt,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                )

    def _judge(self, exc: BngError, where: dict[str, Any]) -> BngError:
        """Tell the breaker what a failure says about BNG's health; the error to raise."""
        says_bng_is_down = isinstance(exc, BngTransientError | BngUnavailable) and not isinstance(
            exc, BngThrottled | BngAuthError
        )
        if not says_bng_is_down:
            self.breaker.record_neutral()
            return exc
        self.breaker.record_failure()
        if self.breaker.state is CircuitState.OPEN and not isinstance(exc, BngUnavailable):
            # This failure opened the circuit (or a probe failed): BNG is down, not this event's
            # data. The event waits without using an attempt, so an outage never dead-letters.
            return BngUnavailable(
                f"BNG is not answering ({exc.bng_message}); circuit open",
                retry_after=self.breaker.reset_seconds,
                **where,
            )
        return exc

    async def _send(
        self, method: str, url: str, json: Any, params: dict[str, str] | None, headers: dict[str, str]
    ) -> httpx.Response:
        where: dict[str, Any] = {"method": method, "path": url}
        try:
            return await self._http.request(method, url, json=json, params=params, headers=headers)
        except RateLimitPaused as exc:
            raise BngThrottled(
                "BNG asked us to slow down (Retry-After)", retry_after=exc.seconds, status=429, **where
            ) from None
        except httpx.ConnectError as exc:
            raise BngUnavailable(
                f"could not connect to BNG ({type(exc).__name__})",
                retry_after=self.config.circuit_reset_seconds,
                **where,
            ) from None
        except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise BngTransientError(f"could not reach BNG ({type(exc).__name__})", **where) from None
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError) as exc:
            if method in WRITE_METHODS:
                raise BngUnknownOutcome(
                    f"sent, but no answer from BNG ({type(exc).__name__}); safe to resend with the same key",
                    **where,
                ) from None
            raise BngTransientError(f"no answer from BNG ({type(exc).__name__})", **where) from None
        except httpx.TransportError as exc:
            raise BngTransientError(
                f"transport error talking to BNG ({type(exc).__name__})", **where
            ) from None

    def _classify(self, method: str, url: str, response: httpx.Response) -> BngResponse:
        """The one place where BNG's answers become a result or an error class."""
        status = response.status_code
        body = _json(response)
        if 200 <= status < 300:
            replayed = response.headers.get("idempotent-replayed", "").lower() == "true"
            return BngResponse(status, body, replayed)
        error = body if isinstance(body, dict) else {}
        code = str(error["error"]) if error.get("error") else None
        message = str(error.get("message") or error.get("error_description") or response.reason_phrase)
        field = str(error["field"]) if error.get("field") else None
        where: dict[str, Any] = {"method": method, "path": url, "status": status}
        if status in (401, 403):
            raise BngAuthError(f"BNG refused our credentials: {message}", **where)
        if status == 429:
            retry_after = retry_after_seconds(response) or DEFAULT_THROTTLE_SECONDS
            self.limiter.pause(retry_after)
            raise BngThrottled(message, retry_after=retry_after, code=code, **where)
        if status == 404:
            raise BngNotFound(message, code=code, field=field, **where)
        if status == 409:
            raise BngConflict(message, code=code, field=field, **where)
        if status in (408, 502, 504) and method in WRITE_METHODS:
            raise BngUnknownOutcome(
                f"{message}; the write may have been applied (safe to resend with the same key)",
                code=code,
                **where,
            )
        if status >= 500 or status == 408:
            raise BngTransientError(message, retry_after=retry_after_seconds(response), code=code, **where)
        raise BngDataError(message, code=code, field=field, **where)


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text[:500]


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds: a number (BNG sends decimals) or an HTTP date."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)
