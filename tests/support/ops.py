"""Ops API credentials for tests: one token per scope, configured by hash as in production."""

from __future__ import annotations

from m3bng.ops.tokens import Scope, hash_token

TOKENS = {
    Scope.READ: "m3bng_ops_test-read-token-0123456789abcdef",
    Scope.REPLAY: "m3bng_ops_test-replay-token-0123456789abcdef",
    Scope.ADMIN: "m3bng_ops_test-admin-token-0123456789abcdef",
    Scope.STOREFRONT_READ: "m3bng_ops_test-storefront-token-0123456789abcdef",
}
READ, REPLAY, ADMIN = TOKENS[Scope.READ], TOKENS[Scope.REPLAY], TOKENS[Scope.ADMIN]
STOREFRONT = TOKENS[Scope.STOREFRONT_READ]

# M3BNG_OPS_TOKENS entries: "NAME SCOPE sha256:HEX"
OPS_TOKEN_ENTRIES = [
    f"{scope.name.lower()}-user {scope.value} {hash_token(token)}" for scope, token in TOKENS.items()
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
