"""OAuth 2.0 for the ION API gateway: one shared token per process.

Infor's backend-service flow is the resource-owner password grant with the service account's
access/secret keys (``saak``/``sask``) as username/password and the client id/secret in the form
(facts.md §2). Token lifetime is set per authorised app, so it is read from ``expires_in`` and
renewed a little early. All concurrent calls share one token and at most one token request is in
flight at a time: a burst of 100 calls after expiry costs one token request, not 100.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import structlog

from m3bng.connectors.bearer import AsyncOAuth2Client, BearerAuth
from m3bng.connectors.m3.errors import M3TransientError, M3Unavailable
from m3bng.connectors.m3.ionapi import IonApiCredentials

log = structlog.get_logger(__name__)

# A refused grant means wrong or revoked credentials: nothing an event can fix, so work waits
# (TargetUnavailable) and is retried every few minutes instead of being dead-lettered.
AUTH_RETRY_SECONDS = 300.0


class TokenManager:
    def __init__(
        self,
        credentials: IonApiCredentials,
        *,
        timeout: float = 30.0,
        refresh_margin: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._creds = credentials
        self._timeout = timeout
        self._margin = refresh_margin
        self._transport = transport
        self._lock = asyncio.Lock()
        self._access_token: str | None = None
        self._refresh_token: str | None = None
        self._expires_at = 0.0
        self.token_requests = 0

    def _valid(self) -> bool:
        return self._access_token is not None and time.monotonic() < self._expires_at - self._margin

    async def get_token(self) -> str:
        if self._valid():
            assert self._access_token is not None
            return self._access_token
        async with self._lock:
            if not self._valid():  # another caller may have renewed it while we waited
                await self._fetch()
            assert self._access_token is not None
            return self._access_token

    async def invalidate(self, token: str) -> None:
        """Forget a token the gateway refused (401), unless another caller already replaced it."""
        async with self._lock:
            if self._access_token == token:
                self._access_token = None

    def _oauth_client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self._creds.client_id,
            client_secret=self._creds.client_secret.get_secret_value(),
            token_endpoint_auth_method="client_secret_post",  # noqa: S106 (a method name)
            timeout=self._timeout,
            transport=self._transport,
        )

    async def _fetch(self) -> None:
        self.token_requests += 1
        started = time.monotonic()
        try:
            async with self._oauth_client() as oauth:
                token = None
                if self._refresh_token:
                    try:
                        token = await oauth.fetch_token(
                            self._creds.token_url,
                            grant_type="refresh_token",
                            refresh_token=self._refresh_token,
                        )
                    except Exception:
                        log.info("m3.token_refresh_refused", fallback="password grant")
                        token = None
                if token is None:
                    token = await oauth.fetch_token(
                        self._creds.token_url,
                        grant_type="password",
                        username=self._creds.service_account_key.get_secret_value(),
                        password=self._creds.service_account_secret.get_secret_value(),
                    )
        except httpx.TransportError as exc:
            raise M3TransientError(f"token request to the ION API failed: {type(exc).__name__}") from None
        except Exception as exc:  # authlib's OAuthError and friends: the grant was refused
            detail = getattr(exc, "error", None) or type(exc).__name__
            log.error("m3.token_refused", error=str(detail))
            raise M3Unavailable(
                f"ION API refused the token request ({detail}); check the .ionapi file and service account",
                retry_after=AUTH_RETRY_SECONDS,
            ) from None
        self._access_token = str(token["access_token"])
        self._refresh_token = token.get("refresh_token") or None
        expires_in = float(token.get("expires_in") or 3600)
        self._expires_at = started + expires_in
        log.info("m3.token_obtained", expires_in=expires_in)

    async def revoke(self) -> None:
        """Revoke on shutdown, so a token does not outlive the process that held it."""
        token = self._access_token
        if token is None:
            return
        self._access_token = None
        auth = (self._creds.client_id, self._creds.client_secret.get_secret_value())
        try:
            async with httpx.AsyncClient(timeout=self._timeout, transport=self._transport) as client:
                await client.post(
                    self._creds.revoke_url,
                    data={"token": token, "token_type_hint": "access_token"},
                    auth=auth,
                )
        except httpx.HTTPError as exc:
            log.warning("m3.token_revoke_failed", error=type(exc).__name__)


# The gateway's bearer token, renewed once on a 401 (shared with the BNG client).
IonApiAuth = BearerAuth
