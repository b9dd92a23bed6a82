"""The dashboard's files as served: types, security headers, a fixed file list, nothing from
other hosts (the browser test in tests/e2e drives the page itself)."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.resources import files

import pytest

from m3bng.config import Settings
from m3bng.ui.routes import STATIC_FILES
from tests.conftest import LiveServer


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_page_and_files_are_served_with_a_same_origin_policy(
    make_settings: Callable[..., Settings], live_server: Callable[..., LiveServer]
) -> None:
    async with live_server(make_settings()) as server, server.client() as client:
        page = await client.get("/ui")
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert 'src="ui/static/app.js"' in page.text

        for name, media_type in STATIC_FILES.items():
            response = await client.get(f"/ui/static/{name}")
            assert response.status_code == 200, name
            assert response.headers["content-type"] == media_type
            assert "content-security-policy" in response.headers

        slash = await client.get("/ui/")
        assert slash.status_code in (307, 308)
        assert slash.headers["location"].endswith("/ui")

        for name in ("nope.js", "..%2F__init__.py", "routes.py"):
            response = await client.get(f"/ui/static/{name}")
            assert response.status_code == 404, name
            assert "import" not in response.text

        # The page is not an API operation: it stays out of the OpenAPI schema.
        schema = (await client.get("/openapi.json")).json()
        assert not any(path.startswith("/ui") for path in schema["paths"])


def test_static_files_reference_no_other_host() -> None:
    """Works offline: no CDN script, font, stylesheet or image. The only absolute URL allowed is
    the SVG namespace, which is a name, not something fetched."""
    static = files("m3bng.ui").joinpath("static")
    for name in STATIC_FILES:
        text = static.joinpath(name).read_text(encoding="utf-8")
        urls = set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (name, urls)
        assert "@import" not in text, name
        # Text from the API is placed with textContent only: nothing that parses markup or code.
        assert not re.search(r"\.(inner|outer)HTML|insertAdjacentHTML|document\.write|eval\(", text), name


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_api_docs_load_nothing_from_other_hosts(
    make_settings: Callable[..., Settings], live_server: Callable[..., LiveServer]
) -> None:
    """Swagger UI and ReDoc come from this process: on an isolated network they still work."""
    async with live_server(make_settings()) as server, server.client() as client:
        front = await client.get("/")
        assert front.status_code == 200 and 'href="ui"' in front.text and 'href="docs"' in front.text
        for page in ("/docs", "/redoc"):
            html = (await client.get(page)).text
            assert not re.findall(r"https?://", html), (page, re.findall(r"https?://\S+", html))
            for asset in re.findall(r'(?:src|href)="(/_docs-assets/[^"]+)"', html):
                response = await client.get(asset)
                assert response.status_code == 200 and len(response.content) > 1000, asset
        assert (await client.get("/openapi.json")).json()["info"]["title"] == "m3bng"
