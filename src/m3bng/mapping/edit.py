"""Edits of a mapping's YAML made by the studio's forms, written into the text itself.

Why edit the text and not the parsed model: the YAML stays the mapping's format (it is what
``m3bng mappings export`` writes for git and what a reviewer reads), so a form edit must show in
the YAML view as the same one-line change a person would have typed, with every comment, the
key order and the quoting of the rest of the file untouched. ruamel.yaml's round-trip mode keeps
all of that; PyYAML would drop the comments that explain why a rule is what it is.

Each edit returns the new text only; whether the whole mapping still loads (unknown vars,
lookups, paths) is decided by the loader, as for a text typed by hand.
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Mapping as MappingABC
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from m3bng.errors import FieldInvalid
from m3bng.mapping.schema import CallSpec, FieldRule, Scalar

# The modifiers of a rule in the order the mapping files write them (schema.FieldRule).
RULE_KEYS = (
    "from",
    "value",
    "var",
    "concat",
    "sep",
    "lookup",
    "when",
    "else",
    "default",
    "type",
    "date_input",
    "upper",
    "lower",
    "truncate",
    "max_length",
    "required",
)
_EMPTY_WHEN_FALSE = {"upper", "lower", "truncate", "required"}


class EditError(FieldInvalid):
    """An edit that cannot be made: the message names the part of the edit at fault."""

    code = "invalid_edit"


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # a rule stays on its line, as the files write them
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _load(text: str) -> CommentedMap:
    try:
        document = _yaml().load(text)
    except YAMLError as exc:
        raise EditError("text", f"not YAML the studio can edit: {exc}".splitlines()[0][:300]) from None
    if not isinstance(document, CommentedMap):
        raise EditError("text", "the mapping is not a YAML mapping (key: value) at the top")
    return document


def _dump(document: CommentedMap) -> str:
    out = io.StringIO()
    _yaml().dump(document, out)
    return out.getvalue()


def _splice(original: str, edited: str) -> str:
    """The edited dump with every line the edit did not touch taken from ``original``.

    ruamel.yaml re-emits a few constructs in another (equivalent) spelling, such as
    ``[{value: "GL"}, EntryID]`` as ``[value: "GL", EntryID]``; a form edit must change its own
    line and nothing else. Lines are matched against an unedited round trip of the original.
    """
    baseline = _dump(_load(original)).splitlines(keepends=True)
    before = original.splitlines(keepends=True)
    if len(baseline) != len(before):
        return edited  # the round trip moved lines: no line-to-line map to take them back by
    after = edited.splitlines(keepends=True)
    out: list[str] = []
    matcher = difflib.SequenceMatcher(a=baseline, b=after, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        out.extend(before[i1:i2] if tag == "equal" else after[j1:j2])
    return "".join(out)


def _flow_map(value: Any) -> Any:
    """Nested maps in flow style (``{from: X, default: {var: warehouse}}``), as the files write a rule."""
    if isinstance(value, dict):
        out = CommentedMap()
        for key, item in value.items():
            out[key] = _flow_map(item)
        out.fa.set_flow_style()
        return out
    if isinstance(value, list):
        return [_flow_map(item) for item in value]
    return value


def tidy_rule(rule: MappingABC[str, Any]) -> dict[str, Any]:
    """A rule as a form sends it, reduced to what a person would write: empty and false
    modifiers dropped, keys in the files' order, and checked against the rule schema so a bad
    rule is refused naming its part rather than as a line of the whole file."""
    unknown = sorted(set(rule) - set(RULE_KEYS))
    if unknown:
        raise EditError("rule", f"unknown key {unknown[0]!r} (a rule takes {', '.join(RULE_KEYS)})")
    out: dict[str, Any] = {}
    for key in RULE_KEYS:
        value = rule.get(key)
        if value is None or value == "" or value == [] or (key in _EMPTY_WHEN_FALSE and value is False):
            continue
        if isinstance(value, dict):
            value = tidy_rule(value) if key not in ("when",) else value
        out[key] = value
    try:
        FieldRule.model_validate(out)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "rule"
        raise EditError(f"rule.{where}" if where != "rule" else "rule", first["msg"]) from None
    return out


def set_field(text: str, call: str, field: str, rule: MappingABC[str, Any] | None) -> str:
    """``text`` with the rule of ``calls.<call>.fields.<field>`` replaced (in place, keeping its
    position and comments), added at the end of the call's fields, or removed (``rule`` None)."""
    document = _load(text)
    calls = document.get("calls")
    if not isinstance(calls, CommentedMap) or call not in calls:
        known = ", ".join(calls) if isinstance(calls, CommentedMap) else "none"
        raise EditError("call", f"the mapping has no call {call!r} (calls: {known})")
    spec = calls[call]
    if not isinstance(spec, CommentedMap):
        raise EditError("call", f"call {call!r} is not a mapping")
    if "program" in spec:  # an M3 call: its field names are checked as the loader would
        try:
            CallSpec._m3_names({field: FieldRule(value="x")})
        except ValueError as exc:
            raise EditError("field", str(exc)) from None
    fields = spec.get("fields")
    if rule is None:
        if not isinstance(fields, CommentedMap) or field not in fields:
            raise EditError("field", f"call {call!r} has no field {field!r} to remove")
        del fields[field]
        return _splice(text, _dump(document))
    tidy = tidy_rule(rule)
    if fields is None:
        fields = CommentedMap()
        spec["fields"] = fields
    if not isinstance(fields, CommentedMap):
        raise EditError("call", f"the fields of call {call!r} are not a mapping")
    fields[field] = _flow_map(tidy)
    return _splice(text, _dump(document))


def set_var(text: str, name: str, value: Scalar) -> str:
    """``text`` with ``vars.<name>`` set: the tenant values (warehouse, order type) rules name."""
    if not name.isidentifier():
        raise EditError("var", f"{name[:40]!r} is not a var name (letters, digits, _)")
    if isinstance(value, str) and not value:
        raise EditError("value", "a var needs a value")
    document = _load(text)
    variables = document.get("vars")
    if variables is None:
        variables = CommentedMap()
        document["vars"] = variables
    if not isinstance(variables, CommentedMap):
        raise EditError("vars", "vars is not a mapping")
    variables[name] = value
    return _splice(text, _dump(document))
