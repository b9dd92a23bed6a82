"""How m3bng proves itself to BNG: an API key header, or an OAuth2 client-credentials token.

The token is fetched with authlib's httpx client (client authentication by HTTP Basic, as RFC
6749 prefers), shared by every concurrent call (one token request at a time, however many calls
wait for it), renewed shortly before ``expires_in`` runs out, and renewed once more when BNG
answers 401 anyway (``BearerAuth``). Neither the key, the client secret nor a token is logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator

import httpx
import structlog
from pydantic import SecretStr

from m3bng.connectors.bearer import AsyncOAuth2Client
from m3bng.connectors.bng.errors import BngAuthError, BngTransientError

log = structlog.get_logger(__name__)


class ApiKeyAuth(httpx.Auth):
    def __init__(self, header: str, key: SecretStr) -> None:
        self.header = header
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self.header] = self._key.get_secret_value()
        yield request


class _Borrowed(httpx.AsyncBaseTransport):
    """The API client's transport lent to the token client, which must not close it when done."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        return None


class ClientCredentialsTokens:
    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        scope: str | None = None,
        timeout: float = 30.0,
        refresh_margin: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._timeout = timeout
        self._margin = refresh_margin
        self._transport = transport
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.token_requests = 0

    def _valid(self) -> bool:
        return self._token is not None and time.monotonic() < self._expires_at

    async def get_token(self) -> str:
        if not self._valid():
            async with self._lock:
                if not self._valid():  # another caller may have renewed it while we waited
                    await self._fetch()
        assert self._token is not None
        return self._token

    async def invalidate(self, token: str) -> None:
        """Forget a token BNG refused, unless another caller already replaced it."""
        async with self._lock:
            if self._token == token:
                self._token = None

    async def _fetch(self) -> None:
        self.token_requests += 1
        started = time.monotonic()
        try:
            async with AsyncOAuth2Client(
                client_id=self._client_id,
                client_secret=self._client_secret.get_secret_value(),
                scope=self._scope,
                token_endpoint_auth_method="client_secret_basic",  # noqa: S106 (a method name)
                timeout=self._timeout,
                transport=_Borrowed(self._transport) if self._transport is not None else None,
            ) as oauth:
                token = await oauth.fetch_token(self.token_url, grant_type="client_credentials")
        except httpx.TransportError as exc:
            raise BngTransientError(
                f"token request to {self.token_url} failed ({type(exc).__name__})"
            ) from None
        except Exception as exc:  # authlib's OAuthError and friends: the grant was refused
            detail = getattr(exc, "error", None) or type(exc).__name__
            log.error("bng.token_refused", error=str(detail))
            raise BngAuthError(
                f"BNG refused the token request ({detail}); check M3BNG_BNG_CLIENT_ID and "
                "M3BNG_BNG_CLIENT_SECRET"
            ) from None
        expires_in = float(token.get("expires_in") or 3600)
        self._token = str(token["access_token"])
        # Renew early, but never so early that a short-lived token is renewed on every call.
        self._expires_at = started + expires_in - min(self._margin, expires_in / 4)
        log.info("bng.token_obtained", expires_in=expires_in)
