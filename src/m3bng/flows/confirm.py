"""ConfirmBOD: telling ION that a BOD could not be applied, so it shows in Infor's own monitoring.

A BOD whose sender asked for confirmation (``ConfirmationCode`` ``OnError`` or ``Always``) and
that ends in a dead letter gets a ConfirmBOD carrying the error. The ConfirmBOD is itself an
event in the inbox (source ``m3bng``), enqueued in the dead-letter path, and sent by this flow:
so it is durable, retried while ION is unreachable, and visible with its steps like any other
event, instead of a fire-and-forget call that an ION outage would silently lose.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.errors import PermanentError, TargetUnavailable
from m3bng.flows.runtime import FlowContext
from m3bng.inbox.ingest import Notifier, ingest_event
from m3bng.store.queue import ClaimedEvent

log = structlog.get_logger(__name__)

CONFIRM_EVENT = "ConfirmBOD"
CONFIRM_CODES = ("OnError", "Always")


def wants_confirmation(event: ClaimedEvent) -> dict[str, Any] | None:
    """The BOD's metadata when its sender asked to hear of failures, else None."""
    if event.source != "ion" or not isinstance(event.payload, dict):
        return None
    bod = event.payload.get("bod")
    if isinstance(bod, dict) and bod.get("confirmation_code") in CONFIRM_CODES and bod.get("bodid"):
        return bod
    return None


class ConfirmOnDeadLetter:
    """Worker hook: a dead-lettered BOD that asks for confirmation enqueues its ConfirmBOD."""

    def __init__(
        self, settings: Settings, sessions: async_sessionmaker[AsyncSession], notifier: Notifier | None
    ) -> None:
        self.settings, self.sessions, self.notifier = settings, sessions, notifier

    async def __call__(self, event: ClaimedEvent, reason: str, error: str) -> None:
        bod = wants_confirmation(event)
        if bod is None or not self.settings.ion_confirm_bods:
            return
        await ingest_event(
            self.sessions,
            source="m3bng",
            # One ConfirmBOD per dead letter: a replayed BOD that fails again confirms again.
            external_id=f"confirm:{event.id}:{event.attempts}",
            event_type=CONFIRM_EVENT,
            payload={"original": bod, "error": f"{reason}: {error}", "event_id": event.id},
            business_key=None,
            correlation_id=event.correlation_id,
            notifier=self.notifier,
        )


async def confirm_bod(ctx: FlowContext) -> None:
    from m3bng.connectors.ion.confirm import build_confirm_bod

    payload = ctx.payload if isinstance(ctx.payload, dict) else {}
    original, error = payload.get("original"), payload.get("error")
    if not isinstance(original, dict) or not error:
        raise PermanentError("a ConfirmBOD event needs `original` (the BOD's metadata) and `error`")
    ion = ctx.connectors.ion
    if ion is None:
        raise TargetUnavailable("ion", "ION is not configured (set M3BNG_IONAPI_FILE)", retry_after=300)
    logical_id = ion.logical_id
    xml, bodid = build_confirm_bod(
        original, error=str(error), logical_id=logical_id, tenant_id=original.get("tenant_id")
    )
    message_id = f"m3bng-confirm-{ctx.event.id}"
    async with ctx.step(
        "confirm_bod",
        target="ion",
        operation="POST service/v3/multipartMessage ConfirmBOD",
        request={"bodid": bodid, "original_bodid": original.get("bodid"), "error": error},
    ):
        await ion.send_bod(
            document_name="ConfirmBOD",
            xml=xml,
            message_id=message_id,
            accounting_entity=original.get("accounting_entity"),
            location=original.get("location"),
        )
    log.info("ion.confirm_bod_sent", original_bodid=original.get("bodid"), bodid=bodid)
