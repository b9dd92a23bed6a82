"""The ``anomalies:`` section of a mapping: strict, defaults per rule, errors naming the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from m3bng.mapping import MappingFileError, load_mapping

HEAD = """\
version: 1
flow: order_to_cash
trigger: [order.created]
calls:
  head: {program: OIS100MI, transaction: AddBatchHead, fields: {CUOR: OrderID}}
"""


def write(tmp_path: Path, section: str) -> Path:
    path = tmp_path / "flow.yaml"
    path.write_text(HEAD + textwrap.dedent(section))
    return path


def test_absent_means_no_rules_and_a_partial_rule_keeps_its_own_defaults(tmp_path: Path) -> None:
    assert load_mapping(write(tmp_path, "")).spec.anomalies is None
    spec = load_mapping(write(tmp_path, "anomalies:\n  rules:\n    amount: {action: hold}\n")).spec.anomalies
    assert spec is not None
    amount, price = spec.rules.amount, spec.rules.price
    # Writing only the action of a rule keeps that rule's thresholds, not a generic default.
    assert (amount.action, amount.max_z, amount.min_ratio, amount.direction) == ("hold", 3.0, 5.0, "above")
    assert (price.action, price.min_ratio, price.direction) == ("flag", 2.0, "both")
    assert spec.history == 20 and spec.fields.lines == "Lines"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "anomalies:\n  rules:\n    quantity: {action: stop}\n",
            r"anomalies\.rules\.quantity\.action: Input should be 'flag', 'hold' or 'off'",
        ),
        (
            "anomalies:\n  rules:\n    price: {max_z: 0}\n",
            r"anomalies\.rules\.price\.max_z: Input should be greater than 0",
        ),
        (
            "anomalies:\n  rules:\n    lateness: {action: flag}\n",
            r"anomalies\.rules\.lateness: Extra inputs are not permitted",
        ),
        ("anomalies:\n  history: 1\n", r"anomalies\.history: Input should be greater than or equal to 2"),
        ("anomalies:\n  fields:\n    lines: 'Lines[?'\n", r"anomalies\.fields\.lines: bad path 'Lines\[\?'"),
        (
            "anomalies:\n  rules:\n    near_duplicate: {window: 5}\n",
            r"anomalies\.rules\.near_duplicate\.window: Extra inputs",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_field(tmp_path: Path, section: str, message: str) -> None:
    with pytest.raises(MappingFileError, match=r"flow\.yaml:\d+: " + message):
        load_mapping(write(tmp_path, section))


def test_the_shipped_order_mapping_flags_every_rule() -> None:
    path = Path(__file__).resolve().parents[3] / "mappings" / "order_to_cash.yaml"
    spec = load_mapping(path).spec.anomalies
    assert spec is not None
    rules = spec.rules
    assert {
        r.action
        for r in (rules.quantity, rules.price, rules.amount, rules.new_customer, rules.near_duplicate)
    } == {"flag"}
