"""``GET /api/v1/whoami``: what the presented token may do (the dashboard's login check)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from m3bng.api.ops.auth import ReadCaller

router = APIRouter(tags=["ops"])


class WhoAmI(BaseModel):
    name: str
    scope: str
    via: str
    can_replay: bool
    sees_personal_data: bool


@router.get("/whoami", response_model=WhoAmI)
async def whoami(caller: ReadCaller) -> WhoAmI:
    from m3bng.ops.auth import Scope

    return WhoAmI(
        name=caller.name,
        scope=caller.scope.value,
        via=caller.via,
        can_replay=caller.allows(Scope.REPLAY),
        sees_personal_data=caller.sees_personal_data,
    )
