"""Who is calling the ops API, and what they may do.

Two ways in, both bearer tokens:

* **Ops tokens** configured as ``NAME SCOPE sha256:HEX`` entries (``M3BNG_OPS_TOKENS``, parsed
  in ``ops/tokens.py``): only their SHA-256 is configured.
* **JWTs** from the company's identity provider (SSO), checked against its JSON Web Key Set with
  authlib: signature, ``exp``/``nbf``, and ``iss``/``aud`` when configured. Scopes come from the
  ``scope`` claim (space-separated, or a list), or whichever claim is configured.

Scopes nest: ``ops:admin`` ⊇ ``ops:replay`` ⊇ ``ops:read``. ``storefront:read`` (BNG's storefront
reads, api/storefront.py) is apart: it reaches no ops route, and no ops scope reaches it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog

from m3bng.config import Settings
from m3bng.errors import Forbidden, Refused, Unauthenticated, Unavailable
from m3bng.ops.tokens import (
    TOKEN_PREFIX,
    Scope,
    TokenEntry,
    hash_token,
    new_token,
    parse_scope,
    parse_token_entry,
)

__all__ = [
    "TOKEN_PREFIX",
    "AuthError",
    "AuthForbidden",
    "AuthRefused",
    "AuthUnavailable",
    "Authenticator",
    "Principal",
    "Scope",
    "TokenEntry",
    "hash_token",
    "new_token",
    "parse_scope",
    "parse_token_entry",
]

log = structlog.get_logger(__name__)

JWKS_CACHE_SECONDS = 600.0


class AuthError(Refused):
    """The caller cannot be let in; the kind says why (the HTTP layer picks the status)."""


class AuthRefused(Unauthenticated, AuthError):
    """No credential, or one that is not valid."""

    code = "unauthorized"


class AuthForbidden(Forbidden, AuthError):
    """A valid identity that carries no ops scope at all."""

    code = "forbidden"


class AuthUnavailable(Unavailable, AuthError):
    """Nobody can be let in as things are set up: no credentials configured, or the identity
    provider's keys cannot be read."""


@dataclass(frozen=True)
class Principal:
    """The caller: a configured token's name or the JWT's subject, and its highest scope."""

    name: str
    scope: Scope
    via: str  # token | jwt | sandbox

    def allows(self, needed: Scope) -> bool:
        return self.scope.covers(needed)

    @property
    def sees_personal_data(self) -> bool:
        """Emails, phones and addresses are shown in full only to admins."""
        return self.scope is Scope.ADMIN


