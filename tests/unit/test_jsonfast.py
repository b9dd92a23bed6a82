"""The fast JSON encoder writes what the standard library did, and falls back where it must."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from m3bng import jsonfast


def test_round_trips_like_the_standard_library() -> None:
    value = {"a": [1, 2.5, True, None], "ü": "Storgatan 1 – Göteborg", "nested": {"x": "y"}}
    assert json.loads(jsonfast.dumps(value)) == value
    assert jsonfast.loads(jsonfast.dumps(value)) == value


def test_integers_beyond_64_bits_still_encode() -> None:
    big = 10**30  # orjson refuses these; a BNG payload may carry one (validated elsewhere)
    assert json.loads(jsonfast.dumps({"n": big})) == {"n": big}


def test_integers_beyond_64_bits_read_back_exactly() -> None:
    # A stored payload is read back for a replay: a rounded number would reach M3.
    assert jsonfast.loads('{"n": 123456789012345678901234567890}') == {"n": 123456789012345678901234567890}


def test_values_json_cannot_hold_become_text() -> None:
    encoded = json.loads(
        jsonfast.dumps({"d": Decimal("1.50"), "t": datetime(2026, 12, 5, tzinfo=UTC), 3: "k"})
    )
    assert encoded == {"d": "1.50", "t": "2026-12-05T00:00:00+00:00", "3": "k"}
