"""How m3bng proves itself to BNG: an API key header, or an OAuth2 client-credentials token.

The token is fetched with authlib's httpx client (client authentication by HTTP Basic, as RFC
6749 prefers) and cached by ``TokenCache`` (``connectors/tokens.py``, shared with the M3 client):
one token request at a time for every concurrent call, renewed at 80 % of ``expires_in``, and
renewed once more when BNG answers 401 anyway (``BearerAuth``). Neither the key, the client
secret nor a token is logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator

import httpx
import structlog
from pydantic import SecretStr

from m3bng.connectors.bearer import AsyncOAuth2Client
from m3bng.connectors.bng.errors import BngAuthError, BngTransientError
from m3bng.connectors.tokens import Grant, TokenCache

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


class ClientCredentialsTokens(TokenCache):
    """BNG's OAuth2 client-credentials token for every call of this process."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        *,
        scope: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock=clock)
        self.token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._scope = scope
        self._timeout = timeout
        self._transport = transport

    async def _request(self) -> Grant:
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
        grant = Grant.of(token)
        log.info("bng.token_obtained", expires_in=grant.expires_in)
        return grant
