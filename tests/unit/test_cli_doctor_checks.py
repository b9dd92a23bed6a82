"""`m3bng doctor`'s checks that the end-to-end test cannot break on purpose: the clock (a host
clock cannot be moved in a test, so the gateway's Date header is), a settings file that does not
load, the sandbox."""

from __future__ import annotations

import json
import os
import time
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from m3bng.cli import app
from m3bng.cli.doctor import MAX_CLOCK_SKEW_SECONDS, _check_clock, _State, clock_skew
from m3bng.config import Settings
from m3bng.connectors.m3.client import M3Client, M3ClientConfig
from tests.support.webhooks import TEST_SECRET


def test_clock_skew_reads_the_date_header() -> None:
    now = time.time()
    assert abs(clock_skew(formatdate(now, usegmt=True), now) or 0) < 1.5
    assert (clock_skew(formatdate(now - 120, usegmt=True), now) or 0) > 118  # we are ahead
    assert clock_skew("not a date", now) is None


@pytest.mark.parametrize(("offset", "status"), [(0, "ok"), (-300, "fail"), (300, "fail"), (None, "skip")])
async def test_clock_check_against_the_gateways_date(offset: float | None, status: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        headers = {} if offset is None else {"Date": formatdate(time.time() + offset, usegmt=True)}
        return httpx.Response(401, headers=headers)

    m3 = M3Client(M3ClientConfig(base_url="https://gw.example/T/M3/m3api-rest"))
    m3.transport = httpx.MockTransport(answer)
    state = _State(Settings(webhook_secrets=[TEST_SECRET]), m3=m3)
    try:
        await _check_clock(state)
    finally:
        await m3.aclose()
    (check,) = state.checks
    assert check.status == status, check
    if status == "fail":
        assert f"limit {MAX_CLOCK_SKEW_SECONDS:.0f} s" in check.detail
        assert "NTP" in check.fix


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("M3BNG_"):
            monkeypatch.delenv(name)
    return tmp_path


def test_settings_that_do_not_load_are_one_failed_check(clean_env: Path) -> None:
    (clean_env / ".env").write_text("M3BNG_IONAPI_FILE=missing.ionapi\nM3BNG_WEBHOOK_SECRETS=" + TEST_SECRET)
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 1, result.output
    (check,) = json.loads(result.output)["checks"]
    assert check["name"] == "settings" and check["status"] == "fail"
    assert "M3BNG_IONAPI_FILE" in check["detail"]
    assert ".ionapi" in check["fix"]


def test_the_sandbox_is_not_ready_for_go_live(clean_env: Path) -> None:
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 1, result.output
    assert "FAIL  settings" in result.output
    assert "sandbox" in result.output
    assert "fix: set M3BNG_IONAPI_FILE and M3BNG_BNG_BASE_URL" in result.output
