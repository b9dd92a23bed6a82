"""`m3bng init`: the deployment folder it writes, and what it refuses to overwrite."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from m3bng.cli import app
from m3bng.cli.init import TENANT_SETTINGS, env_example, tenant_env
from m3bng.config import Settings
from tests.conftest import REPO_ROOT


def test_the_packaged_env_text_is_the_repositorys_env_example() -> None:
    """init reads .env.example from the package (an installed wheel has no repository root):
    m3bng/cli/env.example links to it, and the wheel test checks it is in the wheel."""
    assert (REPO_ROOT / ".env.example").read_text() == env_example()


def test_the_written_env_names_every_setting_and_leaves_only_the_tenants_open() -> None:
    text = tenant_env()
    for name in Settings.model_fields:
        assert f"M3BNG_{name.upper()}=" in text, name
    open_lines = [line.split("=", 1)[0] for line in text.splitlines() if line.startswith("M3BNG_")]
    assert open_lines == [f"M3BNG_{name}" for name in TENANT_SETTINGS]
    # The comments come along: a person reads the file, not the source.
    assert "# BNG's signing secret(s), comma-separated" in text
    assert "# M3BNG_HOST=127.0.0.1" in text


def test_init_writes_env_mappings_and_readme(tmp_path: Path) -> None:
    folder = tmp_path / "prod"
    result = CliRunner().invoke(app, ["init", str(folder), "--database-url", "postgresql+asyncpg://h/db"])
    assert result.exit_code == 0, result.output
    env = folder / ".env"
    assert env.stat().st_mode & 0o077 == 0  # secrets go in: owner only
    assert "M3BNG_DATABASE_URL=postgresql+asyncpg://h/db\n" in env.read_text()
    shipped = sorted(p.relative_to(REPO_ROOT / "mappings") for p in (REPO_ROOT / "mappings").rglob("*.yaml"))
    copied = sorted(p.relative_to(folder / "mappings") for p in (folder / "mappings").rglob("*.yaml"))
    assert copied == shipped
    readme = (folder / "README.txt").read_text()
    assert str(folder / "m3bng.ionapi") in readme
    assert "Backend Service" in readme
    for command in ("m3bng db upgrade", "m3bng doctor", "m3bng serve"):
        assert command in result.output


def test_init_accepts_an_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / ".env").is_file()


@pytest.mark.parametrize("existing", ["folder", "file"])
def test_init_never_overwrites(tmp_path: Path, existing: str) -> None:
    target = tmp_path / "prod"
    if existing == "folder":
        target.mkdir()
        (target / ".env").write_text("M3BNG_WEBHOOK_SECRETS=keep-me\n")
    else:
        target.write_text("keep me\n")
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(app, ["init", str(target)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "nothing written" in result.output
    assert sorted(tmp_path.rglob("*")) == before
