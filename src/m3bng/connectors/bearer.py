"""OAuth 2.0 pieces shared by the ION API gateway and BNG clients: authlib's client, bearer auth.

The token source hands out one token to every concurrent call and fetches a new one only when
needed; this ``httpx.Auth`` adds it to each request and, when the server still says 401 (the
token expired early or was revoked), drops that token and repeats the request once with a fresh
one. A second 401 is the caller's to classify: the credentials themselves are refused.
"""

from __future__ import annotations

import warnings
from collections.abc import AsyncGenerator
from typing import Protocol

import authlib.deprecate  # noqa: F401  (installs authlib's own warning filter; see below)
import httpx

# authlib 1.9 announces a future move of its httpx integration; it works as documented today,
# and the notice would otherwise be the first line of every log. Our filter goes in front of the
# "always" filter that authlib.deprecate installed when it was imported above.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.httpx_client import AsyncOAuth2Client

__all__ = ["AsyncOAuth2Client", "BearerAuth", "TokenSource"]


class TokenSource(Protocol):
    async def get_token(self) -> str: ...

    async def invalidate(self, token: str) -> None: ...


class BearerAuth(httpx.Auth):
    """Adds the shared bearer token; on a 401 renews it once and repeats the request."""

    def __init__(self, tokens: TokenSource) -> None:
        self.tokens = tokens

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.tokens.get_token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            await self.tokens.invalidate(token)
            token = await self.tokens.get_token()
            request.headers["Authorization"] = f"Bearer {token}"
            yield request
