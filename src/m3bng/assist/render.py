"""The suggestions written out: the ranked table ``m3bng mappings suggest`` prints and the draft
mapping it writes.

Why a draft and not a finished mapping: the suggestions are guesses with reasons; the draft
keeps each reason as a comment on its rule's line and the mandatory fields nobody fills as
comments, so the review happens in the file, and the loader, ``m3bng mappings check`` and the
studio's preview judge it like any text typed by hand.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from m3bng.assist.suggest import DRAFT_SCORE, GOOD_SCORE, Suggestions

# -- a draft mapping --------------------------------------------------------------------------------

_BARE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n"}


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    return text if _BARE.match(text) and text.lower() not in _YAML_WORDS else json.dumps(text)


def rule_yaml(rule: Mapping[str, Any]) -> str:
    """A rule on one line, as the mapping files write it: ``{from: OrderDate, type: date}``."""
    return "{" + ", ".join(f"{k}: {_yaml_scalar(v)}" for k, v in rule.items()) + "}"


def draft_mapping(
    suggestions: Suggestions,
    *,
    flow: str,
    trigger: Sequence[str],
    call: str,
    for_each: str | None = None,
    source: str | None = None,
) -> str:
    """A mapping YAML with one call filled by each field's best candidate, the reasons beside
    each rule and the mandatory fields nobody fills as comments: a draft to review, never to
    publish unread (``m3bng mappings check`` and the studio's preview judge it like any other)."""
    lines = [
        f"# Draft written by `m3bng mappings suggest` for {suggestions.program}/{suggestions.transaction}:",
        "# every rule below is a suggestion with its score and reasons; review each one.",
        "version: 1",
        f"flow: {_yaml_scalar(flow)}",
        f"description: {json.dumps(f'draft: {suggestions.program}/{suggestions.transaction}')}",
        f"trigger: [{', '.join(_yaml_scalar(t) for t in trigger)}]",
        "target: m3",
        *([f"source: {source}"] if source else []),
        "calls:",
        f"  {_yaml_scalar(call)}:",
        f"    program: {suggestions.program}",
        f"    transaction: {suggestions.transaction}",
    ]
    if for_each is not None:
        lines.append(f"    for_each: {json.dumps(for_each)}")
    lines.append("    fields:")
    # Each path fills at most one field in a draft, the one it fits best, and only above
    # DRAFT_SCORE: a draft of every weak guess is more work to review than an empty one.
    owner: dict[str, tuple[float, str]] = {}
    for item in suggestions.fields:
        best = item.best
        if best is not None and best.score >= DRAFT_SCORE and best.raw > owner.get(best.path, (-1.0, ""))[0]:
            owner[best.path] = (best.raw, item.field.name)
    filled = 0
    for item in suggestions.fields:
        best = item.best
        if best is None or owner.get(best.path, (0.0, ""))[1] != item.field.name:
            continue
        filled += 1
        why = "; ".join(best.reasons).replace("\n", " ")
        lines.append(f"      {item.field.name}: {rule_yaml(best.rule)}  # {best.score:.2f}: {why}")
    if not filled:
        lines[-1] = "    fields: {}"
    for spec in suggestions.missing_mandatory:
        lines.append(f"      # {spec.name} ({spec.description}): mandatory in M3, no path of the sample fits")
    return "\n".join(lines) + "\n"


# -- the ranked table -------------------------------------------------------------------------------


def table(suggestions: Suggestions) -> str:
    """The suggestions as ``m3bng mappings suggest`` prints them: per field its M3 shape, then
    the ranked paths with score, rule and reasons; the uncovered mandatory fields last."""
    good = sum(1 for s in suggestions.fields if s.best is not None)
    lines = [
        f"{suggestions.program}/{suggestions.transaction}: {len(suggestions.fields)} input fields, "
        f"{good} with a good candidate (score ≥ {GOOD_SCORE})",
    ]
    for item in suggestions.fields:
        spec = item.field
        shape = f"{spec.type}{spec.length or ''}"
        flag = "  mandatory" if spec.mandatory else ""
        lines.append("")
        lines.append(f"{spec.name:<6} {shape:<4} {spec.description}{flag}")
        if not item.candidates:
            lines.append("       no path of the sample fits")
        for rank, c in enumerate(item.candidates, 1):
            example = f"  = {c.example}" if c.example else ""
            lines.append(f"  {rank}. {c.path:<28} {c.score:.2f}  {rule_yaml(c.rule)}{example}")
            lines.append(f"       {'; '.join(c.reasons)}")
    missing = suggestions.missing_mandatory
    if missing:
        lines.append("")
        lines.append(
            "Mandatory in M3, no good candidate: " + ", ".join(f"{s.name} ({s.description})" for s in missing)
        )
    return "\n".join(lines) + "\n"


def draft_problem(text: str) -> str | None:
    """Why a draft's text would not load as a mapping (a flow name the schema refuses), or None."""
    import yaml
    from pydantic import ValidationError

    from m3bng.mapping.schema import MappingSpec

    try:
        MappingSpec.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        return str(exc).splitlines()[0]
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return None
