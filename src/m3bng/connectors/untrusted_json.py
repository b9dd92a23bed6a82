"""JSON from outside (webhook bodies, IMS ParameterRequests), parsed so that whatever is accepted
can also be stored, and whatever is refused is refused with a 4xx naming the place.

Why not plain ``json.loads``: it accepts, or fails on, things the hostile-input suite
(tests/security/) showed to end in a stored-but-broken event or a 500 after the signature had
already been accepted:

* ``NaN``, ``Infinity`` and numbers such as ``1e400`` (parsed as ``inf``): written back as
  ``NaN``/``Infinity``, which is not JSON; PostgreSQL's ``jsonb`` refuses it (500) and SQLite
  stores it as text no JSON reader takes.
* integers longer than Python's conversion limit raise ``ValueError`` (not ``JSONDecodeError``),
  and nesting deeper than the recursion limit raises ``RecursionError``: both were 500s. Nesting
  beyond :data:`MAX_DEPTH` is refused too: no real event comes close, and the masking walk of
  the logs and the ops API stops there (``ops.masking.MAX_DEPTH``).
* ``\\u0000`` in a string or key: PostgreSQL refuses it in ``jsonb`` and in text columns.
* lone surrogates (``"\\ud800"``): not UTF-8 at all; the database drivers fail on them.
* duplicate keys: ``json`` silently keeps the last one, while the sender, or any other reader of
  the stored body, may take the first. Refused, so what was signed has one meaning.
* bodies that are not UTF-8 (JSON is UTF-8, RFC 8259); a UTF-8 BOM is tolerated.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterator
from typing import Any

from m3bng.errors import Malformed

MAX_DEPTH = 64  # containers inside containers; the same bound as ops.masking.MAX_DEPTH
MAX_INT_DIGITS = 100  # no amount, quantity or id has more; Python itself stops at 4300


class UntrustedJsonError(Malformed, ValueError):
    """Refused JSON; the message names the place: ``data.Lines.0.Quantity: number out of range``.

    ``field`` is the dotted path of the offending value, None for a problem of the document as a
    whole; ``syntax`` is true when the text is not JSON at all (not UTF-8, empty, malformed).
    """

    code = "invalid_json"

    def __init__(self, message: str, *, field: str | None = None, syntax: bool = False) -> None:
        super().__init__(message)
        self.field, self.syntax = field, syntax


class _Duplicates(dict[str, Any]):
    """An object in which a key occurred twice (reported, with its path, by the walk)."""

    duplicate = ""


class _HugeInt:
    def __init__(self, digits: int) -> None:
        self.digits = digits


class _Marks(threading.local):
    """Whether the parse in progress (in this thread) met something the walk must find."""

    marked = False


_marks = _Marks()


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    _marks.marked = True
    marked = _Duplicates(pairs)
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            marked.duplicate = key
            break
        seen.add(key)
    return marked


def _integer(text: str) -> int | _HugeInt:
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        _marks.marked = True
        return _HugeInt(digits)
    return int(text)


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        _marks.marked = True
    return value


def _constant(text: str) -> float:  # NaN, Infinity, -Infinity
    _marks.marked = True
    return float(text)


# Built once: json.loads with hooks builds a decoder and its scanner on every call. The hooks
# mark what the walk must find; dict() builds each object, and a length that differs from the
# number of pairs is a repeated key.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_int=_integer, parse_float=_number, parse_constant=_constant
)


# Only escapes can put NUL or a lone surrogate into a decoded string: raw control characters are
# refused by json itself, and surrogate bytes by the UTF-8 decoder.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "NUL character (\\u0000) in a string; no store can keep it"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "lone surrogate (\\ud800-\\udfff) in a string: not valid Unicode"
    return None


def _problem(item: Any, max_depth: int, depth: int) -> str | None:
    if isinstance(item, (dict, list)):
        if depth >= max_depth:
            return f"nested deeper than {max_depth} levels"
        return None
    if isinstance(item, str):
        return _text_problem(item)
    if isinstance(item, _HugeInt):
        return f"number out of range: an integer of {item.digits} digits (at most {MAX_INT_DIGITS})"
    if isinstance(item, float) and not math.isfinite(item):
        return f"number out of range ({item}): JSON numbers must be finite"
    return None


Entry = tuple[str | int | None, str, Any]  # (key or index, the parent's path, the value)


def _children(item: dict[str, Any] | list[Any], path: str) -> Iterator[Entry]:
    if isinstance(item, dict):
        return ((key, path, child) for key, child in item.items())
    return ((n, path, child) for n, child in enumerate(item))


def problem_in(value: Any, *, name: str = "body", max_depth: int = MAX_DEPTH) -> UntrustedJsonError | None:
    """The first value in a parsed JSON document that cannot be stored as it is, or None.

    Paths are relative to the document, which is called ``name`` when the problem is the
    document itself. Also used on JSON that FastAPI has already parsed (edited payloads). The
    walk keeps one iterator per level, so it costs no memory proportional to the document."""
    stack: list[Iterator[Entry]] = [iter([(None, "", value)])]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        label, parent, item = entry
        key_problem = _text_problem(label) if isinstance(label, str) else None
        if key_problem is not None:
            return UntrustedJsonError(f"{parent or name}: key {label!r}: {key_problem}", field=parent or None)
        path = parent if label is None else _join(parent, label)
        if isinstance(item, _Duplicates):
            where = _join(path, item.duplicate)
            return UntrustedJsonError(f"{where}: duplicate key (the object holds it twice)", field=where)
        problem = _problem(item, max_depth, len(stack) - 1)
        if problem is not None:
            return UntrustedJsonError(f"{path or name}: {problem}", field=path or None)
        if isinstance(item, (dict, list)):
            stack.append(_children(item, path))
    return None


def parse_json(raw: bytes, *, name: str = "body", max_depth: int = MAX_DEPTH) -> Any:
    """Parse untrusted JSON bytes (see the module docstring) or raise ``UntrustedJsonError``;
    ``name`` is what the messages call the document (``body is not valid UTF-8: …``)."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UntrustedJsonError(
            f"{name} is not valid JSON: not valid UTF-8 ({exc.reason} at byte {exc.start})", syntax=True
        ) from None
    if not text.strip():
        raise UntrustedJsonError(f"{name} is empty: expected a JSON object", syntax=True)
    _marks.marked = False
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise UntrustedJsonError(f"{name}: nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise UntrustedJsonError(f"{name} is not valid JSON: {exc}", syntax=True) from None
    # The walk names the place; it is needed only when something may be there to name (an
    # ordinary event has nothing marked, no suspect escape and fewer brackets than MAX_DEPTH).
    if _marks.marked or _SUSPECT_ESCAPE.search(raw) or raw.count(b"{") + raw.count(b"[") > max_depth:
        problem = problem_in(value, name=name, max_depth=max_depth)
        if problem is not None:
            raise problem
    return value
