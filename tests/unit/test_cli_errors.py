"""Each command's expected failures, as a user meets them: one line on stderr and exit 2, never a
traceback (issue 16); and the settings each command validates are only those it needs."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from m3bng.cli import app
from tests.conftest import REPO_ROOT, free_port
from tests.support.webhooks import TEST_SECRET


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # sandbox files (secret, ops token) land beside the store, here
    for name in ("M3BNG_IONAPI_FILE", "M3BNG_BNG_BASE_URL", "M3BNG_WEBHOOK_SECRETS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("M3BNG_MAPPINGS_DIR", str(REPO_ROOT / "mappings"))
    monkeypatch.setenv("M3BNG_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside sandbox mode: a BNG URL (nothing listens there) with its key and webhook secret."""
    monkeypatch.setenv("M3BNG_BNG_BASE_URL", f"http://127.0.0.1:{free_port()}/api")
    monkeypatch.setenv("M3BNG_BNG_API_KEY", "test-key")
    monkeypatch.setenv("M3BNG_WEBHOOK_SECRETS", TEST_SECRET)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def one_line_failure(result: Result) -> str:
    """The failure's message: exit 2, one line on stderr, no traceback."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_webhook_send_with_a_missing_data_file() -> None:
    line = one_line_failure(run("webhook", "send", "order.created", "@missing.json"))
    assert "missing.json" in line and "No such file" in line


def test_webhook_send_to_a_server_that_is_down_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/webhooks/bng"
    line = one_line_failure(run("webhook", "send", "order.created", "--url", url))
    assert f"cannot reach {url}" in line


def test_mappings_preview_with_a_missing_input_file() -> None:
    line = one_line_failure(run("mappings", "preview", "order_to_cash", "--input", "missing.json"))
    assert "missing.json" in line


def test_mappings_preview_with_input_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "order.json").write_text("{not json")
    line = one_line_failure(run("mappings", "preview", "order_to_cash", "--input", "order.json"))
    assert "neither JSON nor a BOD" in line


@pytest.mark.parametrize("command", [["db", "upgrade"], ["serve"], ["worker", "--once"]])
def test_an_unreachable_postgresql_is_named_by_its_setting_with_the_password_masked(
    monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    port = free_port()
    monkeypatch.setenv("M3BNG_DATABASE_URL", f"postgresql+asyncpg://m3bng:hunter2@127.0.0.1:{port}/m3bng")
    monkeypatch.setenv("M3BNG_DB_CONNECT_TIMEOUT", "3")
    line = one_line_failure(run(*command))
    assert f"M3BNG_DATABASE_URL=postgresql+asyncpg://m3bng:***@127.0.0.1:{port}/m3bng" in line
    assert "hunter2" not in line


@pytest.mark.parametrize("command", [["db", "upgrade"], ["serve"]])
def test_a_sqlite_path_in_a_missing_folder(monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    monkeypatch.setenv("M3BNG_DATABASE_URL", "sqlite+aiosqlite:///./no-such-folder/m3bng.db")
    line = one_line_failure(run(*command))
    assert "M3BNG_DATABASE_URL=sqlite+aiosqlite:///./no-such-folder/m3bng.db" in line
    assert "folder 'no-such-folder' does not exist" in line


def test_debug_shows_the_traceback() -> None:
    result = run("--debug", "mappings", "preview", "order_to_cash", "--input", "missing.json")
    assert result.exit_code != 0
    assert isinstance(result.exception, FileNotFoundError)


@pytest.mark.usefixtures("production")
@pytest.mark.parametrize("command", [["serve"], ["worker", "--once"]])
def test_serve_and_worker_refuse_an_unmigrated_store(command: list[str]) -> None:
    line = one_line_failure(run(*command))
    assert "m3bng db upgrade" in line


@pytest.mark.usefixtures("production")
def test_worker_migrate_upgrades_first_and_prints_the_summary() -> None:
    result = run("worker", "--once", "--migrate")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "store: sqlite+aiosqlite:///" in result.stderr
    assert "BNG: http://127.0.0.1:" in result.stderr
    assert "flows bng -> m3: customer.created" in result.stderr
    assert "WARNING: 13 flow(s) from bng write to m3, which is not configured (M3BNG_IONAPI_FILE)" in (
        result.stderr
    )


@pytest.mark.usefixtures("production")
def test_serve_on_a_busy_port_fails_before_it_claims_to_listen_or_starts_a_worker(
    monkeypatch: pytest.MonkeyPatch, busy_port: int
) -> None:
    from m3bng.runtime import Runtime

    started: list[bool] = []

    async def record_start(self: Runtime, *, workers: bool) -> None:  # pragma: no cover - must not run
        started.append(workers)

    monkeypatch.setattr(Runtime, "start", record_start)
    line = one_line_failure(run("serve", "--migrate", "--port", str(busy_port)))
    assert f"cannot listen on 127.0.0.1:{busy_port}" in line
    assert "listening" not in line.lower()
    assert started == []


def test_sandbox_serve_on_a_busy_port_prints_no_banner(busy_port: int) -> None:
    result = run("serve", "--port", str(busy_port))
    line = one_line_failure(result)
    assert "cannot listen" in line
    assert "SANDBOX" not in result.output


def test_m3_check_does_not_ask_for_webhook_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Outside sandbox mode (an .ionapi file), with no M3BNG_WEBHOOK_SECRETS: the check runs."""
    base = f"http://127.0.0.1:{free_port()}"
    ionapi = tmp_path / "tenant.ionapi"
    ionapi.write_text(
        json.dumps(
            {
                "ti": "TENANT_TST",
                "cn": "m3bng",
                "ci": "client",
                "cs": "secret",
                "iu": base,
                "pu": f"{base}/sso/",
                "oa": "authorize",
                "ot": "token",
                "or": "revoke",
                "saak": "key",
                "sask": "secret",
            }
        )
    )
    monkeypatch.setenv("M3BNG_IONAPI_FILE", str(ionapi))
    monkeypatch.setenv("M3BNG_M3_CALL_ATTEMPTS", "1")
    result = run("m3", "check")
    assert "WEBHOOK_SECRETS" not in result.output
    assert f"M3: {base}/TENANT_TST/M3/m3api-rest" in result.stdout
    assert "M3 check failed" in result.stderr  # nothing listens there; but it got that far


