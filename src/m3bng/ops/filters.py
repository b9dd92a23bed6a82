"""The one filter over events that the transaction list, the dead-letter list, bulk replay and
the CLI share, and the cursor that pages through its results.

Keeping it in one place means "the 37 dead letters the list shows" and "the 37 events a bulk
replay with the same filter replays" are the same set by construction. A filter is plain data
(``to_json``/``from_json``) because a bulk replay stores the filter it was started with.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, func, or_, select

from m3bng.errors import Invalid
from m3bng.ops.keys import normalise
from m3bng.store.models import DeadLetter, Event, EventKey, Step


class FilterError(Invalid, ValueError):
    """A filter or cursor value that cannot be used; the message names the parameter
    (``name: problem``). Still a ValueError, as it was, for callers that catch one."""


@dataclass(frozen=True)
class EventFilter:
    status: tuple[str, ...] = ()
    event_type: tuple[str, ...] = ()
    source: str | None = None
    since: datetime | None = None  # received at or after
    until: datetime | None = None  # received before
    error_class: str | None = None
    program: str | None = None  # M3 program (OIS100MI) or program/transaction (OIS100MI/Confirm)
    q: str | None = None  # a business key: BNG order id, M3 ORNO, customer number, BODID, ...
    reason: str | None = None  # dead-letter reason (permanent_error, retries_exhausted, no_flow)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def conditions(self) -> list[ColumnElement[bool]]:
        """WHERE clauses on ``events`` (and, for ``reason``, its unresolved dead letter)."""
        where: list[ColumnElement[bool]] = []
        if self.status:
            where.append(Event.status.in_(self.status))
        if self.event_type:
            where.append(Event.event_type.in_(self.event_type))
        if self.source:
            where.append(Event.source == self.source)
        if self.since is not None:
            where.append(Event.received_at >= self.since)
        if self.until is not None:
            where.append(Event.received_at < self.until)
        if self.error_class:
            where.append(Event.error_class == self.error_class)
        if self.program:
            # Case-insensitive: transactions are mixed case (OIS100MI/Confirm), people type either.
            program = self.program.strip().upper()
            stored = func.upper(Step.operation)
            operation = (
                stored == program
                if "/" in program
                else stored.like(_escape_like(program) + "/%", escape="\\")
            )
            where.append(exists(select(Step.id).where(Step.event_id == Event.id, operation)))
        if self.q:
            key = normalise(self.q)
            raw = self.q.strip()
            where.append(
                or_(
                    Event.id.in_(select(EventKey.event_id).where(EventKey.value == key)),
                    Event.business_key == raw,
                    Event.external_id == raw,
                )
            )
        if self.reason:
            where.append(
                exists(
                    select(DeadLetter.id).where(
                        DeadLetter.event_id == Event.id,
                        DeadLetter.resolved_at.is_(None),
                        DeadLetter.reason == self.reason,
                    )
                )
            )
        return where

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra", None)
        for name in ("since", "until"):
            if data[name] is not None:
                data[name] = data[name].isoformat()
        data["status"], data["event_type"] = list(self.status), list(self.event_type)
        return {k: v for k, v in data.items() if v not in (None, [], "")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EventFilter:
        values = dict(data)
        for name in ("since", "until"):
            if values.get(name):
                values[name] = datetime.fromisoformat(values[name])
        values["status"] = tuple(values.get("status") or ())
        values["event_type"] = tuple(values.get("event_type") or ())
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- cursor pagination (keyset on id, newest first) -----------------------------------------------


def encode_cursor(last_id: int) -> str:
    """Opaque to callers; keyset pagination on the id, so pages never skip or repeat rows when
    new events arrive between two requests (offset pagination would)."""
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, value = text.partition(":")
        if kind != "id" or not value.isdigit():
            raise ValueError
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise FilterError("cursor: not a cursor this API returned (pass next_cursor unchanged)") from None
