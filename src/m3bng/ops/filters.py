"""The one filter over events that the transaction list, the dead-letter list, bulk replay and
the CLI share, and the cursor that pages through its results.

Keeping it in one place means "the 37 dead letters the list shows" and "the 37 events a bulk
replay with the same filter replays" are the same set by construction. A filter is plain data
(``to_json``/``from_json``) because a bulk replay stores the filter it was started with; the
dataclass and the SQL it becomes live in ``m3bng.store.search`` (re-exported here), the errors
and the cursor the API hands out here.
"""

from __future__ import annotations

import base64
import binascii

from m3bng.errors import Invalid
from m3bng.store.search import EventFilter

__all__ = ["EventFilter", "FilterError", "decode_cursor", "encode_cursor"]


class FilterError(Invalid, ValueError):
    """A filter or cursor value that cannot be used; the message names the parameter
    (``name: problem``). Still a ValueError, as it was, for callers that catch one."""


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
