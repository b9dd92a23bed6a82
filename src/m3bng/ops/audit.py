"""What an audit entry shows of a change: the diff of an edited payload (the entry itself is
written by ``store/audit.py``, in the transaction of the change)."""

from __future__ import annotations

from typing import Any


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
