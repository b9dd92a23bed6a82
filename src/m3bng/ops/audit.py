"""The audit log: every write made through the ops API or CLI, in the same transaction as the
write itself, so there is never a change without its record or a record without its change."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from m3bng.store.models import AuditEntry
from m3bng.store.queries import utcnow


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target_type: str,
    target_id: str | int,
    before: Any = None,
    after: Any = None,
    detail: str | None = None,
) -> None:
    await session.execute(
        insert(AuditEntry).values(
            at=utcnow(),
            actor=actor[:128],
            action=action[:64],
            target_type=target_type[:64],
            target_id=str(target_id)[:255],
            before=before,
            after=after,
            detail=detail,
        )
    )


def json_diff(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """Changed leaves between two JSON documents: ``[{"path", "before", "after"}]``.

    Shown in the audit log for an edited replay, so a reviewer sees what was changed without
    comparing two whole payloads by eye.
    """
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[dict[str, Any]] = []
        for key in sorted(set(before) | set(after), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in before:
                changes.append({"path": sub, "before": None, "after": after[key], "change": "added"})
            elif key not in after:
                changes.append({"path": sub, "before": before[key], "after": None, "change": "removed"})
            else:
                changes.extend(json_diff(before[key], after[key], sub))
        return changes
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out: list[dict[str, Any]] = []
        for index, (b, a) in enumerate(zip(before, after, strict=True)):
            out.extend(json_diff(b, a, f"{path}[{index}]"))
        return out
    if before == after and type(before) is type(after):
        return []
    return [{"path": path or "(root)", "before": before, "after": after, "change": "changed"}]
