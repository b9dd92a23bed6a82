"""Form edits of a mapping's text (mapping/edit.py): the edited line changes, every other line
(comments, quoting, key order) stays byte for byte, and a bad edit names its part."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from m3bng.mapping import parse_mapping
from m3bng.mapping.edit import EditError, set_field, set_var, tidy_rule
from tests.conftest import REPO_ROOT

MAPPINGS = REPO_ROOT / "mappings"
ORDER = (MAPPINGS / "order_to_cash.yaml").read_text()


def changed_lines(before: str, after: str) -> list[str]:
    return [
        line
        for line in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def test_replacing_a_rule_changes_its_line_only() -> None:
    after = set_field(ORDER, "head", "WHLO", {"from": "Warehouse", "default": {"value": "200"}})
    assert changed_lines(ORDER, after) == [
        "-      WHLO: {from: Warehouse, default: {var: warehouse}}",
        "+      WHLO: {from: Warehouse, default: {value: '200'}}",
    ]
    mapping = parse_mapping(after.encode(), MAPPINGS / "order_to_cash.yaml")
    assert mapping.call("head").fields["WHLO"].default.value == "200"  # type: ignore[union-attr]


def test_a_new_field_goes_last_in_its_call_and_removing_it_restores_the_text() -> None:
    added = set_field(ORDER, "head", "YREF", {"from": "CustomerID", "max_length": 30, "upper": False})
    assert changed_lines(ORDER, added) == ["+      YREF: {from: CustomerID, max_length: 30}"]
    lines = added.splitlines()
    assert (
        lines[lines.index("      YREF: {from: CustomerID, max_length: 30}") - 1].lstrip().startswith("CUCD:")
    )
    assert set_field(added, "head", "YREF", None) == ORDER


def test_a_var_keeps_its_quotes_and_comment() -> None:
    after = set_var(ORDER, "warehouse", "200")
    assert changed_lines(ORDER, after) == [
        '-  warehouse: "100"           # default WHLO when the order or line names none',
        '+  warehouse: "200"           # default WHLO when the order or line names none',
    ]


@pytest.mark.parametrize("path", sorted(MAPPINGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_mapping_edits_one_line(path: Path) -> None:
    """ruamel.yaml re-spells some constructs ([{value: "GL"}] as [value: "GL"]): the splice
    keeps the original spelling of every line the edit did not touch."""
    text = path.read_text()
    mapping = parse_mapping(text.encode(), path)
    call, spec = next(iter(mapping.spec.calls.items()))
    field = next(iter(spec.fields))
    after = set_field(text, call, field, {"value": "X"})
    [removed, added] = changed_lines(text, after)
    assert removed.startswith("-") and added.strip().endswith(f"{field}: {{value: X}}")


@pytest.mark.parametrize(
    ("call", "field", "rule", "where", "words"),
    [
        ("nope", "WHLO", {"from": "X"}, "call", "no call 'nope'"),
        ("head", "whlo", {"from": "X"}, "field", "3-6 upper-case"),
        ("head", "WHLO", {"from": "X", "value": "1"}, "rule", "exactly one of"),
        ("head", "WHLO", {"frm": "X"}, "rule", "unknown key 'frm'"),
        ("head", "WHLO", {"from": "X", "type": "money"}, "rule.type", "Input should be"),
    ],
)
def test_a_bad_edit_names_its_part(
    call: str, field: str, rule: dict[str, object], where: str, words: str
) -> None:
    with pytest.raises(EditError) as caught:
        set_field(ORDER, call, field, rule)
    assert caught.value.fields[0]["field"] == where
    assert words in caught.value.fields[0]["problem"]


def test_tidy_rule_drops_what_a_person_would_not_write() -> None:
    assert tidy_rule(
        {"from": "A", "upper": False, "default": {"var": "w", "required": False}, "type": None, "sep": ""}
    ) == {"from": "A", "default": {"var": "w"}}


def test_removing_a_field_that_is_not_there_is_refused() -> None:
    with pytest.raises(EditError, match="no field 'YREF'"):
        set_field(ORDER, "head", "YREF", None)


def test_not_yaml_is_refused() -> None:
    with pytest.raises(EditError, match="not YAML"):
        set_var("a: [", "w", "1")