def test_serve_still_requires_webhook_secrets_outside_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("M3BNG_BNG_BASE_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("M3BNG_BNG_API_KEY", "test-key")
    result = run("serve")
    assert result.exit_code == 2
    assert "M3BNG_WEBHOOK_SECRETS is required" in result.stderr


def test_other_settings_errors_still_stop_m3_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the webhook secret is waived: any other whole-settings check still applies."""
    monkeypatch.setenv("M3BNG_BNG_BASE_URL", "http://127.0.0.1:9/api")
    monkeypatch.setenv("M3BNG_INVENTORY_POLL_SECONDS", "60")
    result = run("m3", "check")
    assert result.exit_code == 2
    assert "M3BNG_INVENTORY_POLL_SECONDS needs M3BNG_INVENTORY_POLL_WAREHOUSES" in result.stderr


@pytest.mark.parametrize("simulator", ["m3", "bng"])
def test_a_simulator_on_a_busy_port_prints_no_address(simulator: str, busy_port: int, tmp_path: Path) -> None:
    ionapi = tmp_path / "sim.ionapi"
    extra = ["--write-ionapi", str(ionapi)] if simulator == "m3" else []
    result = run("sim", simulator, "--port", str(busy_port), *extra)
    assert f"cannot listen on 127.0.0.1:{busy_port}" in one_line_failure(result)
    assert "simulator:" not in result.output
    assert not ionapi.exists()


@pytest.mark.parametrize("command", [["sync", "items"], ["reconcile", "orders"]])
def test_sync_and_reconcile_name_an_unknown_instance_and_the_known_ones(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "instances.yaml").write_text("instances:\n  us: {}\n")  # sandbox: no URL, no secret
    monkeypatch.setenv("M3BNG_INSTANCES_FILE", str(tmp_path / "instances.yaml"))
    line = one_line_failure(run(*command, "--instance", "nowhere"))
    assert "--instance 'nowhere'" in line and "known: default, us" in line
