"""untrusted_json: what JSON from outside may hold, and how a refusal names the place."""

from __future__ import annotations

import json
import math

import pytest

from m3bng.connectors.untrusted_json import MAX_DEPTH, UntrustedJsonError, parse_json, problem_in


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a": [1, {"b": 1e400}]}', "a.1.b: number out of range (inf)"),
        (b'{"a": -Infinity}', "a: number out of range (-inf)"),
        (b'{"a": [NaN]}', "a.0: number out of range (nan)"),
        (b'{"n": ' + b"9" * 101 + b"}", "n: number out of range: an integer of 101 digits (at most 100)"),
        (b'{"x": {"a": 1, "a": 2}}', "x.a: duplicate key (the object holds it twice)"),
        (b'{"d": {"x": "a\\u0000"}}', "d.x: NUL character"),
        (b'{"d": {"k\\u0000": 1}}', "d: key 'k\\x00': NUL character"),
        (b'{"s": "\\uDBFF"}', "s: lone surrogate"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), f"nested deeper than {MAX_DEPTH} levels"),
        (b"[" * 100_000 + b"]" * 100_000, f"body: nested deeper than {MAX_DEPTH} levels"),
        (b'"\\u0000"', "body: NUL character"),
    ],
)
def test_refused_with_the_place_named(raw: bytes, message: str) -> None:
    with pytest.raises(UntrustedJsonError) as caught:
        parse_json(raw)
    assert message in str(caught.value)
    assert not caught.value.syntax


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "body is empty"),
        (b" \n", "body is empty"),
        (b'{"a": "\xff"}', "body is not valid JSON: not valid UTF-8 (invalid start byte at byte 7)"),
        (b'{"a": 1', "body is not valid JSON: Expecting"),
        ('{"a": 1}'.encode("utf-16"), "not valid UTF-8"),
    ],
)
def test_not_json_at_all(raw: bytes, message: str) -> None:
    with pytest.raises(UntrustedJsonError) as caught:
        parse_json(raw)
    assert message in str(caught.value) and caught.value.syntax


def test_what_is_accepted_comes_back_unchanged() -> None:
    value = {
        "emoji": "\U0001f6b2",
        "rtl": "\u202eabc",
        "combining": "e\u0301",
        "escaped_backslash_u": "\\u0000 is text here",
        "pair": "\U0001f600",  # json.dumps writes it as the escaped pair \\ud83d\\ude00
        "numbers": [0, -1, 1.5e300, 10**99],
        "deep": [[[[]]]],
    }
    raw = b"\xef\xbb\xbf" + json.dumps(value).encode()  # a UTF-8 BOM is tolerated
    assert parse_json(raw) == value
    limit = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert parse_json(limit) is not None


def test_problem_in_parsed_values() -> None:
    """The same rules for JSON FastAPI parsed (edited payloads of the ops API)."""
    assert problem_in({"a": ["ok", 1, None, True]}) is None
    found = problem_in({"a": [math.inf]}, name="payload")
    assert found is not None and str(found).startswith("a.0: number out of range")
    top = problem_in("a\x00", name="reason")
    assert top is not None and str(top).startswith("reason: NUL character")