class Authenticator:
    """Turns an ``Authorization`` header into a Principal, or raises AuthError."""

    def __init__(self, settings: Settings, *, sandbox_token: str | None = None) -> None:
        self.settings = settings
        self.entries = [parse_token_entry(entry) for entry in settings.ops_tokens]
        if sandbox_token is not None:
            self.entries.append(
                TokenEntry("sandbox-admin", Scope.ADMIN, hashlib.sha256(sandbox_token.encode()).digest())
            )
        # Each token's Principal, built once: a storefront read checks its token on every request.
        self._principals = [
            Principal(entry.name, entry.scope, "sandbox" if entry.name == "sandbox-admin" else "token")
            for entry in self.entries
        ]
        self._jwks: Any = None
        self._jwks_loaded_at = 0.0
        self._jwks_lock = asyncio.Lock()

    @property
    def configured(self) -> bool:
        return bool(self.entries) or self.settings.ops_jwt_enabled

    async def authenticate(self, authorization: str | None) -> Principal:
        if not self.configured:
            raise AuthUnavailable(
                "the ops API has no credentials configured: set M3BNG_OPS_TOKENS "
                "(or M3BNG_OPS_JWT_JWKS_FILE / M3BNG_OPS_JWT_JWKS_URL for SSO)",
                code="ops_auth_not_configured",
            )
        if not authorization:
            raise AuthRefused("an ops token is required: Authorization: Bearer <token>")
        kind, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if kind.lower() != "bearer" or not credential:
            raise AuthRefused("the Authorization header must be 'Bearer <token>'")
        principal = self._check_token(credential)
        if principal is not None:
            return principal
        if self.settings.ops_jwt_enabled and credential.count(".") == 2:
            return await self._check_jwt(credential)
        raise AuthRefused("the token is not valid")

    def _check_token(self, credential: str) -> Principal | None:
        digest = hashlib.sha256(credential.encode()).digest()
        found: Principal | None = None
        # Compare against every entry: no timing hint of which matched.
        for entry, principal in zip(self.entries, self._principals, strict=True):
            if hmac.compare_digest(entry.digest, digest):
                found = principal
        return found

    async def _check_jwt(self, credential: str) -> Principal:
        from authlib.jose import JsonWebToken
        from authlib.jose.errors import JoseError

        keys = await self._keyset()
        options: dict[str, Any] = {"exp": {"essential": True}}
        if self.settings.ops_jwt_issuer:
            options["iss"] = {"essential": True, "value": self.settings.ops_jwt_issuer}
        if self.settings.ops_jwt_audience:
            options["aud"] = {"essential": True, "value": self.settings.ops_jwt_audience}
        jwt = JsonWebToken(["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"])
        try:
            claims = jwt.decode(credential, keys, claims_options=options)
            claims.validate(leeway=30)
        except (JoseError, ValueError) as exc:
            raise AuthRefused(f"the JWT was rejected: {exc}") from None
        scope = _highest_scope(claims.get(self.settings.ops_jwt_scope_claim))
        name = str(claims.get(self.settings.ops_jwt_name_claim) or "jwt")
        if scope is None:
            # Authenticated but entitled to nothing here: a 403 at every endpoint, said plainly.
            raise AuthForbidden(f"the JWT of {name!r} carries no ops:* scope (nor storefront:read)")
        return Principal(name=name[:128], scope=scope, via="jwt")

    async def _keyset(self) -> Any:
        from authlib.jose import JsonWebKey

        async with self._jwks_lock:
            fresh = time.monotonic() - self._jwks_loaded_at < JWKS_CACHE_SECONDS
            if self._jwks is not None and (fresh or self.settings.ops_jwt_jwks_file):
                return self._jwks
            if self.settings.ops_jwt_jwks_file is not None:
                raw = json.loads(await asyncio.to_thread(Path(self.settings.ops_jwt_jwks_file).read_text))
            else:
                raw = await self._fetch_jwks()
                if raw is None:  # the provider is unreachable: keep using the keys we have
                    self._jwks_loaded_at = time.monotonic()
                    return self._jwks
            self._jwks = JsonWebKey.import_key_set(raw)
            self._jwks_loaded_at = time.monotonic()
            return self._jwks

    async def _fetch_jwks(self) -> Any:
        url = self.settings.ops_jwt_jwks_url
        assert url is not None
        try:
            async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=5.0)) as client:
                response = await client.get(url)
                response.raise_for_status()
                return response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.error("ops.jwks_fetch_failed", url=url, error=repr(exc)[:300])
            if self._jwks is not None:
                return None
            raise AuthUnavailable(
                f"the identity provider's keys could not be read: {exc}", code="jwks_unavailable"
            ) from None


def _highest_scope(value: Any) -> Scope | None:
    if isinstance(value, str):
        items = value.split()
    elif isinstance(value, list):
        items = [str(item) for item in value]
    else:
        return None
    scopes = [Scope(item) for item in items if item in {s.value for s in Scope}]
    # One principal, one scope: an ops scope wins over storefront:read (a person's SSO token
    # with both is an operator; BNG's storefront gets a token of its own).
    ops = [s for s in scopes if s.family == "ops"]
    return max(ops or scopes, key=lambda s: s.rank) if scopes else None
