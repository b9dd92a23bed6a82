"""The guards every BNG → M3 flow runs behind, as named steps of the runtime:

1. ``skip_if_stale``: a webhook about an object older than the last change applied to it is
   skipped (mapping option ``skip_stale``);
2. ``skip_if_echo``: a webhook announcing what m3bng itself wrote to BNG is skipped (mapping
   options ``echo_state``/``echo_id``); otherwise what BNG now holds is recorded;
3. ``hold_if_anomalous``: an order far outside its history is flagged or held for a person
   before anything is sent to M3 (mapping section ``anomalies:``; ``anomalies.py``);
4. the flow;
5. ``record_version``: the change's time, stored with the event's outcome.

``guarded(flow, mappings, mapping)`` puts them around a flow; the worker runs the result.

**Echo suppression**: a change m3bng wrote to one side must not come back as a change to apply.

M3 and BNG both announce changes no matter who made them: M3 publishes a BOD for the customer
m3bng just changed from a BNG webhook, and BNG sends a webhook for the order status m3bng just
wrote to it. Without a check, each write bounces back and forth.

The check compares content, not timing. ``bng_state`` keeps what BNG holds for each object, as
far as m3bng knows: the data of BNG's last webhook, merged with every body m3bng wrote to BNG.

* BOD → BNG: the body m3bng would write is compared with that state. Equal on every field
  (bar ``echo_ignore``) means BNG already holds it, so the BOD is an echo of BNG's own change
  (or a change that touched no mapped field) and nothing is sent. M3 cuts long texts to its
  field lengths, so a value that is a cut-off start of BNG's value counts as equal.
* Webhook → M3: the webhook's data is compared with the same state. Equal on every field means
  the webhook announces what m3bng itself wrote (or nothing new), so nothing is written to M3.

A timing window would also swallow a genuine change made right after m3bng's own; comparing
content never does. The limit: a genuine change back to exactly the known value is skipped,
which is harmless because the other side already holds that value.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingABC
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from m3bng.errors import Skipped
from m3bng.flows.runtime.anomalies import hold_if_anomalous
from m3bng.flows.runtime.context import FlowContext
from m3bng.flows.runtime.m3 import FlowMappings, MappedFlow
from m3bng.flows.runtime.registry import Flow
from m3bng.mapping import Mapping
from m3bng.store import documents
from m3bng.store.db import single_statement
from m3bng.store.models import DEFAULT_INSTANCE
from m3bng.timestamps import iso_utc


def split_names(option: Any) -> set[str]:
    """``echo_ignore: "M3CustomerNumber, UpdatedAt"`` → a set of field names."""
    return {part.strip() for part in str(option or "").split(",") if part.strip()}


def is_echo(
    new: MappingABC[str, Any], known: MappingABC[str, Any] | None, *, ignore: set[str], truncated_ok: bool
) -> bool:
    """Whether ``new`` says nothing ``known`` does not already hold."""
    if known is None:
        return False
    for name, value in new.items():
        if name in ignore:
            continue
        if not _same(value, known.get(name), ignore=ignore, truncated_ok=truncated_ok):
            return False
    return True


def _same(new: Any, known: Any, *, ignore: set[str], truncated_ok: bool) -> bool:
    if _empty(new) and _empty(known):
        return True
    if isinstance(new, MappingABC):
        return isinstance(known, MappingABC) and is_echo(new, known, ignore=ignore, truncated_ok=truncated_ok)
    if isinstance(new, list):
        return (
            isinstance(known, list)
            and len(new) == len(known)
            and all(
                _same(a, b, ignore=ignore, truncated_ok=truncated_ok) for a, b in zip(new, known, strict=True)
            )
        )
    if _empty(new) or _empty(known) or isinstance(known, (MappingABC, list)):
        return False
    a, b = _number(new), _number(known)
    if a is not None and b is not None:
        return a == b
    left, right = str(new).strip().casefold(), str(known).strip().casefold()
    if left == right:
        return True
    # M3 keeps the first N characters of a longer BNG text (CUNM is 36 long): the same value.
    return truncated_ok and len(left) < len(right) and right.startswith(left)


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == {} or value == []


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        return Decimal(str(value))
    text = str(value).strip()
    if not text or not (text[0].isdigit() or text[0] in "+-."):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def merged(known: MappingABC[str, Any] | None, written: MappingABC[str, Any]) -> dict[str, Any]:
    """The state after a partial write (PATCH) or an upsert: nested objects merged."""
    result: dict[str, Any] = dict(known or {})
    for name, value in written.items():
        old = result.get(name)
        result[name] = (
            merged(old, value) if isinstance(value, MappingABC) and isinstance(old, MappingABC) else value
        )
    return result


def guarded(flow: MappedFlow, mappings: FlowMappings, mapping: Mapping) -> Flow:
    """A BNG → M3 flow, with echo suppression when its mapping names ``echo_state``/``echo_id``.

    A webhook whose data BNG already held as far as m3bng knows (m3bng wrote it there from a
    BOD) is skipped; otherwise its data is recorded as what BNG holds, before the flow runs.
    With ``skip_stale``, a change older than the last one applied to the object is skipped.
    """
    state, id_field = mapping.option("echo_state"), mapping.option("echo_id")
    skip_stale = bool(mapping.option("skip_stale", False))
    # A new order is never an echo (m3bng creates no orders in BNG), and a re-sent one is caught
    # by the cross-reference; its data is still recorded, for the order.updated that follows.
    check = not mapping.option("echo_record_only", False)

    ignore = split_names(mapping.option("echo_ignore"))
    anomalies = mapping.spec.anomalies

    async def run(ctx: FlowContext) -> None:
        if skip_stale:
            await skip_if_stale(ctx)
        if state and id_field:
            await skip_if_echo(ctx, str(state), str(id_field), ignore=ignore, check=check)
        if anomalies is not None:  # after the skips: a skipped event sends nothing anyway
            await hold_if_anomalous(ctx, mapping.flow, anomalies)
        await flow(ctx, mappings.for_instance(ctx.connectors.instance))
        if skip_stale:
            record_version(ctx)  # applied: only now does it make older changes stale

    run.__name__ = run.__qualname__ = getattr(flow, "__name__", "flow")
    return run


async def skip_if_echo(ctx: FlowContext, state: str, id_field: str, *, ignore: set[str], check: bool) -> None:
    """Skip a webhook whose data BNG already held as far as m3bng knows (m3bng wrote it there
    from a BOD); otherwise record its data as what BNG holds, stored with the flow's first
    write (before its first call that changes M3)."""
    data = ctx.payload.get("data") if isinstance(ctx.payload, dict) else None
    bng_id = data.get(id_field) if isinstance(data, dict) else None
    if bng_id is None or not isinstance(data, dict):
        return
    if check:  # a record-only mapping (order.created) never reads what it would not compare
        async with single_statement(ctx.sessions) as session:
            known = await documents.get_bng_state(
                session, state, str(bng_id), not_from_event=ctx.event.id, instance=ctx.event.instance
            )
        if is_echo(data, known, ignore=ignore, truncated_ok=False):
            raise Skipped(
                f"echo: {state} {bng_id} holds nothing m3bng did not already know (BNG announcing "
                "m3bng's own write, or an update that changes nothing)",
                error_class="echo",
            )
    # What BNG holds is a fact the webhook states, whatever M3 then does with it; recorded
    # first, so that M3's BOD for this change is recognised even if it overtakes this flow.
    ctx.defer(
        documents.deferred_bng_state(
            state, str(bng_id), data, origin="bng", event_id=ctx.event.id, instance=ctx.event.instance
        )
    )


STALE_NOUN = "bng"  # document_versions rows of BNG objects, keyed by the event's business key


def _version_of(ctx: FlowContext) -> tuple[str, datetime] | None:
    key = ctx.event.business_key
    if key is not None and ctx.event.instance != DEFAULT_INSTANCE:
        key = f"{ctx.event.instance}/{key}"  # per instance; the default keeps its keys as they were
    when = _timestamp(ctx.payload.get("timestamp") if isinstance(ctx.payload, dict) else None)
    return None if key is None or when is None else (key, when)


async def skip_if_stale(ctx: FlowContext) -> None:
    """A webhook about an object older than the last one applied to it is skipped, not applied
    over newer data (mapping option ``skip_stale``: for events that carry the object's whole
    state, such as customer.updated; never for deltas such as inventory.adjusted).

    BNG retries a failed delivery later, after newer changes of the object may have gone
    through; events of one business key run in arrival order, so arrival alone cannot tell. The
    webhook body's ``timestamp`` (when the change happened) can: the newest applied per key is
    kept in ``document_versions`` and stored with the event's outcome. Equal times apply in
    arrival order; an event without a timestamp is always applied.
    """
    version = _version_of(ctx)
    if version is None:
        return
    key, when = version
    async with single_statement(ctx.sessions) as session:
        applied = await documents.get_document_version(session, STALE_NOUN, key)
    if applied is not None and applied.created_at is not None and when < applied.created_at:
        raise Skipped(
            f"stale: {key} changed at {when.isoformat()}, but a change of "
            f"{applied.created_at.isoformat()} was applied already (event {applied.event_id}); "
            "not applied over newer data",
            error_class="stale",
        )


def record_version(ctx: FlowContext) -> None:
    """Stored with the event's outcome (done), after everything the flow wrote."""
    version = _version_of(ctx)
    if version is not None:
        key, when = version
        ctx.defer(
            documents.deferred_document_version(
                STALE_NOUN, key, variation_id=None, created_at=when, event_id=ctx.event.id
            )
        )


def _timestamp(value: Any) -> datetime | None:
    return iso_utc(value) if isinstance(value, str) and value else None
