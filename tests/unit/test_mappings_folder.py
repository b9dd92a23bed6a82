"""Which mappings a process loads: named, or in sandbox mode the local or shipped defaults;
outside sandbox mode nothing is guessed."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3bng.config import Settings, SettingsError
from tests.support.webhooks import TEST_SECRET


def test_named_folder_wins(tmp_path: Path) -> None:
    assert Settings(mappings_dir=tmp_path).mappings_folder == tmp_path


def test_sandbox_without_a_local_folder_uses_the_shipped_mappings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # an empty folder, as after `pip install m3bng`
    folder = Settings().mappings_folder
    assert (folder / "order_to_cash.yaml").is_file() and (folder / "lookups").is_dir()
    (tmp_path / "mappings").mkdir()
    assert Settings().mappings_folder == Path("mappings")  # a local copy is taken first


def test_outside_sandbox_a_folder_must_be_named() -> None:
    settings = Settings(bng_base_url="https://bng.example/api", webhook_secrets=[TEST_SECRET])
    with pytest.raises(SettingsError, match="M3BNG_MAPPINGS_DIR: not set"):
        _ = settings.mappings_folder
