"""SSO: JWTs from an identity provider, checked against its JSON Web Key Set (file), issuer and
audience. One RSA key pair per module keeps it fast; the server is the real app."""

from __future__ import annotations

import base64
import json
import time
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from m3bng.config import Settings
from tests.conftest import LiveServer
from tests.support.ops import bearer

with warnings.catch_warnings():  # authlib.jose is deprecated in favour of joserfc; the app uses it too
    warnings.simplefilter("ignore")
    from authlib.jose import JsonWebKey, JsonWebToken

pytestmark = [
    pytest.mark.parametrize("db_url", ["sqlite"], indirect=True),
    pytest.mark.filterwarnings("ignore:authlib.jose module is deprecated"),
]

ISSUER = "https://login.example.com/tenant"
AUDIENCE = "m3bng-ops"
KID = "test-key-1"


@dataclass(frozen=True)
class Keys:
    signing: Any  # the identity provider's key, whose public half is in the JWKS
    stranger: Any  # another key with the same kid: its signatures must not verify
    jwks: dict[str, Any]


@pytest.fixture(scope="module")
def keys() -> Keys:
    signing = JsonWebKey.generate_key("RSA", 2048, is_private=True, options={"kid": KID})
    stranger = JsonWebKey.generate_key("RSA", 2048, is_private=True, options={"kid": KID})
    public = {**signing.as_dict(is_private=False), "use": "sig", "alg": "RS256"}
    return Keys(signing, stranger, {"keys": [public]})


def sign(key: Any, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice@example.com", "iat": now, "exp": now + 300}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    token: bytes = JsonWebToken(["RS256"]).encode({"alg": "RS256", "kid": KID}, body, key)
    return token.decode()


@pytest.fixture
async def api(
    keys: Keys, tmp_path: Path, make_settings: Callable[..., Settings], live_server: Callable[..., LiveServer]
) -> AsyncIterator[httpx.AsyncClient]:
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(keys.jwks))
    settings = make_settings(
        ops_jwt_jwks_file=jwks_file, ops_jwt_issuer=ISSUER, ops_jwt_audience=AUDIENCE, ops_tokens=[]
    )
    async with live_server(settings) as server, server.client() as client:
        yield client


async def whoami(api: httpx.AsyncClient, token: str) -> httpx.Response:
    return await api.get("/api/v1/whoami", headers=bearer(token))


async def test_valid_jwt_scope_string_or_list(api: httpx.AsyncClient, keys: Keys) -> None:
    response = await whoami(api, sign(keys.signing, scope="openid profile ops:replay"))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "name": "alice@example.com",
        "scope": "ops:replay",
        "via": "jwt",
        "can_replay": True,
        "sees_personal_data": False,
    }
    # Some providers send scopes as a list; the highest ops scope wins.
    response = await whoami(api, sign(keys.signing, scope=["ops:read", "ops:admin", "email"]))
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "ops:admin"
    assert response.json()["sees_personal_data"] is True


async def test_jwt_scope_is_enforced_per_endpoint(api: httpx.AsyncClient, keys: Keys) -> None:
    token = sign(keys.signing, scope="ops:read")
    response = await api.get("/api/v1/audit", headers=bearer(token))
    assert response.status_code == 403, response.text
    assert "ops:admin" in response.json()["error"]["message"]


def _unsigned(**claims: Any) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "exp": now + 300, **claims}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(body)}."


async def test_rejected_jwts_are_401(api: httpx.AsyncClient, keys: Keys) -> None:
    now = int(time.time())
    cases = {
        "expired": sign(keys.signing, scope="ops:admin", iat=now - 7200, exp=now - 3600),
        "wrong issuer": sign(keys.signing, scope="ops:admin", iss="https://evil.example.com"),
        "wrong audience": sign(keys.signing, scope="ops:admin", aud="someone-else"),
        "no expiry": sign(keys.signing, scope="ops:admin", exp=None),
        "signed by another key": sign(keys.stranger, scope="ops:admin"),
        "unsigned (alg none)": _unsigned(scope="ops:admin"),
        "tampered payload": _tamper(sign(keys.signing, scope="ops:read")),
    }
    for case, token in cases.items():
        response = await whoami(api, token)
        assert response.status_code == 401, (case, response.text)
        assert response.headers["www-authenticate"].startswith("Bearer"), case
        assert response.json()["error"]["code"] == "unauthorized", case


def _tamper(token: str) -> str:
    """The same signature over a payload whose scope was raised to admin."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "ops:admin"
    raised = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{raised}.{signature}"


async def test_jwt_without_ops_scope_is_403(api: httpx.AsyncClient, keys: Keys) -> None:
    for scope in ("openid profile", None):
        response = await whoami(api, sign(keys.signing, scope=scope))
        assert response.status_code == 403, (scope, response.text)
        assert "no ops:* scope" in response.json()["error"]["message"]


async def test_jwt_with_storefront_scope_reads_the_storefront_and_nothing_of_ops(
    api: httpx.AsyncClient, keys: Keys
) -> None:
    storefront = sign(keys.signing, sub="bng-storefront", scope="openid storefront:read")
    assert (await whoami(api, storefront)).status_code == 403
    body = {"customer": "BNG-NOBODY", "items": [{"item": "BIKE-100"}]}
    response = await api.post("/api/v1/storefront/prices", json=body, headers=bearer(storefront))
    assert response.status_code == 404, response.text  # let in; the customer is unknown
    # An ops scope beside it makes an operator, not the storefront.
    both = sign(keys.signing, scope=["storefront:read", "ops:read"])
    response = await api.post("/api/v1/storefront/prices", json=body, headers=bearer(both))
    assert response.status_code == 403 and "storefront:read" in response.json()["error"]["message"]
