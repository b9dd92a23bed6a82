"""Evaluating field rules: event data in, the exact MI record out.

Rendering is pure (no I/O): the same mapping and payload always give the same record, which is
what makes ``m3bng mappings preview`` trustworthy and replays from the start reproducible.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jmespath
import jmespath.visitor
from jmespath.exceptions import JMESPathError

from m3bng.errors import PermanentError
from m3bng.mapping.schema import BngCallSpec, CallSpec, FieldRule, MappingSpec


class MappingError(PermanentError):
    """The payload cannot be mapped (a required value is missing, a lookup has no entry...)."""

    error_class = "mapping"

    def __init__(self, flow: str, call: str, field_name: str, problem: str) -> None:
        super().__init__(f"mapping {flow}/{call}, field {field_name}: {problem}")
        self.flow, self.call, self.field, self.problem = flow, call, field_name, problem


@dataclass(frozen=True)
class CallPreview:
    name: str
    target: str  # m3 or bng
    operation: str  # OIS100MI/AddBatchHead, or PUT /api/v1/customers/{CustomerID}
    record: dict[str, Any]  # the MI record, or the JSON body
    note: str | None = None  # why the call is skipped or cannot be shown on its own


@dataclass(frozen=True)
class BngRequest:
    """One rendered request to BNG: the path with its parameters filled in, and the body."""

    method: str
    path: str
    body: dict[str, Any] | None


class Placeholders(dict[str, Any]):
    """Preview context: a value only a running flow can know (a new ORNO) shows as ``<ORNO>``."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key, f"<{key}>")


_compiled: dict[str, Any] = {}


def compile_path(expression: str) -> Any:
    """Compile (and cache) a JMESPath expression; raises JMESPathError on bad syntax."""
    parsed = _compiled.get(expression)
    if parsed is None:
        parsed = jmespath.compile(expression)
        _compiled[expression] = parsed
    return parsed


_interpreter = jmespath.visitor.TreeInterpreter()  # stateless between searches (but a cache)
_searchers: dict[str, Callable[[Any], Any]] = {}


def _is_false(value: Any) -> bool:
    """JMESPath's false (its ``||`` takes the right side): its interpreter's test, verbatim."""
    return value == "" or value == [] or value == {} or value is None or value is False


def _node_searcher(node: Any) -> Callable[[Any], Any]:
    """A parsed JMESPath node as a Python function, for the nodes a mapping's rules are made of
    (names, ``a.b``, ``a[0]``, ``a || b``), each a copy of what JMESPath's interpreter does with
    it (``visit_field``, ``visit_subexpression``, ``visit_index_expression``, ``visit_index``,
    ``visit_or_expression``); any other node is the interpreter's. A third of the interpreter's
    time, which builds an interpreter per search and dispatches every node by name."""
    kind = node["type"]
    if kind == "field":
        name = node["value"]

        def field(value: Any) -> Any:
            try:
                return value.get(name)
            except AttributeError:
                return None

        return field
    if kind in ("subexpression", "index_expression"):
        steps = [_node_searcher(child) for child in node["children"]]

        def chain(value: Any) -> Any:
            for step in steps:
                value = step(value)
            return value

        return chain
    if kind == "index":
        index = node["value"]

        def at(value: Any) -> Any:
            if not isinstance(value, list):
                return None
            try:
                return value[index]
            except IndexError:
                return None

        return at
    if kind == "or_expression":
        left, right = (_node_searcher(child) for child in node["children"])

        def either(value: Any) -> Any:
            matched = left(value)
            return right(value) if _is_false(matched) else matched

        return either
    return lambda value: _interpreter.visit(node, value)


def _search(expression: str, document: Any) -> Any:
    search = _searchers.get(expression)
    if search is None:
        search = _searchers[expression] = _node_searcher(compile_path(expression).parsed)
    return search(document)


