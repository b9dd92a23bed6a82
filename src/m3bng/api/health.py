"""Liveness and readiness for orchestrators."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from m3bng.api.deps import RuntimeDep
from m3bng.store.migrate import is_up_to_date
from m3bng.store.stats import ping

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process answers; says nothing about its dependencies (a restart would not fix them)."""
    return {"status": "ok"}


@router.get("/health/ready")
async def ready(runtime: RuntimeDep) -> JSONResponse:
    """Ready when the database answers within 3 s and its schema is at the newest migration."""
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(3):
            await ping(runtime.engine)
            checks["database"] = "ok"
            checks["schema"] = "ok" if await is_up_to_date(runtime.engine) else "migrations pending"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values()) and "schema" in checks
    return JSONResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
    )
