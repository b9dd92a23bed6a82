"""The OpenAPI docs (Swagger UI, ReDoc) served by the app itself, and a front page.

FastAPI's defaults load Swagger UI and ReDoc from a CDN: on an isolated network (where an
integration service often runs) the pages stay blank. The assets come from the
``fastapi-offline`` distribution instead, installed with m3bng and served from this process.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/_docs-assets"
_FRONT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>m3bng</title></head>
<body><h1>m3bng</h1><ul>
<li><a href="ui">Dashboard</a> (/ui)</li>
<li><a href="docs">API documentation</a> (/docs, or <a href="redoc">ReDoc</a>)</li>
<li><a href="openapi.json">OpenAPI schema</a></li>
<li><a href="health">Health</a></li>
</ul></body></html>
"""


def install(app: FastAPI) -> None:
    """Routes for /, /docs, /docs/oauth2-redirect and /redoc; the app is built with
    ``docs_url=None, redoc_url=None`` so that FastAPI's CDN pages are not registered."""
    static = files("fastapi_offline") / "static"
    app.mount(ASSETS, StaticFiles(directory=str(static)), name="docs-assets")
    title = f"{app.title} API"

    @app.get("/", include_in_schema=False)
    async def front() -> HTMLResponse:
        return HTMLResponse(_FRONT)

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