@dataclass
class Mapping:
    spec: MappingSpec
    path: Path
    content_hash: str
    tables: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def flow(self) -> str:
        return self.spec.flow

    def with_vars(self, overrides: MappingABC[str, Any]) -> Mapping:
        """This mapping with a BNG instance's values for the ``vars`` it declares (instances.py:
        warehouse, order type … per instance); itself when none differ. Vars the mapping does
        not declare are not added: an instance's vars serve all of its mappings."""
        changed = {k: v for k, v in overrides.items() if k in self.spec.vars and self.spec.vars[k] != v}
        if not changed:
            return self
        spec = self.spec.model_copy(update={"vars": {**self.spec.vars, **changed}})
        return Mapping(spec=spec, path=self.path, content_hash=self.content_hash, tables=self.tables)

    def _any_call(self, name: str) -> CallSpec | BngCallSpec:
        try:
            return self.spec.calls[name]
        except KeyError:
            raise MappingError(
                self.flow, name, "-", f"the mapping file {self.path.name} has no call {name!r}"
            ) from None

    def call(self, name: str) -> CallSpec:
        """An MI call (program/transaction)."""
        spec = self._any_call(name)
        if not isinstance(spec, CallSpec):
            raise MappingError(self.flow, name, "-", "is a BNG request (method/path), not an MI call")
        return spec

    def bng_call(self, name: str) -> BngCallSpec:
        """A BNG REST request (method/path)."""
        spec = self._any_call(name)
        if not isinstance(spec, BngCallSpec):
            raise MappingError(self.flow, name, "-", "is an MI call (program/transaction), not a BNG request")
        return spec

    def has_call(self, name: str) -> bool:
        return name in self.spec.calls

    def requests(
        self, name: str, data: MappingABC[str, Any], ctx: MappingABC[str, Any] | None = None
    ) -> list[BngRequest]:
        """The BNG requests call ``name`` makes: one, or one per element of ``for_each``."""
        spec = self.bng_call(name)
        return [
            render_request(self, name, spec, document) for document in self._documents(name, spec, data, ctx)
        ]

    def _documents(
        self,
        name: str,
        spec: CallSpec | BngCallSpec,
        data: MappingABC[str, Any],
        ctx: MappingABC[str, Any] | None,
    ) -> list[dict[str, Any]]:
        """What the rules of one call see: the event, ``_ctx``, ``_vars``, and ``_line`` per element."""
        context = ctx if isinstance(ctx, Placeholders) else dict(ctx or {})
        base = {**data, "_ctx": context, "_vars": dict(self.spec.vars)}
        if spec.for_each is None:
            return [base]
        items = _search(spec.for_each, base)
        if not isinstance(items, list) or not items:
            raise MappingError(self.flow, name, "for_each", f"{spec.for_each!r} gives no list of elements")
        return [
            {**base, "_line": item, "_index": index, "_number": index + 1} for index, item in enumerate(items)
        ]

    def render(
        self,
        name: str,
        data: MappingABC[str, Any],
        ctx: MappingABC[str, Any] | None = None,
        *,
        field_lengths: MappingABC[str, int] | None = None,
    ) -> list[dict[str, str]]:
        """The records call ``name`` sends: one, or one per element of ``for_each``."""
        spec = self.call(name)
        return [
            render_call(self, name, spec, document, field_lengths)
            for document in self._documents(name, spec, data, ctx)
        ]

    def key(self, name: str, data: MappingABC[str, Any], ctx: MappingABC[str, Any] | None = None) -> str:
        """The M3 key ``name`` (``keys:`` section) a new object gets; a required value."""
        rule = self.spec.keys.get(name)
        if rule is None:
            raise MappingError(
                self.flow, "keys", name, f"the mapping file {self.path.name} defines no key {name!r}"
            )
        document = {**data, "_ctx": dict(ctx or {}), "_vars": dict(self.spec.vars)}
        where = (self.flow, "keys", name)
        text = _finish(self, rule, _evaluate(self, rule, document, where), where, None)
        if text is None:
            raise MappingError(*where, "the key rule gives no value")
        return text

    def applicable_calls(
        self, data: MappingABC[str, Any], ctx: MappingABC[str, Any] | None = None
    ) -> list[str]:
        """The calls whose ``if`` condition holds for this event, in file order."""
        document = {**data, "_ctx": dict(ctx or {}), "_vars": dict(self.spec.vars)}
        return [
            name
            for name, call in self.spec.calls.items()
            if call.if_ and _truthy(_search(call.if_, document))
        ]

    def option(self, name: str, default: Any = None) -> Any:
        return self.spec.options.get(name, default)

    def preview(
        self, data: MappingABC[str, Any], ctx: MappingABC[str, Any] | None = None
    ) -> list[CallPreview]:
        """Every call of the mapping rendered in file order (``m3bng mappings preview``).

        Keys come from the ``keys`` rules, values only a running flow obtains show as
        placeholders, and a call that still cannot be rendered on its own (it needs data the
        flow computes) carries a note instead of hiding the other calls.
        """
        context = Placeholders(ctx or {})
        for name in self.spec.keys:
            with contextlib.suppress(MappingError):
                context.setdefault(name, self.key(name, data, context))
        applicable = set(self.applicable_calls(data, context))
        out: list[CallPreview] = []
        for name, spec in self.spec.calls.items():
            if isinstance(spec, BngCallSpec):
                target, operation = "bng", f"{spec.method} {spec.path}"
            else:
                target, operation = "m3", f"{spec.program}/{spec.transaction}"
            if spec.if_ and name not in applicable:
                out.append(CallPreview(name, target, operation, {}, f"skipped: {spec.if_} is false"))
                continue
            try:
                if isinstance(spec, BngCallSpec):
                    previews = [
                        CallPreview(name, target, f"{r.method} {r.path}", r.body or {})
                        for r in self.requests(name, data, context)
                    ]
                else:
                    previews = [
                        CallPreview(name, target, operation, record)
                        for record in self.render(name, data, context)
                    ]
            except MappingError as exc:
                out.append(CallPreview(name, target, operation, {}, f"not shown: {exc.problem}"))
                continue
            out.extend(previews)
        return out


