"""The one OAuth token cache, shared by the ION API gateway (M3, ION) and BNG clients.

Every concurrent call shares one token, and at most one token request is in flight: callers
that find no usable token all wait for the same request (and share its error, when the grant is
refused, instead of each asking again). A burst of 100 calls after expiry costs one token
request, not 100.

**When to renew.** Token lifetime is set by the issuer per app (``expires_in``), from seconds to
hours, so the renewal point is a fraction of it, not a fixed margin: a token is renewed once
``RENEW_FRACTION`` (80 %) of its lifetime has passed, counted from when it was requested. A
fixed margin of 60 s made every token living 60 s or less look expired at once, and one was
fetched for every call. A token is kept for at least ``MIN_REUSE_SECONDS`` whatever the issuer
says (0, or a fraction of a second): a token that really expired is answered 401, and
``BearerAuth`` renews it then, so the floor costs at most one retried request and never a
token request per call.

The request itself (grant type, client authentication, error classes) belongs to each target's
subclass: ``connectors/m3/auth.py`` and ``connectors/bng/auth.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

RENEW_FRACTION = 0.8
MIN_REUSE_SECONDS = 1.0
DEFAULT_LIFETIME_SECONDS = 3600.0  # an issuer that does not say: OAuth's usual hour


@dataclass(frozen=True)
class Grant:
    """A token answer: the access token, how long it lives, and a refresh token if one came."""

    access_token: str
    expires_in: float
    refresh_token: str | None = None

    @classmethod
    def of(cls, answer: Mapping[str, Any]) -> Grant:
        """From the token endpoint's JSON; a missing or zero ``expires_in`` means an hour."""
        return cls(
            access_token=str(answer["access_token"]),
            expires_in=float(answer.get("expires_in") or DEFAULT_LIFETIME_SECONDS),
            refresh_token=answer.get("refresh_token") or None,
        )


def usable_for(expires_in: float) -> float:
    """Seconds a token of this lifetime is used before it is renewed (module docstring)."""
    return max(expires_in * RENEW_FRACTION, MIN_REUSE_SECONDS)


class TokenCache:
    """One shared token, renewed at a fraction of its lifetime, one request at a time.

    Subclasses implement ``_request``. ``get_token`` and ``invalidate`` are the ``TokenSource``
    that ``BearerAuth`` uses (``connectors/bearer.py``), which renews once on a 401.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._token: str | None = None
        self._renew_at = 0.0
        self._inflight: asyncio.Future[str] | None = None
        self.token_requests = 0

    async def _request(self) -> Grant:
        """Ask the issuer for a token; raise the target's own error classes when that fails."""
        raise NotImplementedError

    def _usable(self) -> str | None:
        if self._token is not None and self._clock() < self._renew_at:
            return self._token
        return None

    async def get_token(self) -> str:
        token = self._usable()
        if token is not None:
            return token
        if self._inflight is None or self._inflight.done():  # done: an eager task factory ran it
            self._inflight = asyncio.ensure_future(self._renew())
            self._inflight.add_done_callback(_observe)
        # Shielded: a caller that is cancelled (shutdown, a lost lease) leaves the request to
        # finish for the others waiting on it.
        return await asyncio.shield(self._inflight)

    async def _renew(self) -> str:
        try:
            self.token_requests += 1
            started = self._clock()
            grant = await self._request()
            self._token = grant.access_token
            self._renew_at = started + usable_for(grant.expires_in)
            self._granted(grant)
            return grant.access_token
        finally:
            self._inflight = None

    def _granted(self, grant: Grant) -> None:
        """Keep whatever else the grant carried (a refresh token); nothing by default."""

    async def invalidate(self, token: str) -> None:
        """Forget a token the server refused (401), unless another caller already replaced it."""
        if self._token == token:
            self._token = None

    def take(self) -> str | None:
        """Forget the current token and hand it over (to revoke it on shutdown)."""
        token, self._token = self._token, None
        return token


def _observe(future: asyncio.Future[str]) -> None:
    """Mark a failed request's error as seen: when every caller waiting for it was cancelled,
    nobody else would, and asyncio would log it as never retrieved."""
    if not future.cancelled():
        future.exception()
