"""Replay and discard of one event: the stored inbound event goes back in line, or is closed.

Replay starts from the **stored inbound event**, not from a failed delivery (a dead letter of
any reason, a skipped or a discarded event can be replayed), and always runs with the mapping
loaded *now*. The caller picks where it starts:

* ``from_failed_step`` keeps the event's checkpoint: keys obtained by completed steps (the
  temporary batch ORNO, the CUNO, lines entered so far) are reused, so the flow resumes at the
  step that failed instead of entering the order a second time;
* ``from_start`` clears the checkpoint and the recorded mapping version: the flow runs from the
  top. Flows still look the record up in M3 (cross-reference, CUOR, lookup-before-add) before
  creating it, so this does not blindly create a duplicate.

Concurrency: the event is reopened by one conditional UPDATE (``WHERE id = :id AND status =
<the status read>``, ``store/replays.reopen_events``) in the same transaction as the dead
letter's resolution, the ``replays`` row and the audit entry. Of two concurrent replays of one
event exactly one matches a row; the other answers 409 and changes nothing. The bulk runner
(``ops/bulk.py``) reopens its events with the same statement. The statements, and why each is
safe, are in ``m3bng.store.replays``; this module decides what they do and groups them.

Nothing here imports FastAPI: a replay or discard that cannot be done raises a ``ReplayError``
of the kind that says why (``ReplayNotFound``, ``ReplayConflict``, ``InvalidReplay``); the HTTP
layer decides the status of each kind (``api/errors.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.connectors.bng.events import BngEnvelope
from m3bng.connectors.bng.events import business_key as bng_business_key
from m3bng.connectors.bng.models import InvalidEventData, ValidationError, check_event_data, field_problems
from m3bng.connectors.ion.bod import BodError, parse_bod
from m3bng.connectors.ion.ingest import business_key as bod_business_key
from m3bng.errors import Conflict, Invalid, NotFound, Refused
from m3bng.inbox.ingest import Notifier
from m3bng.observability import metrics
from m3bng.ops.audit import json_diff
from m3bng.store import audit
from m3bng.store import replays as store
from m3bng.store.models import Event, EventStatus
from m3bng.store.search import get_event

FROM_FAILED_STEP = "from_failed_step"
FROM_START = "from_start"
MODES = (FROM_FAILED_STEP, FROM_START)

# Statuses a replay may start from: closed, and not applied.
REPLAYABLE = (EventStatus.DEAD.value, EventStatus.SKIPPED.value, EventStatus.DISCARDED.value)
# Statuses a discard may start from: not applied yet, and not in a worker's hands.
DISCARDABLE = (EventStatus.DEAD.value, EventStatus.PENDING.value)
MIN_REASON = 3
MAX_REASON = 1000


class ReplayError(Refused):
    """A replay or discard (single or bulk) that cannot be done; ``code`` says why."""


class ReplayNotFound(NotFound, ReplayError):
    code = "not_found"


class ReplayConflict(Conflict, ReplayError):
    """Not in this state: already applied, queued, changed meanwhile, payload purged."""


class InvalidReplay(Invalid, ReplayError):
    """The request itself is refused: an edited payload, mode, rate or reason (``fields``)."""


@dataclass(frozen=True)
class EditedPayload:
    """A validated replacement payload and the business key recomputed from it."""

    payload: dict[str, Any]
    business_key: str | None


@dataclass(frozen=True)
class ReplayResult:
    event_id: int
    replay_id: int
    mode: str
    status: str
    diff: list[dict[str, Any]]


@dataclass(frozen=True)
class DiscardResult:
    event_id: int
    from_status: str


def payload_digest(payload: Any) -> str | None:
    """SHA-256 of the canonical JSON: the audit log says *which* payload without repeating it."""
    if payload is None:
        return None
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- edited payloads --------------------------------------------------------------------------------


def validate_edit(
    event: Event,
    payload: Any,
    *,
    has_flow: Callable[[], bool],
    max_bod_bytes: int,
) -> EditedPayload:
    """Hold an edited payload to what an inbound event of its source must be; raises InvalidReplay.

    BNG: the webhook body ``{"type", "timestamp", "data"}``, checked by the envelope model and the
    per-type data models the webhook route uses. ION: ``{"xml": "<BOD …>"}`` through the one
    hardened BOD parser, stored in the shape ingest stores (``ParsedBod.to_payload``). The type
    may not change: a replay re-applies *this* event, it does not turn it into another one.
    """
    if event.source == "bng":
        return _edit_bng(event, payload, has_flow)
    if event.source == "ion":
        return _edit_ion(event, payload, max_bod_bytes)
    raise InvalidReplay(
        f"payload: payload edits are supported for bng and ion events; this event's source is "
        f"{event.source!r}",
        code="edit_not_supported",
        fields=[{"field": "payload", "problem": "edits are supported for bng and ion events"}],
    )


def _invalid(fields: list[dict[str, str]], code: str = "invalid_payload") -> InvalidReplay:
    message = "; ".join(f"{f['field']}: {f['problem']}" for f in fields)
    return InvalidReplay(message, code=code, fields=fields)


def _edit_bng(event: Event, payload: Any, has_flow: Callable[[], bool]) -> EditedPayload:
    if not isinstance(payload, dict):
        raise _invalid([{"field": "payload", "problem": "must be the webhook body {type, timestamp, data}"}])
    try:
        envelope = BngEnvelope.model_validate(payload)
    except ValidationError as exc:
        raise _invalid(field_problems(exc, "payload.")) from None
    if envelope.type != event.event_type:
        raise _invalid(
            [
                {
                    "field": "payload.type",
                    "problem": f"must stay {event.event_type!r} (a replay cannot change the event type)",
                }
            ]
        )
    try:
        check_event_data(envelope.type, envelope.data, has_flow=has_flow)
    except InvalidEventData as exc:
        raise _invalid([{**f, "field": f"payload.{f['field']}"} for f in exc.fields]) from None
    return EditedPayload(payload=payload, business_key=bng_business_key(envelope.type, envelope.data))


def _edit_ion(event: Event, payload: Any, max_bod_bytes: int) -> EditedPayload:
    xml = payload.get("xml") if isinstance(payload, dict) else None
    if not isinstance(xml, str) or not xml.strip():
        raise _invalid([{"field": "payload.xml", "problem": "must be the edited BOD as an XML string"}])
    extra = sorted(set(payload) - {"xml"})
    if extra:
        raise _invalid([{"field": f"payload.{extra[0]}", "problem": "unknown field (send only xml)"}])
    try:
        parsed = parse_bod(xml.encode("utf-8"), max_bytes=max_bod_bytes)
    except BodError as exc:
        raise _invalid([{"field": "payload.xml", "problem": str(exc)}], code=exc.code) from None
    if parsed.bod_type != event.event_type:
        raise _invalid(
            [
                {
                    "field": "payload.xml",
                    "problem": f"the BOD is a {parsed.bod_type}; it must stay {event.event_type} "
                    "(a replay cannot change the noun or verb)",
                }
            ]
        )
    original = event.payload if isinstance(event.payload, dict) else {}
    return EditedPayload(
        payload=parsed.to_payload(original.get("ims")), business_key=bod_business_key(parsed)
    )


# -- the reopening statement ------------------------------------------------------------------------


async def reopen(
    session: AsyncSession,
    event_ids: Sequence[int],
    *,
    from_status: str,
    mode: str,
    edited: EditedPayload | None = None,
) -> list[int]:
    """Put closed events back in line, at once, with a fresh retry budget; returns those reopened.

    ``from_start`` runs the flow from the top (no checkpoint, no recorded mapping version); an
    edit replaces the payload and its business key. Conditional on the status the caller saw:
    a row that changed meanwhile is not reopened (``store.replays.reopen_events``).
    """
    return await store.reopen_events(
        session,
        event_ids,
        from_status=from_status,
        restart=mode == FROM_START,
        payload=edited.payload if edited is not None else None,
        business_key=edited.business_key if edited is not None else None,
    )


# -- one event ----------------------------------------------------------------------------------------


async def _load(session: AsyncSession, event_id: int) -> Event:
    event = await get_event(session, event_id)
    if event is None:
        raise ReplayNotFound(f"transaction {event_id} does not exist")
    return event


def _not_replayable(event_id: int, status: str) -> ReplayConflict:
    if status == EventStatus.DONE.value:
        return ReplayConflict(
            f"transaction {event_id} is done: it was already applied, and replaying it could apply "
            "it twice. Send the change from BNG/M3 again instead.",
            code="already_applied",
        )
    if status in (EventStatus.PENDING.value, EventStatus.PROCESSING.value):
        what = "queued" if status == EventStatus.PENDING.value else "running"
        return ReplayConflict(
            f"transaction {event_id} is {status}: already {what}; it runs (or retries) without a replay",
            code="already_queued",
        )
    if status == EventStatus.HELD.value:
        return ReplayConflict(
            f"transaction {event_id} is held by an anomaly rule: release or discard the hold "
            f"(POST /api/v1/holds/{event_id}/release or …/discard)",
            code="held",
        )
    return ReplayConflict(f"transaction {event_id} is {status}; it cannot be replayed", code="not_replayable")


@dataclass(frozen=True)
class ReplayPreview:
    """What a replay would do, worked out and not done (``dry_run``): nothing is written."""

    event_id: int
    mode: str
    status: str  # the event's status now (a real replay makes it pending)
    diff: list[dict[str, Any]]
    payload: Any  # the payload the replay would run with (the edited one, validated)


def _plan(
    event: Event,
    *,
    mode: str | None,
    payload: Any,
    has_flow: Callable[[str, str], bool],
    max_bod_bytes: int,
) -> tuple[EditedPayload | None, str]:
    """The checks a replay makes before changing anything, shared by the replay and its dry run:
    replayable status, a valid edited payload (or a stored one), a known mode."""
    event_id, from_status = event.id, event.status
    if from_status not in REPLAYABLE:
        raise _not_replayable(event_id, from_status)
    edited: EditedPayload | None = None
    if payload is not None:
        edited = validate_edit(
            event,
            payload,
            has_flow=lambda: has_flow(event.source, event.event_type),
            max_bod_bytes=max_bod_bytes,
        )
    elif event.payload is None:
        raise ReplayConflict(
            f"transaction {event_id}'s payload was purged by retention; replay it with an edited "
            "payload (the original as BNG/ION would send it)",
            code="payload_purged",
        )
    # Keys checkpointed from the old payload (a CUNO, a batch ORNO) may not fit an edited one.
    mode = mode or (FROM_START if edited is not None else FROM_FAILED_STEP)
    if mode not in MODES:
        raise InvalidReplay(
            f"mode: must be one of {', '.join(MODES)}",
            code="invalid_mode",
            fields=[{"field": "mode", "problem": "unknown mode"}],
        )
    return edited, mode


async def preview(
    sessions: async_sessionmaker[AsyncSession],
    event_id: int,
    *,
    mode: str | None = None,
    payload: Any = None,
    has_flow: Callable[[str, str], bool] = lambda _source, _type: False,
    max_bod_bytes: int = 5_242_880,
) -> ReplayPreview:
    """A replay's dry run: the same checks and diff, refused the same way, and nothing written
    (no reopening, no ``replays`` row, no audit entry: nothing happened to audit)."""
    async with sessions() as session:
        event = await _load(session, event_id)
        edited, mode = _plan(
            event, mode=mode, payload=payload, has_flow=has_flow, max_bod_bytes=max_bod_bytes
        )
    diff = json_diff(event.payload, edited.payload) if edited is not None else []
    return ReplayPreview(
        event_id, mode, event.status, diff, edited.payload if edited is not None else event.payload
    )


async def replay_in_session(
    session: AsyncSession,
    event_id: int,
    *,
    actor: str,
    mode: str | None = None,
    payload: Any = None,
    reason: str | None = None,
    has_flow: Callable[[str, str], bool] = lambda _source, _type: False,
    max_bod_bytes: int = 5_242_880,
) -> ReplayResult:
    """Replay one event within the caller's transaction (which commits it)."""
    event = await _load(session, event_id)
    from_status = event.status
    edited, mode = _plan(event, mode=mode, payload=payload, has_flow=has_flow, max_bod_bytes=max_bod_bytes)
    before = {
        "status": from_status,
        "payload_sha256": payload_digest(event.payload),
        "business_key": event.business_key,
        "checkpoint": event.checkpoint,
        "mapping_hash": event.mapping_hash,
        "error_class": event.error_class,
        "last_error": event.last_error,
        "attempts": event.attempts,
    }
    # Read before the UPDATE: the ORM writes the new values into the loaded object.
    old_payload, old_checkpoint = event.payload, event.checkpoint
    if not await reopen(session, [event_id], from_status=from_status, mode=mode, edited=edited):
        raise _not_replayable(event_id, await store.event_status(session, event_id))
    await store.resolve_dead_letters(session, [event_id], "replayed")
    diff = json_diff(old_payload, edited.payload) if edited is not None else []
    replay_id = await store.record_replay(
        session,
        event_id,
        mode=mode,
        requested_by=actor,
        from_status=from_status,
        edited_payload=edited.payload if edited is not None else None,
        previous_payload=old_payload if edited is not None else None,
    )
    after: dict[str, Any] = {
        "status": EventStatus.PENDING.value,
        "mode": mode,
        "replay_id": replay_id,
        "edited": edited is not None,
        "payload_sha256": payload_digest(edited.payload) if edited is not None else before["payload_sha256"],
        "checkpoint": {} if mode == FROM_START else old_checkpoint,
    }
    if edited is not None:
        after["business_key"] = edited.business_key
        after["diff"] = diff
    await audit.record(
        session,
        actor=actor,
        action="replay",
        target_type="event",
        target_id=event_id,
        before=before,
        after=after,
        detail=reason,
    )
    return ReplayResult(event_id, replay_id, mode, EventStatus.PENDING.value, diff)