def render_call(
    mapping: Mapping,
    name: str,
    spec: CallSpec,
    document: dict[str, Any],
    field_lengths: MappingABC[str, int] | None = None,
) -> dict[str, str]:
    record: dict[str, str] = {}
    for field_name, rule in spec.fields.items():
        where = (mapping.flow, name, field_name)
        value = _evaluate(mapping, rule, document, where)
        text = _finish(mapping, rule, value, where, (field_lengths or {}).get(field_name))
        if text is not None:
            record[field_name] = text
    return record


def render_request(mapping: Mapping, name: str, spec: BngCallSpec, document: dict[str, Any]) -> BngRequest:
    """A BNG request: JSON-typed body values (numbers stay numbers, dates are ISO), nested by dots."""
    path = spec.path
    for param, rule in spec.params.items():
        where = (mapping.flow, name, f"params.{param}")
        text = _finish(mapping, rule, _evaluate(mapping, rule, document, where), where, None)
        if text is None:
            raise MappingError(*where, "a path parameter needs a value")
        path = path.replace("{" + param + "}", quote(text, safe=""))
    body: dict[str, Any] = {}
    for field_name, rule in spec.fields.items():
        where = (mapping.flow, name, field_name)
        value = _json_value(mapping, rule, _evaluate(mapping, rule, document, where), where)
        if value is None:
            continue
        target = body
        *parents, leaf = field_name.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return BngRequest(spec.method, path, body if spec.method != "GET" else None)


def _json_value(mapping: Mapping, rule: FieldRule, value: Any, where: tuple[str, str, str]) -> Any:
    """A body value: the same modifiers as an MI field, but typed for JSON instead of text."""
    if value in (None, "") or rule.type in (None, "str"):
        if isinstance(value, (dict, list)):
            return value  # whole objects/lists may pass through to JSON unchanged
        return _finish(mapping, rule, value, where, None)
    if rule.type == "date":
        text = _to_date(rule, value, where)
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    text = _convert(rule, value, where)
    if rule.type == "int":
        return int(text)
    if rule.type == "decimal":
        number = Decimal(text)
        return int(number) if number == number.to_integral_value() else float(number)
    return text == "1"  # bool


