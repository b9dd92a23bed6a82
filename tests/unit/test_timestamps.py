"""One reading of ISO 8601 text for ops filters and the staleness check of webhooks."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from m3bng.timestamps import iso_utc


@pytest.mark.parametrize(
    "text",
    ["2026-11-24T10:00:00Z", "2026-11-24T10:00:00z", "2026-11-24T10:00:00", "2026-11-24T11:00:00+01:00"],
)
def test_every_spelling_of_one_moment_is_the_same_utc_time(text: str) -> None:
    moment = iso_utc(text)
    assert moment == datetime(2026, 11, 24, 10, tzinfo=UTC) and moment.tzinfo is UTC


@pytest.mark.parametrize("text", ["", "Z", "yesterday", "2026-13-01", "2026-11-24T25:00"])
def test_what_is_not_iso_8601_is_none(text: str) -> None:
    assert iso_utc(text) is None
