"""ISO 8601 text from outside (ops filters, webhook bodies) as an aware UTC datetime.

One reading everywhere a time given as text is compared with stored times: ``Z`` accepted (Python
3.11's parser takes it, older spellings such as ``z`` too), no zone means UTC, offsets are
converted, so a filter and a staleness check never disagree on what a text means.
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(text: str) -> datetime | None:
    """``text`` as an aware UTC datetime, or None when it is not ISO 8601."""
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "zZ" else text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