def _evaluate(mapping: Mapping, rule: FieldRule | str, document: Any, where: tuple[str, str, str]) -> Any:
    if isinstance(rule, str):
        return _search(rule, document)
    if rule.lookup is not None:
        assert rule.from_ is not None
        key = _search(rule.from_, document)
        value: Any = None if key is None else mapping.tables[rule.lookup].get(str(key))
    elif rule.from_ is not None:
        value = _search(rule.from_, document)
    elif rule.value is not None:
        value = rule.value
    elif rule.var is not None:
        value = mapping.spec.vars[rule.var]
    elif rule.concat is not None:
        parts = [_part(mapping, part, document, where) for part in rule.concat]
        value = rule.sep.join(str(p) for p in parts if p not in (None, "")) or None
    else:
        value = None
        for case in rule.when or []:
            if _truthy(_search(case.if_, document)):
                value = _evaluate(mapping, case.then, document, where)
                break
        else:
            if rule.else_ is not None:
                value = _evaluate(mapping, rule.else_, document, where)
    if value in (None, "") and rule.default is not None:
        default = rule.default
        value = _evaluate(mapping, default, document, where) if isinstance(default, FieldRule) else default
    if rule.lookup is not None and value in (None, ""):
        key = _search(rule.from_ or "", document)
        if key not in (None, "") and rule.required:
            raise MappingError(*where, f"lookup table {rule.lookup!r} has no entry for {key!r}")
    return value


def _part(mapping: Mapping, part: FieldRule | str, document: Any, where: tuple[str, str, str]) -> Any:
    """A concat part, converted when it names a type (a date inside a PARM string is yyyyMMdd too)."""
    value = _evaluate(mapping, part, document, where)
    if isinstance(part, FieldRule) and part.type is not None and value not in (None, ""):
        return _convert(part, value, where)
    return value


def _truthy(value: Any) -> bool:
    return value not in (None, False, "", [], {}, 0)


def _finish(
    mapping: Mapping, rule: FieldRule, value: Any, where: tuple[str, str, str], m3_length: int | None
) -> str | None:
    if value in (None, ""):
        if rule.required:
            source = rule.from_ or rule.var or "the rule"
            raise MappingError(*where, f"a value is required but {source!r} gives none")
        return None
    text = _convert(rule, value, where)
    if rule.upper:
        text = text.upper()
    elif rule.lower:
        text = text.lower()
    if rule.truncate is not False:
        limit = m3_length if rule.truncate is True else int(rule.truncate)
        if limit:
            text = text[:limit]
    limit = rule.max_length or (m3_length if rule.truncate is False else None)
    if limit is not None and len(text) > limit:
        raise MappingError(*where, f"{len(text)} characters; at most {limit} allowed (set truncate to cut)")
    return text


def _convert(rule: FieldRule, value: Any, where: tuple[str, str, str]) -> str:
    kind = rule.type
    if kind == "date" or (kind is None and isinstance(value, (date, datetime))):
        return _to_date(rule, value, where)
    if kind == "decimal" or (kind is None and isinstance(value, (float, Decimal))):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise MappingError(*where, f"{value!r} is not a number") from None
        text = format(number.normalize(), "f")
        return "0" if text in ("-0", "") else text
    if kind == "int":
        try:
            return str(int(Decimal(str(value).strip())))
        except (InvalidOperation, ValueError):
            raise MappingError(*where, f"{value!r} is not a whole number") from None
    if kind == "bool" or isinstance(value, bool):
        return "1" if _truthy(value) and str(value).lower() not in ("false", "no", "0") else "0"
    if isinstance(value, (dict, list)):
        raise MappingError(*where, "the path gives an object or list, not a value (pick a field inside it)")
    return str(value)


def _to_date(rule: FieldRule, value: Any, where: tuple[str, str, str]) -> str:
    if isinstance(value, datetime | date):
        return value.strftime("%Y%m%d")
    text = str(value).strip()
    try:
        if rule.date_input:
            parsed = datetime.strptime(text, rule.date_input)
        elif len(text) == 8 and text.isdigit():
            parsed = datetime.strptime(text, "%Y%m%d")
        else:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        expected = rule.date_input or "an ISO date (2026-11-24) or yyyyMMdd"
        raise MappingError(*where, f"{text!r} is not a date; expected {expected}") from None
    return parsed.strftime("%Y%m%d")


__all__ = ["BngRequest", "CallPreview", "JMESPathError", "Mapping", "MappingError", "compile_path"]
