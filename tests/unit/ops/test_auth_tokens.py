"""Ops token entries, hashing and scope nesting (the HTTP side is in tests/integration/ops)."""

from __future__ import annotations

import pytest

from m3bng.api.errors import status_for
from m3bng.config import SettingsError, load_settings
from m3bng.ops.auth import (
    Authenticator,
    AuthError,
    Scope,
    hash_token,
    new_token,
    parse_scope,
    parse_token_entry,
)


def test_entry_round_trip() -> None:
    token = new_token()
    entry = parse_token_entry(f"alice ops:replay {hash_token(token)}")
    assert entry.name == "alice" and entry.scope is Scope.REPLAY
    assert token.startswith("m3bng_ops_") and len(token) > 40


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("alice ops:replay", "three parts"),
        ("alice ops:root sha256:" + "0" * 64, "unknown scope"),
        ("alice ops:read md5:" + "0" * 32, "sha256: followed by 64 hex digits"),
        ("alice ops:read sha256:" + "z" * 64, "not hexadecimal"),
    ],
)
def test_bad_entries_name_the_problem(entry: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_token_entry(entry)


def test_bad_entry_in_settings_names_the_variable_not_the_hash() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(ops_tokens="alice ops:read sha256:" + "ab" * 31)
    assert "M3BNG_OPS_TOKENS" in str(info.value)
    assert "ab" * 31 not in str(info.value)


def test_scopes_nest() -> None:
    assert parse_scope("admin") is Scope.ADMIN
    assert Scope.ADMIN.rank > Scope.REPLAY.rank > Scope.READ.rank


async def test_authenticate_by_hash_only() -> None:
    token = new_token()
    settings = load_settings(ops_tokens=f"bot ops:read {hash_token(token)}")
    auth = Authenticator(settings)
    principal = await auth.authenticate(f"Bearer {token}")
    assert principal.name == "bot" and principal.allows(Scope.READ) and not principal.allows(Scope.REPLAY)
    assert not principal.sees_personal_data
    with pytest.raises(AuthError) as info:
        await auth.authenticate(f"Bearer {hash_token(token)}")  # the hash itself is no credential
    assert status_for(info.value) == 401