async def replay(
    sessions: async_sessionmaker[AsyncSession],
    notifier: Notifier | None,
    event_id: int,
    **options: Any,
) -> ReplayResult:
    """Replay one event in its own transaction, then wake this process's workers."""
    async with sessions.begin() as session:
        result = await replay_in_session(session, event_id, **options)
    metrics.REPLAYS.labels(result.mode, "single").inc()
    if notifier is not None:
        notifier.notify()
    return result


# -- discard --------------------------------------------------------------------------------------


def check_reason(reason: Any) -> str:
    text = reason.strip() if isinstance(reason, str) else ""
    if len(text) < MIN_REASON:
        raise InvalidReplay(
            f"reason: say why (at least {MIN_REASON} characters); it is kept in the audit log",
            code="reason_required",
            fields=[{"field": "reason", "problem": f"at least {MIN_REASON} characters"}],
        )
    return text[:MAX_REASON]


async def discard(
    sessions: async_sessionmaker[AsyncSession], event_id: int, *, actor: str, reason: Any
) -> DiscardResult:
    """Close a dead or pending event without applying it, for good (until someone replays it).

    Only ``dead`` and ``pending`` events: a processing event is in a worker's hands (its outcome
    would overwrite the discard's), and done or skipped ones have nothing left to stop.
    """
    text = check_reason(reason)
    async with sessions.begin() as session:
        event = await _load(session, event_id)
        from_status = event.status
        if from_status == EventStatus.HELD.value:
            raise _not_replayable(event_id, from_status)  # a hold ends through its own routes
        if from_status not in DISCARDABLE:
            raise ReplayConflict(
                f"transaction {event_id} is {from_status}; only dead or pending transactions can be "
                "discarded",
                code="not_discardable",
            )
        if not await store.discard_event(session, event_id, from_status=from_status):
            raise ReplayConflict(
                f"transaction {event_id} changed while discarding it (a worker claimed it); try again",
                code="not_discardable",
            )
        await store.resolve_dead_letters(session, [event_id], "discarded")
        await audit.record(
            session,
            actor=actor,
            action="discard",
            target_type="event",
            target_id=event_id,
            before={"status": from_status, "error_class": event.error_class, "last_error": event.last_error},
            after={"status": EventStatus.DISCARDED.value},
            detail=text,
        )
    return DiscardResult(event_id, from_status)
