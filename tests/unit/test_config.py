from __future__ import annotations

from pathlib import Path

import pytest

from m3bng.config import DEFAULT_RETRY_SCHEDULE, Settings, SettingsError, load_settings


def test_defaults_are_sandbox_with_sqlite_and_a_day_of_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("M3BNG_DATABASE_URL", raising=False)
    settings = Settings(_env_file=None)
    assert settings.sandbox and settings.is_sqlite and settings.should_migrate_on_start
    assert settings.max_attempts == 8
    assert sum(DEFAULT_RETRY_SCHEDULE) >= 24 * 3600


def test_environment_lists_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M3BNG_RETRY_SCHEDULE", "1, 2,3.5")
    monkeypatch.setenv("M3BNG_FLOW_PLUGINS", "a.b:c,d:e")
    settings = Settings(_env_file=None)
    assert settings.retry_schedule == [1.0, 2.0, 3.5]
    assert settings.flow_plugins == ["a.b:c", "d:e"]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("M3BNG_WORKER_CONCURRENCY", "lots", "M3BNG_WORKER_CONCURRENCY: Input should be a valid integer"),
        (
            "M3BNG_WORKER_CONCURRENCY",
            "0",
            "M3BNG_WORKER_CONCURRENCY: Input should be greater than or equal to 1",
        ),
        ("M3BNG_DATABASE_URL", "mysql://x", "M3BNG_DATABASE_URL: must start with sqlite+aiosqlite://"),
        ("M3BNG_RETRY_SCHEDULE", "10,-1", "M3BNG_RETRY_SCHEDULE: every delay must be a positive"),
        (
            "M3BNG_IONAPI_FILE",
            "/no/such/file.ionapi",
            "M3BNG_IONAPI_FILE: file '/no/such/file.ionapi' does not exist",
        ),
        ("M3BNG_LOG_LEVEL", "LOUD", "M3BNG_LOG_LEVEL: Input should be"),
    ],
)
def test_invalid_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match="invalid setting") as info:
        load_settings(_env_file=None)
    assert message in str(info.value)


def test_cli_exits_with_the_message(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "M3BNG_PORT": "99999"}
    proc = subprocess.run(
        [sys.executable, "-m", "m3bng", "worker", "--once"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "invalid setting M3BNG_PORT" in proc.stderr


def test_env_example_lists_every_setting_and_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    example = Path(__file__).resolve().parents[2] / ".env.example"
    names = {
        line.split("=", 1)[0]
        for line in example.read_text().splitlines()
        if line.startswith("M3BNG_") and "=" in line
    }
    assert names == {f"M3BNG_{field.upper()}" for field in Settings.model_fields}
    for key in [k for k in __import__("os").environ if k.startswith("M3BNG_")]:
        monkeypatch.delenv(key)
    settings = Settings(_env_file=example)
    assert settings.sandbox and settings.migrate_on_start is None


def test_errors_never_echo_secrets_or_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M3BNG_DATABASE_URL", "postgresql+asyncpg://u:hunter2@db/x")
    monkeypatch.setenv("M3BNG_WEBHOOK_SECRETS", "whsec_c2VjcmV0LW51bWJlci10d28tZm9yLXRlc3Rz")
    monkeypatch.setenv("M3BNG_WORKER_POLL_INTERVAL", "5")
    monkeypatch.setenv("M3BNG_LEASE_SECONDS", "2")
    with pytest.raises(SettingsError) as info:
        load_settings(_env_file=None)
    assert "POLL_INTERVAL must be shorter" in str(info.value)
    assert "hunter2" not in str(info.value) and "c2VjcmV0" not in str(info.value)
    monkeypatch.setenv("M3BNG_WEBHOOK_SECRETS", "short")
    with pytest.raises(SettingsError) as info:
        load_settings(_env_file=None)
    assert "M3BNG_WEBHOOK_SECRETS" in str(info.value) and "short" not in str(info.value)
