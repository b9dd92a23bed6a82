"""`m3bng mappings suggest`, as a user runs it: against the sandbox's M3 simulator metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from m3bng.cli import app
from m3bng.connectors.bng.samples import sample
from m3bng.mapping.schema import MappingSpec
from tests.conftest import REPO_ROOT


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("M3BNG_MAPPINGS_DIR", str(REPO_ROOT / "mappings"))
    monkeypatch.setenv("M3BNG_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")


def test_prints_the_ranked_table_and_writes_a_draft_the_loader_accepts(tmp_path: Path) -> None:
    body = tmp_path / "customer.json"
    body.write_text(json.dumps({"type": "customer.created", "data": sample("customer.created")}))
    draft = tmp_path / "draft.yaml"
    result = CliRunner().invoke(
        app,
        [
            *("mappings", "suggest", "--program", "CRS610MI", "--transaction", "Add"),
            *("--sample", str(body), "--write", str(draft), "--flow", "new_customer", "--call", "add"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "CRS610MI/Add:" in result.output
    assert "CUNM   A36  Customer name  mandatory" in result.output
    assert "  1. CompanyName" in result.output
    assert "words in common: name" in result.output
    spec = MappingSpec.model_validate(yaml.safe_load(draft.read_text()))
    assert spec.trigger == ["customer.created"]
    fields = spec.calls["add"].fields
    assert fields["CUNM"].from_ == "CompanyName"
    assert fields["MAIL"].from_ == "Email"
    assert fields["TOWN"].from_ == "BillingAddress.City"


def test_a_shipped_sample_by_event_type_and_a_call_per_line() -> None:
    result = CliRunner().invoke(
        app,
        [
            *("mappings", "suggest", "--program", "OIS100MI", "--transaction", "AddBatchLine"),
            *("--sample", "order.created", "--for-each", "Lines", "--top", "1"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "  1. _line.SKU" in result.output
    assert "Mandatory in M3, no good candidate: ORNO (Temporary order number)" in result.output


def test_a_draft_needs_a_trigger_when_the_sample_has_none(tmp_path: Path) -> None:
    body = tmp_path / "data.json"
    body.write_text(json.dumps(sample("product.created")))
    result = CliRunner().invoke(
        app,
        [
            *("mappings", "suggest", "--program", "MMS200MI", "--transaction", "AddItmBasic"),
            *("--sample", str(body), "--write", str(tmp_path / "d.yaml")),
        ],
    )
    assert result.exit_code != 0
    assert "--write needs --trigger" in result.output


def test_a_bod_as_the_sample(tmp_path: Path) -> None:
    """An M3-bound mapping fed by ION: the BOD's data is the sample, its type the trigger."""
    draft = tmp_path / "draft.yaml"
    result = CliRunner().invoke(
        app,
        [
            *("mappings", "suggest", "--program", "CRS610MI", "--transaction", "Add"),
            *("--sample", str(REPO_ROOT / "tests/fixtures/bods/SyncCustomerPartyMaster.xml")),
            *("--write", str(draft)),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "  1. Location.Address.PostalCode" in result.output
    spec = MappingSpec.model_validate(yaml.safe_load(draft.read_text()))
    assert (spec.trigger, spec.source) == (["SyncCustomerPartyMaster"], "ion")
    assert spec.calls["call"].fields["TOWN"].from_ == "Location.Address.CityName"


def test_a_draft_that_would_not_load_is_not_written(tmp_path: Path) -> None:
    draft = tmp_path / "draft.yaml"
    result = CliRunner().invoke(
        app,
        [
            *("mappings", "suggest", "--program", "CRS610MI", "--transaction", "Add"),
            *("--sample", "customer.created", "--write", str(draft), "--flow", "Not A Flow"),
        ],
    )
    assert result.exit_code != 0
    assert "the draft would not load (flow: String should match pattern" in result.output
    assert not draft.exists()
