"""Reading mapping files: YAML (safe loader) → the strict schema, with file and line in errors.

A broken mapping must stop start-up with a message a person can act on, like
``mappings/order_to_cash.yaml:14: calls.head.fields.CUNO: a field rule needs exactly one of …``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from jmespath.exceptions import JMESPathError
from pydantic import ValidationError

from m3bng.errors import M3bngError
from m3bng.mapping.engine import Mapping, compile_path
from m3bng.mapping.schema import FieldRule, MappingSpec


class MappingFileError(M3bngError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _node_line(root: yaml.Node | None, loc: Iterable[Any]) -> int | None:
    """Follow a pydantic error location through the YAML node tree to a line number."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if getattr(k, "value", None) == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            match = node.value[key]
        else:
            match = None
        if match is None:
            break
        node = match
        line = node.start_mark.line + 1
    return line


# libyaml's parser where PyYAML was built with it (the wheels are): every process that starts
# (serve, worker, each ``m3bng sync``) parses every mapping twice, and the pure-Python parser
# took half a second of a command's start for the shipped ones (docs/benchmarks.md, initial load).
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path, raw: bytes | None = None) -> tuple[Any, yaml.Node | None, bytes]:
    raw = path.read_bytes() if raw is None else raw
    try:
        text = raw.decode("utf-8")
        # _LOADER is a safe loader (CSafeLoader or SafeLoader): no object is instantiated
        return yaml.load(text, Loader=_LOADER), yaml.compose(text, Loader=_LOADER), raw  # noqa: S506
    except UnicodeDecodeError:
        raise MappingFileError([f"{path}: not UTF-8 text"]) from None
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else "?"
        raise MappingFileError([f"{path}:{line}: invalid YAML: {exc.problem}"]) from None
    except yaml.reader.ReaderError as exc:  # a control character: not a MarkedYAMLError
        raise MappingFileError([f"{path}: invalid YAML: {exc.reason} (character {exc.position})"]) from None


def _rules(spec: MappingSpec) -> Iterable[tuple[list[Any], FieldRule | str]]:
    def walk(rule: FieldRule | str, loc: list[Any]) -> Iterable[tuple[list[Any], FieldRule | str]]:
        yield loc, rule
        if isinstance(rule, str):
            return
        for index, part in enumerate(rule.concat or []):
            yield from walk(part, [*loc, "concat", index])
        for index, case in enumerate(rule.when or []):
            yield from walk(case.then, [*loc, "when", index, "then"])
        for key, sub in (("else", rule.else_), ("default", rule.default)):
            if isinstance(sub, FieldRule):
                yield from walk(sub, [*loc, key])

    for key_name, rule in spec.keys.items():
        yield from walk(rule, ["keys", key_name])
    for call_name, call in spec.calls.items():
        for field_name, rule in call.fields.items():
            yield from walk(rule, ["calls", call_name, "fields", field_name])
        for param, rule in getattr(call, "params", {}).items():
            yield from walk(rule, ["calls", call_name, "params", param])


def load_mapping(path: Path) -> Mapping:
    return parse_mapping(path.read_bytes(), path)


