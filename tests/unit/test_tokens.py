"""The one token cache of the M3 (ION API gateway) and BNG clients (connectors/tokens.py).

A token is renewed at 80 % of its lifetime, with a one-second floor, one request at a time. The
old M3 cache renewed 60 s before expiry, so a token living 60 s or less was fetched per call:
the short-lived cases below are the ones that pin that down, through both real subclasses too.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx
from pydantic import SecretStr

from m3bng.connectors.bearer import BearerAuth
from m3bng.connectors.bng.auth import ClientCredentialsTokens
from m3bng.connectors.bng.errors import BngAuthError
from m3bng.connectors.m3.auth import TokenManager
from m3bng.connectors.m3.errors import M3Unavailable
from m3bng.connectors.m3.ionapi import IonApiCredentials
from m3bng.connectors.tokens import MIN_REUSE_SECONDS, Grant, TokenCache, usable_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Issuer(TokenCache):
    """A cache whose issuer hands out ``tok-1``, ``tok-2`` … living ``lifetime`` seconds."""

    def __init__(self, lifetime: float, clock: Clock, *, delay: float = 0.0) -> None:
        super().__init__(clock=clock)
        self.lifetime, self.delay, self.fail = lifetime, delay, False

    async def _request(self) -> Grant:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("the issuer refused")
        return Grant(f"tok-{self.token_requests}", self.lifetime)


async def test_usable_for_is_80_percent_of_the_lifetime_with_a_floor() -> None:
    assert usable_for(3600) == 2880
    assert usable_for(60) == 48
    assert usable_for(5) == 4
    assert usable_for(0.5) == MIN_REUSE_SECONDS == usable_for(0)


@pytest.mark.parametrize("lifetime", [5.0, 30.0, 60.0])
async def test_a_short_lived_token_is_not_fetched_per_call(lifetime: float) -> None:
    clock = Clock()
    cache = Issuer(lifetime, clock)
    for _ in range(50):
        assert await cache.get_token() == "tok-1"
        clock.now += lifetime * 0.79 / 50  # 50 calls spread over 79 % of the lifetime
    assert cache.token_requests == 1
    clock.now = 1000.0 + lifetime * 0.8  # renewed at 80 %, before the issuer's expiry
    assert await cache.get_token() == "tok-2"
    assert cache.token_requests == 2


async def test_a_token_the_issuer_says_lives_no_time_is_still_kept_a_second() -> None:
    clock = Clock()
    cache = Issuer(0.01, clock)
    assert [await cache.get_token() for _ in range(20)] == ["tok-1"] * 20
    clock.now += MIN_REUSE_SECONDS
    assert await cache.get_token() == "tok-2"


def test_a_missing_or_zero_lifetime_means_an_hour() -> None:
    assert Grant.of({"access_token": "t"}).expires_in == 3600
    assert Grant.of({"access_token": "t", "expires_in": 0}).expires_in == 3600
    assert Grant.of({"access_token": "t", "expires_in": "45", "refresh_token": "r"}) == Grant("t", 45.0, "r")


async def test_one_request_at_a_time_for_every_caller() -> None:
    cache = Issuer(3600, Clock(), delay=0.05)
    assert set(await asyncio.gather(*(cache.get_token() for _ in range(100)))) == {"tok-1"}
    assert cache.token_requests == 1


async def test_a_refused_request_is_shared_by_its_waiters_not_repeated_per_waiter() -> None:
    cache = Issuer(3600, Clock(), delay=0.05)
    cache.fail = True
    results = await asyncio.gather(*(cache.get_token() for _ in range(30)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results) and cache.token_requests == 1
    cache.fail = False  # the next caller asks again
    assert await cache.get_token() == "tok-2"


async def test_a_cancelled_caller_leaves_the_request_to_the_others() -> None:
    cache = Issuer(3600, Clock(), delay=0.05)
    first = asyncio.create_task(cache.get_token())
    second = asyncio.create_task(cache.get_token())
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == "tok-1"
    assert first.cancelled() and cache.token_requests == 1


async def test_invalidate_forgets_only_the_refused_token() -> None:
    cache = Issuer(3600, Clock())
    old = await cache.get_token()
    await cache.invalidate(old)
    new = await cache.get_token()
    assert (old, new) == ("tok-1", "tok-2")
    await cache.invalidate(old)  # a late 401 for the old token: the new one stays
    assert await cache.get_token() == "tok-2" and cache.token_requests == 2
    assert cache.take() == "tok-2" and await cache.get_token() == "tok-3"


async def test_a_401_renews_once_through_bearer_auth() -> None:
    cache = Issuer(3600, Clock())

    def api(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401 if request.headers["Authorization"] == "Bearer tok-1" else 200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(api), auth=BearerAuth(cache)) as http:
        assert (await http.get("https://api.example/x")).status_code == 200
        assert (await http.get("https://api.example/y")).status_code == 200
    assert cache.token_requests == 2


# -- the two real subclasses ---------------------------------------------------------------------

SSO = "https://sso.example/TENANT/as"
CREDENTIALS = IonApiCredentials.model_validate(
    {
        "ti": "TENANT",
        "ci": "TENANT~abc",
        "cs": "client-secret-value",
        "iu": "https://ionapi.example",
        "pu": f"{SSO}/",
        "ot": "token.oauth2",
        "saak": "TENANT#key",
        "sask": "service-secret-value",
    }
)
BNG_TOKEN_URL = "https://bng.example/oauth/token"


def issuing(lifetime: int, *, refresh: bool = False) -> respx.Route:
    issued: list[str] = []

    def issue(_request: httpx.Request) -> httpx.Response:
        issued.append(f"tok-{len(issued) + 1}")
        body = {"access_token": issued[-1], "token_type": "Bearer", "expires_in": lifetime}
        return httpx.Response(200, json={**body, "refresh_token": "r-1"} if refresh else body)

    return respx.post(url__regex=r"/(token\.oauth2|oauth/token)$").mock(side_effect=issue)


@respx.mock
async def test_m3_gateway_token_of_60_seconds_serves_many_calls() -> None:
    route = issuing(60, refresh=True)
    clock = Clock()
    tokens = TokenManager(CREDENTIALS, clock=clock)
    for _ in range(20):
        assert await tokens.get_token() == "tok-1"
        clock.now += 2  # 40 s of calls, inside 80 % of 60 s
    assert route.call_count == 1
    clock.now += 10  # 50 s: renewed, with the refresh token first
    assert await tokens.get_token() == "tok-2"
    assert route.call_count == 2 and b"grant_type=refresh_token" in route.calls.last.request.content


@respx.mock
async def test_m3_refused_grant_is_one_request_for_a_burst() -> None:
    route = respx.post(f"{SSO}/token.oauth2").respond(400, json={"error": "invalid_grant"})
    tokens = TokenManager(CREDENTIALS)
    results = await asyncio.gather(*(tokens.get_token() for _ in range(10)), return_exceptions=True)
    assert all(isinstance(r, M3Unavailable) for r in results) and route.call_count == 1


@respx.mock
async def test_bng_token_of_30_seconds_serves_many_calls() -> None:
    route = issuing(30)
    clock = Clock()
    tokens = ClientCredentialsTokens(BNG_TOKEN_URL, "m3bng", SecretStr("s"), clock=clock)
    for _ in range(20):
        assert await tokens.get_token() == "tok-1"
        clock.now += 1  # 20 s of calls, inside 80 % of 30 s
    assert route.call_count == 1
    clock.now += 5  # 25 s
    assert await tokens.get_token() == "tok-2" and route.call_count == 2


@respx.mock
async def test_bng_refused_grant_is_an_auth_error() -> None:
    respx.post(BNG_TOKEN_URL).respond(401, json={"error": "invalid_client"})
    tokens = ClientCredentialsTokens(BNG_TOKEN_URL, "m3bng", SecretStr("s"))
    with pytest.raises(BngAuthError, match="invalid_client"):
        await tokens.get_token()
