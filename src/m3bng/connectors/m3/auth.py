"""OAuth 2.0 for the ION API gateway: one shared token per process.

Infor's backend-service flow is the resource-owner password grant with the service account's
access/secret keys (``saak``/``sask``) as username/password and the client id/secret in the form
(facts.md §2). Token lifetime is set per authorised app; when to renew, and that one request at
a time serves every caller, is ``TokenCache``'s business (``connectors/tokens.py``), shared with
the BNG client. What is the gateway's own is here: the grant, a refresh token tried first, and
revocation on shutdown.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import structlog

from m3bng.connectors.bearer import AsyncOAuth2Client, BearerAuth
from m3bng.connectors.m3.errors import M3TransientError, M3Unavailable
from m3bng.connectors.m3.ionapi import IonApiCredentials
from m3bng.connectors.tokens import Grant, TokenCache

log = structlog.get_logger(__name__)

# A refused grant means wrong or revoked credentials: nothing an event can fix, so work waits
# (TargetUnavailable) and is retried every few minutes instead of being dead-lettered.
AUTH_RETRY_SECONDS = 300.0


class TokenManager(TokenCache):
    """The gateway's token for every M3 (and ION) call of this process."""

    def __init__(
        self,
        credentials: IonApiCredentials,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock=clock)
        self._creds = credentials
        self._timeout = timeout
        self._transport = transport
        self._refresh_token: str | None = None

    def _oauth_client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self._creds.client_id,
            client_secret=self._creds.client_secret.get_secret_value(),
            token_endpoint_auth_method="client_secret_post",  # noqa: S106 (a method name)
            timeout=self._timeout,
            transport=self._transport,
        )

    async def _request(self) -> Grant:
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
        grant = Grant.of(token)
        log.info("m3.token_obtained", expires_in=grant.expires_in)
        return grant

    def _granted(self, grant: Grant) -> None:
        self._refresh_token = grant.refresh_token

    async def revoke(self) -> None:
        """Revoke on shutdown, so a token does not outlive the process that held it."""
        token = self.take()
        if token is None:
            return
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
