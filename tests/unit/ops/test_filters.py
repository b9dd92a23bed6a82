"""EventFilter as stored data (bulk replay keeps the filter it started with), the keyset cursor,
and the timestamps the list endpoints accept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from m3bng.ops.filters import EventFilter, FilterError, decode_cursor, encode_cursor
from m3bng.ops.search import parse_timestamp
from m3bng.store.search import event_conditions


def test_filter_round_trips_through_json() -> None:
    full = EventFilter(
        status=("dead", "pending"),
        event_type=("order.created",),
        source="bng",
        since=datetime(2026, 11, 24, 10, 0, tzinfo=UTC),
        until=datetime(2026, 11, 25, 0, 0, tzinfo=timezone(timedelta(hours=1))),
        error_class="missing_reference",
        program="OIS100MI/Confirm",
        q="SO-1001",
        reason="permanent_error",
    )
    data = full.to_json()
    assert data["since"] == "2026-11-24T10:00:00+00:00"
    assert data["status"] == ["dead", "pending"]
    assert EventFilter.from_json(data) == full


def test_empty_filter_is_an_empty_object_and_back() -> None:
    assert EventFilter().to_json() == {}
    assert EventFilter.from_json({}) == EventFilter()
    assert event_conditions(EventFilter()) == []


def test_unknown_keys_in_stored_json_are_ignored() -> None:
    assert EventFilter.from_json({"status": ["dead"], "added_later": 1}) == EventFilter(status=("dead",))


def test_every_field_adds_one_condition() -> None:
    full = EventFilter(
        status=("dead",),
        event_type=("order.created",),
        source="bng",
        since=datetime(2026, 1, 1, tzinfo=UTC),
        until=datetime(2026, 2, 1, tzinfo=UTC),
        error_class="transient",
        program="OIS100MI",
        q="so-1",
        reason="no_flow",
    )
    assert len(event_conditions(full)) == 9


@pytest.mark.parametrize("last_id", [1, 42, 2**53])
def test_cursor_round_trip(last_id: int) -> None:
    cursor = encode_cursor(last_id)
    assert "=" not in cursor and str(last_id) not in cursor  # opaque, URL-safe
    assert decode_cursor(cursor) == last_id


@pytest.mark.parametrize("bad", ["garbage", "aWQ6", "aWQ6LTE", "eDox", "%%%", "aWQ6MTI"[:-1] + "!"])
def test_bad_cursors_name_the_parameter(bad: str) -> None:
    with pytest.raises(FilterError, match=r"^cursor: "):
        decode_cursor(bad)


def test_no_cursor_is_the_first_page() -> None:
    assert decode_cursor(None) is None and decode_cursor("") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-24T10:00:00Z", datetime(2026, 11, 24, 10, tzinfo=UTC)),
        ("2026-11-24T10:00:00z", datetime(2026, 11, 24, 10, tzinfo=UTC)),
        ("2026-11-24T11:00:00+01:00", datetime(2026, 11, 24, 10, tzinfo=UTC)),
        ("2026-11-24T10:00", datetime(2026, 11, 24, 10, tzinfo=UTC)),  # no zone: UTC
        ("2026-11-24", datetime(2026, 11, 24, tzinfo=UTC)),
        (" 2026-11-24 ", datetime(2026, 11, 24, tzinfo=UTC)),
    ],
)
def test_timestamps(text: str, expected: datetime) -> None:
    parsed = parse_timestamp("since", text)
    assert parsed == expected and parsed is not None and parsed.tzinfo is UTC


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "24/11/2026", "Z"])
def test_bad_timestamps_name_the_parameter(bad: str) -> None:
    with pytest.raises(FilterError, match=r"^until: .*ISO 8601"):
        parse_timestamp("until", bad)


def test_no_timestamp() -> None:
    assert parse_timestamp("since", None) is None and parse_timestamp("since", "  ") is None