def parse_mapping(raw: bytes, path: Path, *, lookups_dir: Path | None = None) -> Mapping:
    """A mapping from its text, checked exactly as a file is: a version kept in the store is
    parsed here, with ``path`` naming it in errors and its lookup tables read from
    ``lookups_dir`` (the mappings folder; default: the path's folder). The content hash is the
    same as the file's would be, so an event's ``mapping_hash`` names the version it ran with."""
    data, root, raw = _read_yaml(path, raw)
    try:
        spec = MappingSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = [
                p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("function-", "FieldRule")))
            ]
            if len(loc) > 2 and loc[0] == "calls" and loc[2] in ("m3", "bng"):
                del loc[2]  # the tag of the call kind (MI call or BNG request) is not in the file
            where = ".".join(str(p) for p in loc) or "(top level)"
            problems.append(
                f"{path}:{_node_line(root, loc)}: {where}: {err['msg'].removeprefix('Value error, ')}"
            )
        raise MappingFileError(problems) from None

    problems = []
    tables: dict[str, dict[str, str]] = {}
    digest = hashlib.sha256(raw)
    for name, file_name in spec.lookups.items():
        table_path = ((lookups_dir or path.parent) / file_name).resolve()
        if not table_path.is_file():
            problems.append(
                f"{path}:{_node_line(root, ['lookups', name])}: lookup table file {file_name} not found"
            )
            continue
        table, _table_root, table_raw = _read_yaml(table_path)
        if not isinstance(table, dict) or not all(isinstance(v, (str, int, float)) for v in table.values()):
            problems.append(f"{table_path}: a lookup table is a mapping of key: value")
            continue
        digest.update(table_raw)
        tables[name] = {str(k): str(v) for k, v in table.items()}
    for loc, rule in _rules(spec):
        line = _node_line(root, loc)
        expressions = (
            [rule] if isinstance(rule, str) else [rule.from_ or ""] + [c.if_ for c in rule.when or []]
        )
        for expression in filter(None, expressions):
            try:
                compile_path(expression)
            except JMESPathError as exc:
                problems.append(f"{path}:{line}: {'.'.join(map(str, loc))}: bad path {expression!r}: {exc}")
        if isinstance(rule, FieldRule):
            if rule.var is not None and rule.var not in spec.vars:
                problems.append(f"{path}:{line}: {'.'.join(map(str, loc))}: unknown var {rule.var!r}")
            if rule.lookup is not None and rule.lookup not in spec.lookups:
                problems.append(
                    f"{path}:{line}: {'.'.join(map(str, loc))}: unknown lookup table {rule.lookup!r}"
                )
    for call_name, call in spec.calls.items():
        if call.if_:
            try:
                compile_path(call.if_)
            except JMESPathError as exc:
                line = _node_line(root, ["calls", call_name, "if"])
                problems.append(f"{path}:{line}: calls.{call_name}.if: bad condition: {exc}")
        if call.for_each:
            try:
                compile_path(call.for_each)
            except JMESPathError as exc:
                line = _node_line(root, ["calls", call_name, "for_each"])
                problems.append(f"{path}:{line}: calls.{call_name}.for_each: bad path: {exc}")
    if spec.anomalies is not None:  # where the anomaly rules read the order: paths, checked alike
        for name, expression in spec.anomalies.fields.model_dump().items():
            try:
                compile_path(expression)
            except JMESPathError as exc:
                line = _node_line(root, ["anomalies", "fields", name])
                problems.append(f"{path}:{line}: anomalies.fields.{name}: bad path {expression!r}: {exc}")
    if problems:
        raise MappingFileError(problems)
    return Mapping(spec=spec, path=path, content_hash=digest.hexdigest(), tables=tables)


def load_mappings(folder: Path) -> dict[str, Mapping]:
    """Every ``*.yaml`` directly in ``folder`` (lookup tables live in ``lookups/``), by flow name."""
    problems: list[str] = []
    loaded: list[Mapping] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            loaded.append(load_mapping(path))
        except MappingFileError as exc:
            problems.extend(exc.problems)
    return combine(loaded, problems)


def combine(loaded: Iterable[Mapping], problems: list[str] | None = None) -> dict[str, Mapping]:
    """Mappings by flow name, refusing two for one flow or two flows for one trigger (files or
    store versions alike)."""
    problems = list(problems or [])
    mappings: dict[str, Mapping] = {}
    triggers: dict[str, str] = {}
    for mapping in loaded:
        path = mapping.path
        if mapping.flow in mappings:
            problems.append(
                f"{path}: flow {mapping.flow!r} is already defined in {mappings[mapping.flow].path}"
            )
            continue
        for trigger in mapping.spec.trigger:
            if trigger in triggers:
                problems.append(
                    f"{path}: trigger {trigger!r} is already handled by flow {triggers[trigger]!r}"
                )
            triggers[trigger] = mapping.flow
        mappings[mapping.flow] = mapping
    if problems:
        raise MappingFileError(problems)
    return mappings
