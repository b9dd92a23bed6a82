"""docs/m3.md's go-live tables are what ``m3bng mappings describe`` prints for the shipped
mappings: a mapping change that is not in the docs fails here (regenerate the section with the
command and paste it between the markers)."""

from __future__ import annotations

from pathlib import Path

from m3bng.mapping import load_mappings
from m3bng.mapping.describe import markdown

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- mappings describe: begin -->\n", "<!-- mappings describe: end -->"


def generated() -> str:
    mappings = load_mappings(ROOT / "mappings")
    return markdown({m.flow: m for m in mappings.values()})


def test_go_live_tables_are_current() -> None:
    text = (ROOT / "docs" / "m3.md").read_text(encoding="utf-8")
    section = text[text.index(BEGIN) + len(BEGIN) : text.index(END)]
    assert section == generated()


def test_every_write_the_flows_make_is_authorized() -> None:
    tables = generated()
    for operation in ("OIS100MI | AddBatchHead, AddBatchLine, Confirm", "GLS840MI | AddBatchHead"):
        assert operation in tables
    assert "| MRS001MI | LstFields |" in tables and "| MNS150MI | GetUserData |" in tables
