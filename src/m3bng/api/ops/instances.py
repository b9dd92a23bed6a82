"""``GET /api/v1/instances``: the BNG instances of the installation (instances.py), each with
its pause switch and how many of its events wait (pending) or gave up (dead).

Never a secret: no webhook secret, API key or client secret, only the id, the description and
the host of the instance's BNG API.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter
from pydantic import BaseModel, Field

from m3bng.api.deps import RuntimeDep
from m3bng.api.ops.auth import ReadCaller
from m3bng.instances import DEFAULT
from m3bng.ops import controls
from m3bng.runtime import Runtime
from m3bng.store import control as control_store

router = APIRouter(tags=["ops"])


def instance_ids(runtime: Runtime) -> list[str]:
    """The configured instance ids, ``default`` first (only it without an instances file)."""
    return runtime.instances.ids if runtime.instances is not None else [DEFAULT]


class InstanceState(BaseModel):
    id: str
    description: str
    bng_host: str | None = Field(description="host of the instance's BNG API; null: not configured")
    paused: bool = Field(description="paused by an operator: workers claim none of its events")
    reason: str | None = Field(description="why it is paused")
    pending: int = Field(description="events waiting for a worker or a retry")
    dead: int = Field(description="events given up (dead letters to look at)")


class InstanceList(BaseModel):
    items: list[InstanceState]


def _host(url: str | None) -> str | None:
    """Only the host: a URL may carry credentials (``https://user:pass@…``) or tokens in its query."""
    if not url:
        return None
    try:
        return urlsplit(str(url)).hostname
    except ValueError:
        return None


@router.get("/instances", response_model=InstanceList, summary="BNG instances, paused or not, with counts")
async def list_instances(caller: ReadCaller, runtime: RuntimeDep) -> InstanceList:
    """Every configured instance, ``default`` first: the dashboard's instance selector."""
    async with runtime.sessions() as session:
        counts = await control_store.counts_by_instance(session)
        switches = {(c.kind, c.name): c for c in await controls.list_controls(session)}
    items = []
    for instance_id in instance_ids(runtime):
        found = runtime.instances.get(instance_id) if runtime.instances is not None else None
        switch = switches.get(("instance", instance_id))
        paused = switch is not None and switch.paused
        count = counts.get(instance_id, control_store.InstanceCounts())
        items.append(
            InstanceState(
                id=instance_id,
                description=found.description if found is not None else "",
                bng_host=_host((found.settings if found is not None else runtime.settings).bng_base_url),
                paused=paused,
                reason=switch.reason if paused and switch is not None else None,
                pending=count.pending,
                dead=count.dead,
            )
        )
    return InstanceList(items=items)
