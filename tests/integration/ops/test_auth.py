"""Ops API authentication: hashed tokens, scopes, JWTs from an identity provider."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from m3bng.config import Settings
from tests.conftest import LiveServer
from tests.integration.ops.conftest import Ops
from tests.support.ops import bearer


async def test_whoami_per_scope(ops: Ops) -> None:
    for client, scope in ((ops.read, "ops:read"), (ops.replay, "ops:replay"), (ops.admin, "ops:admin")):
        response = await client.get("/api/v1/whoami")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["scope"] == scope
        assert body["can_replay"] == (scope != "ops:read")
        assert body["sees_personal_data"] == (scope == "ops:admin")


async def test_no_token_401_and_bad_token_401(ops: Ops) -> None:
    response = await ops.client.get("/api/v1/whoami")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "Bearer" in response.json()["error"]["message"]
    response = await ops.client.get("/api/v1/whoami", headers=bearer("m3bng_ops_not-a-real-token"))
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "the token is not valid"
    response = await ops.client.get("/api/v1/whoami", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert response.status_code == 401


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_no_credentials_configured_outside_sandbox_is_503(
    make_settings: Callable[..., Settings], live_server: Callable[..., LiveServer]
) -> None:
    settings = make_settings(bng_base_url="http://127.0.0.1:9", bng_api_key="k")  # not sandbox, no tokens
    async with live_server(settings) as server, server.client() as client:
        response = await client.get("/api/v1/whoami", headers=bearer("anything"))
    assert response.status_code == 503
    assert "M3BNG_OPS_TOKENS" in response.json()["error"]["message"]
