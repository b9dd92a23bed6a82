"""JSON encoding for the hot paths: log lines, and the JSON columns (payloads, step requests and
answers) the store writes.

orjson where it can (several times faster than the standard library, and JSON encoding was a
tenth of an ingest's CPU and of a worker's log and step writes: docs/benchmarks.md); the
standard library for what orjson refuses (integers beyond 64 bits, which a BNG payload may
carry), so that nothing that encoded before fails now. Values JSON cannot hold are written as
their text, as the log renderer always did. Reading stays with the standard library (see loads).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_OPTIONS = orjson.OPT_NON_STR_KEYS


def dumps(value: Any, **_ignored: Any) -> str:
    """``value`` as compact JSON text (keyword arguments of ``json.dumps`` are accepted, unused)."""
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)


def loads(text: str | bytes) -> Any:
    """The standard library's parser: orjson reads an integer beyond 64 bits as a float, and
    would silently round a stored payload's number on the way back (a replay would send M3 a
    different value from the one BNG sent)."""
    return json.loads(text)
