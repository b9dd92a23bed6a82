"""The ops API, ``/api/v1``: transactions, dead letters, replay, control, alerts, audit.

Every route declares the scope it needs through ``Caller``/``require``; no token answers 401,
a token without the scope 403. Routers of the parts live in the modules of this package and are
gathered by ``router`` below.
"""

from __future__ import annotations

from fastapi import APIRouter

from m3bng.api.ops import auth as _auth  # noqa: F401 (security scheme registration)


def include_routers() -> APIRouter:
    """A fresh ``/api/v1`` router holding every part router (one per app: tests build many)."""
    import importlib
    import pkgutil

    import m3bng.api.ops as package

    router = APIRouter(prefix="/api/v1")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name in ("auth",):
            continue
        module = importlib.import_module(f"m3bng.api.ops.{info.name}")
        part = getattr(module, "router", None)
        if isinstance(part, APIRouter):
            router.include_router(part)
    return router
