"""Serves the dashboard's files. The page holds no data: its script calls ``/api/v1`` with the
token the user typed in, so these routes need no authentication themselves.

Every answer carries a Content-Security-Policy that allows only this origin (no inline script or
style, no other hosts), so data shown on the page cannot run as code even if it got past the
script's escaping, and the page cannot be framed.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from m3bng.api.errors import ApiError

router = APIRouter(prefix="/ui", include_in_schema=False)

# The only files served, with their types: a fixed list, so no path from the URL reaches the disk.
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate on every load, so an upgraded service never runs yesterday's script.
    "Cache-Control": "no-cache",
}


@cache
def _read(name: str) -> bytes:
    return files("m3bng.ui").joinpath("static", name).read_bytes()


def _file(name: str) -> Response:
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise ApiError(404, "not_found", f"no dashboard file {name!r}")
    return Response(_read(name), media_type=media_type, headers=SECURITY_HEADERS)


@router.get("")
async def index() -> Response:
    """The page. Its links are relative (``ui/static/…``, ``api/v1/…``), so it also works behind
    a proxy that mounts the service under a path prefix; ``/ui/`` is redirected here."""
    return _file("index.html")


@router.get("/static/{name}")
async def static(name: str) -> Response:
    return _file(name)
