"""Echo suppression: a change m3bng wrote to one side must not come back as a change to apply.

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

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any


def split_names(option: Any) -> set[str]:
    """``echo_ignore: "M3CustomerNumber, UpdatedAt"`` → a set of field names."""
    return {part.strip() for part in str(option or "").split(",") if part.strip()}


def is_echo(
    new: Mapping[str, Any], known: Mapping[str, Any] | None, *, ignore: set[str], truncated_ok: bool
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
    if isinstance(new, Mapping):
        return isinstance(known, Mapping) and is_echo(new, known, ignore=ignore, truncated_ok=truncated_ok)
    if isinstance(new, list):
        return (
            isinstance(known, list)
            and len(new) == len(known)
            and all(
                _same(a, b, ignore=ignore, truncated_ok=truncated_ok) for a, b in zip(new, known, strict=True)
            )
        )
    if _empty(new) or _empty(known) or isinstance(known, (Mapping, list)):
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


def merged(known: Mapping[str, Any] | None, written: Mapping[str, Any]) -> dict[str, Any]:
    """The state after a partial write (PATCH) or an upsert: nested objects merged."""
    result: dict[str, Any] = dict(known or {})
    for name, value in written.items():
        old = result.get(name)
        result[name] = (
            merged(old, value) if isinstance(value, Mapping) and isinstance(old, Mapping) else value
        )
    return result
