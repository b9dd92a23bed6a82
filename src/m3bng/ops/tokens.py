"""Ops tokens and scopes as configured: the ``NAME SCOPE sha256:HEX`` entries of
``M3BNG_OPS_TOKENS``.

Apart from ``ops/auth.py`` (which checks a caller against them) so that ``config.py`` can
validate the entries while it loads settings without importing the authenticator, which needs
the settings: the two used to import each other. This module imports nothing of m3bng's.

Only the hash is configured, so a leaked settings file or environment dump does not leak a
token. The tokens are random 32-byte values (``m3bng ops token new``), so a plain SHA-256 is the
right hash: there is nothing to brute-force, and a slow KDF would only slow every request.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "m3bng_ops_"  # noqa: S105 (a prefix, not a secret)


class Scope(enum.StrEnum):
    READ = "ops:read"
    REPLAY = "ops:replay"
    ADMIN = "ops:admin"
    # BNG's storefront reading prices, stock, orders and invoices (api/storefront.py): a family
    # of its own, so a storefront token reaches no ops route and no ops token (even ops:admin)
    # reads customer prices: the two are handed to different systems and people.
    STOREFRONT_READ = "storefront:read"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def family(self) -> str:
        return self.value.partition(":")[0]

    def covers(self, needed: Scope) -> bool:
        """Scopes nest within a family (ops:admin ⊇ ops:replay ⊇ ops:read), never across. A table
        built once: every request asks, and the enum properties cost more than the look-up."""
        return _COVERS[self, needed]


_RANK = {Scope.READ: 1, Scope.REPLAY: 2, Scope.ADMIN: 3, Scope.STOREFRONT_READ: 1}
_COVERS = {(a, b): a.family == b.family and a.rank >= b.rank for a in Scope for b in Scope}


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
    if ":" not in text:
        text = "ops:" + text
    try:
        return Scope(text)
    except ValueError:
        raise ValueError(
            f"unknown scope {value!r}: use ops:read, ops:replay, ops:admin or storefront:read"
        ) from None


def parse_token_entry(entry: str) -> TokenEntry:
    """``NAME SCOPE sha256:HEX`` → TokenEntry; the error names the part that is wrong (never the
    hash itself, which is still secret-adjacent). A ValueError, so that pydantic reports it as
    the setting's validation error."""
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
