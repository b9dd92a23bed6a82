"""`m3bng mappings check` and `m3bng mappings preview`, as a user runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from m3bng.cli import app
from m3bng.connectors.bng.samples import sample
from tests.conftest import REPO_ROOT


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("M3BNG_MAPPINGS_DIR", str(REPO_ROOT / "mappings"))
    monkeypatch.setenv("M3BNG_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")


def test_check_lists_every_mapping() -> None:
    result = CliRunner().invoke(app, ["mappings", "check", "--no-metadata"])
    assert result.exit_code == 0, result.output
    for flow in ("order_to_cash", "customer_sync", "gl_entry", "purchase_order"):
        assert f"flow {flow}" in result.output


def test_check_against_the_simulators_metadata() -> None:
    """Sandbox: the in-process M3 simulator answers MRS001MI, so every mapped field is checked."""
    result = CliRunner().invoke(app, ["mappings", "check"])
    assert result.exit_code == 0, result.output
    assert "ERR" not in result.output


def test_check_fails_for_a_field_m3_does_not_list_or_a_missing_mandatory_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The simulator's metadata is Infor's published lists: a mapping that sends CUCD to
    CRS610MI/Add or leaves out its mandatory CUA1 fails the check (and so CI)."""
    folder = tmp_path / "mappings"
    shutil.copytree(REPO_ROOT / "mappings", folder)
    customer = folder / "customer_sync.yaml"
    text = customer.read_text()
    text = text.replace("      CUA1: {from: BillingAddress.Line1, truncate: true, required: true}\n", "", 1)
    text = text.replace(
        "      CUTM: {var: customer_template}\n", "      CUTM: {var: customer_template}\n      CUCD: SEK\n"
    )
    customer.write_text(text)
    monkeypatch.setenv("M3BNG_MAPPINGS_DIR", str(folder))
    result = CliRunner().invoke(app, ["mappings", "check"])
    assert result.exit_code == 1, result.output
    assert "ERR customer_sync.add: CUCD is not an input field of CRS610MI/Add" in result.output
    assert "ERR customer_sync.add: mandatory in M3 but not mapped: CUA1" in result.output


def test_preview_prints_the_exact_calls(tmp_path: Path) -> None:
    order = tmp_path / "order.json"
    order.write_text(json.dumps({"type": "order.created", "data": sample("order.created")}))
    result = CliRunner().invoke(
        app, ["mappings", "preview", "order_to_cash", "--input", str(order), "--ctx", "CUNO=10001"]
    )
    assert result.exit_code == 0, result.output
    assert "OIS100MI/AddBatchHead?CUNO=10001&ORTP=A01&WHLO=100&ORDT=20261124&CUOR=SO-1001" in result.output
    assert result.output.count("OIS100MI/AddBatchLine?ORNO=<ORNO_TEMP>") == 3
    update = tmp_path / "update.json"
    update.write_text(json.dumps({**sample("order.updated"), "OrderStatus": "Picking"}))
    result = CliRunner().invoke(app, ["mappings", "preview", "order_update", "--input", str(update)])
    assert "skipped: OrderStatus == 'Cancelled' is false" in result.output


def test_preview_of_a_bod_prints_the_bng_requests() -> None:
    bods = Path(__file__).resolve().parents[1] / "fixtures" / "bods"
    result = CliRunner().invoke(
        app, ["mappings", "preview", "order_status", "--input", str(bods / "SyncSalesOrder.xml")]
    )
    assert result.exit_code == 0, result.output
    assert 'PATCH /api/v1/orders/BNG-1001 {"OrderStatus": "Confirmed", "M3Status": "22"' in result.output
    assert "cancelled  PATCH /api/v1/orders/{OrderID}: skipped" in result.output
    result = CliRunner().invoke(
        app, ["mappings", "preview", "customer_to_bng", "--input", str(bods / "SyncCustomerPartyMaster.xml")]
    )
    assert result.exit_code == 0, result.output
    assert "PUT /api/v1/customers/10001" in result.output
    hostile = bods / "hostile" / "xxe_file.xml"
    result = CliRunner().invoke(app, ["mappings", "preview", "customer_to_bng", "--input", str(hostile)])
    assert result.exit_code == 1 and "DOCTYPE" in result.output
