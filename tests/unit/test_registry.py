"""Start-up wiring of mappings to flows: every shipped trigger has a flow; broken files stop start-up."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from m3bng.config import Settings
from m3bng.mapping import MappingFileError
from m3bng.runtime import load_registry
from tests.conftest import REPO_ROOT


def test_shipped_mappings_register_their_triggers() -> None:
    registry = load_registry(Settings(mappings_dir=REPO_ROOT / "mappings"))
    for event_type in ("order.created", "order.updated", "customer.created", "customer.updated"):
        assert registry.get("bng", event_type) is not None, event_type


def test_broken_mapping_or_missing_folder_stops_start_up(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    shutil.copytree(REPO_ROOT / "mappings", folder)
    path = folder / "order_to_cash.yaml"
    path.write_text(path.read_text().replace("ORTP: {var: order_type}", "ORTP: {var: nope}"))
    with pytest.raises(
        MappingFileError, match=r"order_to_cash.yaml:\d+: calls.head.fields.ORTP: unknown var"
    ):
        load_registry(Settings(mappings_dir=folder))
    (folder / "mystery.yaml").write_text(
        "version: 1\nflow: mystery\ntrigger: [x.y]\ncalls: {a: {program: CRS610MI, transaction: Add}}\n"
    )
    path.write_text(path.read_text().replace("{var: nope}", "{var: order_type}"))
    with pytest.raises(MappingFileError, match="flow 'mystery' is not one m3bng knows"):
        load_registry(Settings(mappings_dir=folder))
    with pytest.raises(MappingFileError, match=r"M3BNG_MAPPINGS_DIR: .* is not a folder"):
        load_registry(Settings(mappings_dir=tmp_path / "absent"))
