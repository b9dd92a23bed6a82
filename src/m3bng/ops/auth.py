"""Who is calling the ops API, and what they may do.

Two ways in, both bearer tokens:

* **Ops tokens** configured as ``NAME SCOPE sha256:HEX`` entries (``M3BNG_OPS_TOKENS``). Only the
  hash is configured, so a leaked settings file or environment dump does not leak a token. The
  tokens are random 32-byte values (``m3bng ops token new``), so a plain SHA-256 is the right
  hash: there is nothing to brute-force, and a slow KDF would only slow every request.
* **JWTs** from the company's identity provider (SSO), checked against its JSON Web Key Set with
  authlib: signature, ``exp``/``nbf``, and ``iss``/``aud`` when configured. Scopes come from the
  ``scope`` claim (space-separated, or a list), or whichever claim is configured.

Scopes nest: ``ops:admin`` ⊇ ``ops:replay`` ⊇ ``ops:read``.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import structlog

from m3bng.config import Settings

log = structlog.get_logger(__name__)

TOKEN_PREFIX = "m3bng_ops_"  # noqa: S105 (a prefix, not a secret)
JWKS_CACHE_SECONDS = 600.0


class Scope(enum.StrEnum):
    READ = "ops:read"
    REPLAY = "ops:replay"
    ADMIN = "ops:admin"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Scope.READ: 1, Scope.REPLAY: 2, Scope.ADMIN: 3}


class AuthError(Exception):
    """The request is not authenticated (401) or the setup is wrong (503); ``code`` says which."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Principal:
    """The caller: a configured token's name or the JWT's subject, and its highest scope."""

    name: str
    scope: Scope
    via: str  # token | jwt | sandbox

    def allows(self, needed: Scope) -> bool:
        return self.scope.rank >= needed.rank

    @property
    def sees_personal_data(self) -> bool:
        """Emails, phones and addresses are shown in full only to admins."""
        return self.scope is Scope.ADMIN


@dataclass(frozen=True)
class TokenEntry:
    name: str
    scope: Scope
    digest: bytes


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def parse_scope(value: str) -> Scope:
    text = value.strip().lower()
    if not text.startswith("ops:"):
        text = "ops:" + text
    try:
        return Scope(text)
    except ValueError:
        raise ValueError(f"unknown scope {value!r}: use ops:read, ops:replay or ops:admin") from None


def parse_token_entry(entry: str) -> TokenEntry:
    """``NAME SCOPE sha256:HEX`` → TokenEntry; the error names the part that is wrong (never the
    hash itself, which is still secret-adjacent)."""
    parts = entry.split()
    if len(parts) != 3:
        raise ValueError(
            "each entry must be 'NAME SCOPE sha256:HEX' (three parts separated by spaces; "
            "`m3bng ops token new` prints one)"
        )
    name, scope_text, hashed = parts
    scope = parse_scope(scope_text)
    algorithm, _, hexdigest = hashed.partition(":")
    if algorithm != "sha256" or len(hexdigest) != 64:
        raise ValueError(f"token {name!r}: the hash must be sha256: followed by 64 hex digits")
    try:
        digest = bytes.fromhex(hexdigest)
    except ValueError:
        raise ValueError(f"token {name!r}: the hash is not hexadecimal") from None
    return TokenEntry(name=name, scope=scope, digest=digest)


class Authenticator:
    """Turns an ``Authorization`` header into a Principal, or raises AuthError."""

    def __init__(self, settings: Settings, *, sandbox_token: str | None = None) -> None:
        self.settings = settings
        self.entries = [parse_token_entry(entry) for entry in settings.ops_tokens]
        if sandbox_token is not None:
            self.entries.append(
                TokenEntry("sandbox-admin", Scope.ADMIN, hashlib.sha256(sandbox_token.encode()).digest())
            )
        self._jwks: Any = None
        self._jwks_loaded_at = 0.0
        self._jwks_lock = asyncio.Lock()

    @property
    def configured(self) -> bool:
        return bool(self.entries) or self.settings.ops_jwt_enabled

    async def authenticate(self, authorization: str | None) -> Principal:
        if not self.configured:
            raise AuthError(
                503,
                "ops_auth_not_configured",
                "the ops API has no credentials configured: set M3BNG_OPS_TOKENS "
                "(or M3BNG_OPS_JWT_JWKS_FILE / M3BNG_OPS_JWT_JWKS_URL for SSO)",
            )
        if not authorization:
            raise AuthError(401, "unauthorized", "an ops token is required: Authorization: Bearer <token>")
        kind, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if kind.lower() != "bearer" or not credential:
            raise AuthError(401, "unauthorized", "the Authorization header must be 'Bearer <token>'")
        principal = self._check_token(credential)
        if principal is not None:
            return principal
        if self.settings.ops_jwt_enabled and credential.count(".") == 2:
            return await self._check_jwt(credential)
        raise AuthError(401, "unauthorized", "the token is not valid")

    def _check_token(self, credential: str) -> Principal | None:
        digest = hashlib.sha256(credential.encode()).digest()
        found: TokenEntry | None = None
        for entry in self.entries:  # compare against every entry: no timing hint of which matched
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        if found is None:
            return None
        via = "sandbox" if found.name == "sandbox-admin" else "token"
        return Principal(name=found.name, scope=found.scope, via=via)

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
            raise AuthError(401, "unauthorized", f"the JWT was rejected: {exc}") from None
        scope = _highest_scope(claims.get(self.settings.ops_jwt_scope_claim))
        name = str(claims.get(self.settings.ops_jwt_name_claim) or "jwt")
        if scope is None:
            # Authenticated but entitled to nothing here: a 403 at every endpoint, said plainly.
            raise AuthError(403, "forbidden", f"the JWT of {name!r} carries no ops:* scope")
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
            raise AuthError(
                503, "jwks_unavailable", f"the identity provider's keys could not be read: {exc}"
            ) from None


def _highest_scope(value: Any) -> Scope | None:
    if isinstance(value, str):
        items = value.split()
    elif isinstance(value, list):
        items = [str(item) for item in value]
    else:
        return None
    scopes = [Scope(item) for item in items if item in {s.value for s in Scope}]
    return max(scopes, key=lambda s: s.rank) if scopes else None
