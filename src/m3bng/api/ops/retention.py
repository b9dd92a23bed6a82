"""``POST /api/v1/retention/purge`` and ``POST /api/v1/retention/erase`` (ops:admin): retention
on demand, and erasure of one person's or company's data by business key (``ops/retention.py``).
Both are recorded in the audit log with the counts; a dry run only counts and records nothing."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from m3bng.api.deps import RuntimeDep
from m3bng.api.errors import refusal
from m3bng.api.ops.auth import AdminCaller
from m3bng.ops import retention
from m3bng.ops.filters import FilterError

router = APIRouter(tags=["ops"])


class PurgeRequest(BaseModel):
    dry_run: bool = False


class PurgeCountsOut(BaseModel):
    dry_run: bool
    payloads: int
    dead_letter_payloads: int
    steps: int
    replays: int
    bng_state: int
    audit_entries: int
    events: int
    order_history: int = Field(description="anomaly rules' history rows deleted (docs/assist.md)")


class EraseRequest(BaseModel):
    q: str = Field(min_length=1, max_length=255, description="A business key: BNG id, M3 number, BODID ...")
    dry_run: bool = False


class EraseOut(BaseModel):
    dry_run: bool
    q: str
    matched: int
    open: int
    payloads: int
    steps: int
    replays: int
    bng_state: int
    audit_entries: int


@router.post("/retention/purge", response_model=PurgeCountsOut)
async def purge(body: PurgeRequest, caller: AdminCaller, runtime: RuntimeDep) -> PurgeCountsOut:
    """Apply the retention settings now; with ``dry_run`` count what would go."""
    counts = await retention.purge(runtime.sessions, runtime.settings, dry_run=body.dry_run)
    if not body.dry_run:
        await retention.record_run(
            runtime.sessions,
            actor=caller.name,
            action="retention.purge",
            target="on_demand",
            after=counts.as_dict(),
        )
    return PurgeCountsOut(dry_run=body.dry_run, **counts.as_dict())


@router.post("/retention/erase", response_model=EraseOut)
async def erase(body: EraseRequest, caller: AdminCaller, runtime: RuntimeDep) -> EraseOut:
    """Purge now the personal data of every finished event about one business key."""
    try:
        result = await retention.erase(runtime.sessions, body.q, dry_run=body.dry_run)
    except FilterError as exc:
        raise refusal(exc, fields=[{"field": "q", "problem": str(exc)}]) from None
    counts = result.counts.as_dict()
    del counts["dead_letter_payloads"], counts["events"], counts["order_history"]
    if not body.dry_run:
        await retention.record_run(
            runtime.sessions,
            actor=caller.name,
            action="retention.erase",
            target=body.q,
            after={"matched": result.matched, "open": result.open, **counts},
        )
    return EraseOut(dry_run=body.dry_run, q=body.q, matched=result.matched, open=result.open, **counts)
