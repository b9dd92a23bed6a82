"""Every ops and storefront endpoint × every kind of caller: no token 401, too small a scope or
one of the other family 403 (an ops token never reads the storefront, a storefront token never
reaches ops), enough neither.

The routes come from the app itself, so an endpoint added later without an entry in ``REQUIRED``
fails this test instead of shipping with whatever scope its author happened to pick.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from m3bng.config import Settings
from m3bng.ops.auth import Scope
from tests.conftest import LiveServer
from tests.support.ops import OPS_TOKEN_ENTRIES, TOKENS, bearer

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

PREFIX = "/api/v1"
READ, REPLAY, ADMIN, STOREFRONT = Scope.READ, Scope.REPLAY, Scope.ADMIN, Scope.STOREFRONT_READ

# (method, path under /api/v1 with every path parameter written {}) → the scope it needs.
# The contract: ops:read = every GET except /audit; ops:replay = replay, discard, bulk replay;
# ops:admin = pause/resume, /audit, /retention/purge and /retention/erase (personal data), and
# every change to a mapping (drafts, publish, rollback) and its bundles (export and import).
REQUIRED: dict[tuple[str, str], Scope] = {
    ("GET", "/whoami"): READ,
    ("GET", "/transactions"): READ,
    ("GET", "/transactions/{}"): READ,
    ("POST", "/transactions/{}/replay"): REPLAY,
    ("POST", "/transactions/{}/discard"): REPLAY,
    ("GET", "/dead-letters"): READ,
    ("GET", "/dead-letters/summary"): READ,
    ("POST", "/replays/bulk"): REPLAY,
    ("GET", "/replays/bulk"): READ,
    ("GET", "/replays/bulk/{}"): READ,
    ("POST", "/replays/bulk/{}/cancel"): REPLAY,
    ("GET", "/control"): READ,
    ("GET", "/instances"): READ,
    ("POST", "/control/pause"): ADMIN,
    ("POST", "/control/resume"): ADMIN,
    ("GET", "/stats"): READ,
    ("GET", "/alerts"): READ,
    ("GET", "/sync/runs"): READ,
    ("GET", "/reconcile/runs"): READ,
    ("GET", "/reconcile/runs/{}/findings"): READ,
    ("GET", "/reconcile/latest"): READ,
    ("GET", "/audit"): ADMIN,
    ("POST", "/retention/purge"): ADMIN,
    ("POST", "/retention/erase"): ADMIN,
    ("GET", "/mappings"): READ,
    ("GET", "/mappings/{}/versions"): READ,
    ("GET", "/mappings/{}/versions/{}"): READ,
    ("GET", "/mappings/{}/versions/{}/fields"): READ,
    ("GET", "/mappings/{}/diff"): READ,
    ("POST", "/mappings/{}/drafts"): ADMIN,
    ("POST", "/mappings/{}/versions/{}/publish"): ADMIN,
    ("POST", "/mappings/{}/versions/{}/rollback"): ADMIN,
    ("GET", "/mappings/bundle"): ADMIN,
    ("POST", "/mappings/bundle"): ADMIN,
    ("POST", "/mappings/{}/edit"): ADMIN,
    ("POST", "/mappings/{}/fields"): READ,
    ("POST", "/mappings/{}/preview"): READ,
    ("POST", "/mappings/{}/paths"): READ,
    ("POST", "/mappings/{}/suggestions"): READ,
    ("GET", "/mappings/m3-fields/{}/{}"): READ,
    ("GET", "/mappings/{}/replay-candidates"): READ,
    ("POST", "/mappings/{}/replay-candidates"): REPLAY,
    ("GET", "/transactions/{}/fix-suggestions"): READ,
    ("POST", "/transactions/{}/fix-suggestions/{}/prepare"): REPLAY,
    # BNG's storefront reads (api/storefront.py): storefront:read and nothing else.
    ("POST", "/storefront/prices"): STOREFRONT,
    ("GET", "/storefront/availability"): STOREFRONT,
    ("GET", "/storefront/customers/{}/orders"): STOREFRONT,
    ("GET", "/storefront/customers/{}/invoices"): STOREFRONT,
    ("GET", "/holds"): READ,
    ("POST", "/holds/{}/release"): REPLAY,
    ("POST", "/holds/{}/discard"): REPLAY,
}

# Bodies that are harmless when the call is allowed (a dry run rather than a real bulk replay or
# purge); anything else gets {} and may well answer 422, which is fine here.
BODIES: dict[tuple[str, str], object] = {
    ("POST", "/replays/bulk"): {"filter": {"status": ["dead"]}, "mode": "from_failed_step", "dry_run": True},
    ("POST", "/retention/purge"): {"dry_run": True},
    ("POST", "/retention/erase"): {"q": "nobody", "dry_run": True},
}

PARAM = re.compile(r"\{[^}]*\}")


def ops_routes(server: LiveServer) -> list[tuple[str, str, str]]:
    """(method, normalised path, concrete URL) for every route of the app under /api/v1."""
    found = []
    # FastAPI 0.16x includes routers lazily: app.routes holds the included routers, not their routes.
    for route in iter_route_contexts(server.app.routes):
        if not route.path or not route.path.startswith(PREFIX + "/"):
            continue
        path = PARAM.sub("{}", route.path[len(PREFIX) :])
        url = PARAM.sub("1", route.path)
        for method in sorted((route.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((method, path, url))
    return found


async def test_every_ops_route_needs_its_scope(
    make_settings: Callable[..., Settings], live_server: Callable[..., LiveServer]
) -> None:
    settings = make_settings(ops_tokens=OPS_TOKEN_ENTRIES, retention_run_seconds=0)
    async with live_server(settings) as server, server.client() as client:
        routes = ops_routes(server)
        served = {(method, path) for method, path, _ in routes}
        missing = sorted(served - REQUIRED.keys())
        gone = sorted(REQUIRED.keys() - served)
        problems: list[str] = []
        for method, path, url in routes:
            needed = REQUIRED.get((method, path))
            if needed is None:
                continue
            body = BODIES.get((method, path), {}) if method != "GET" else None
            for scope in (None, READ, REPLAY, ADMIN, STOREFRONT):
                headers = bearer(TOKENS[scope]) if scope is not None else {}
                response = await client.request(method, url, headers=headers, json=body)
                what = f"{method} {url} as {scope.value if scope else 'no token'}: {response.status_code}"
                if scope is None:
                    expected_ok = response.status_code == 401 and _names(response, "Bearer")
                elif not scope.covers(needed):
                    expected_ok = response.status_code == 403 and _names(response, needed.value)
                else:
                    expected_ok = response.status_code not in (401, 403) and response.status_code < 500
                if not expected_ok:
                    problems.append(f"{what} {response.text[:200]} (needs {needed.value})")
        assert not missing, f"ops routes without a required scope in REQUIRED: {missing}"
        assert not problems, "\n".join(problems)
        assert not gone, f"REQUIRED names routes the app does not serve: {gone}"


def _names(response: httpx.Response, text: str) -> bool:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return False
    return text in str(message)
