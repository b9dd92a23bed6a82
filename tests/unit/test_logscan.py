"""The log scan of the whole test run (tests/support/logscan.py) catches what it is meant to.

Planted secrets and personal data are logged on purpose here, into a diverted capture (so the
session's own scan stays clean), and once in a separate pytest run, to prove that a leak fails
the session and names the test that leaked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import structlog

from m3bng.connectors.bng.samples import sample
from m3bng.observability.logging import configure_logging
from tests.conftest import REPO_ROOT
from tests.support import logscan
from tests.support.webhooks import TEST_SECRET

EMAIL = sample("customer.created")["Email"]


def scanner() -> logscan.Scanner:
    return logscan.Scanner({**logscan.known_secrets(), **logscan.personal_data()}, logscan.PATTERNS)


def test_the_lists_hold_what_they_should() -> None:
    secrets = logscan.known_secrets()
    assert TEST_SECRET in secrets.values()
    assert {"sandbox-client-secret", "sandbox-service-secret", "M3BNG_SANDBOX#m3bng-service"} <= set(
        secrets.values()
    )
    personal = logscan.personal_data().values()
    assert EMAIL in personal and "+46 8 123 456" in personal and "orders@acme.example" in personal


@pytest.mark.parametrize(
    ("line", "what"),
    [
        (f'{{"event": "sent", "secret": "{TEST_SECRET}"}}', "webhook secret TEST_SECRET"),
        ('{"event": "token m3bng_ops_test-admin-token-0123456789abcdef"}', "ops token ops:admin"),
        ('{"event": "call", "detail": "client_secret=sandbox-client-secret"}', "M3 simulator client secret"),
        (f'{{"event": "customer {EMAIL} created"}}', "email from sample customer.created"),
        ('{"event": "phone +46 8 123 456"}', "phone from sample customer.created"),
        ('{"event": "new secret whsec_c29tZXRoaW5nLWVsc2UtZW50aXJlbHk="}', "a whsec_ webhook secret"),
        ('{"event": "header Authorization: Bearer abcdefghijklmnop"}', "an Authorization header value"),
        ('{"event": "mail to someone.else@elsewhere.org"}', "an unmasked e-mail address"),
    ],
)
def test_the_scanner_finds_a_planted_secret_or_address(line: str, what: str) -> None:
    leaks = scanner().scan([("tests/x.py::test_leaky", line)])
    assert [(leak.test, leak.what) for leak in leaks][:1] == [("tests/x.py::test_leaky", what)]
    assert "[" + what + "]" in leaks[0].line  # shown with the secret replaced by its label
    assert all(value not in leaks[0].line for value in (TEST_SECRET, EMAIL))


@pytest.mark.parametrize(
    "line",
    [
        '{"event": "call", "client_secret": "***", "email": "a***@v***.example", "phone": "***56"}',
        '{"event": "event.received", "source": "bng", "external_id": "msg_1"}',
        '{"event": "db", "url": "postgresql+asyncpg://postgres@127.0.0.1:5432/m3bng_t"}',
        '{"event": "challenge", "www-authenticate": "Basic realm=\\"m3bng-ion\\""}',
    ],
)
def test_the_scanner_passes_masked_and_harmless_lines(line: str) -> None:
    assert scanner().scan([("t", line)]) == []


def test_app_lines_below_the_console_level_are_captured_with_the_test(
    request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    """An INFO line (not shown on the WARNING console) goes through the app's masking into the
    capture, tagged with this test; a secret under a secret key is masked, one in the message
    text is not, and the scan finds it."""
    capture = logscan.CAPTURE
    assert capture is not None, "tests/conftest.py installs the capture"
    # The suite's console, as tests/conftest.py sets it: a CLI command an earlier test ran in
    # this process configured logging as the command does (INFO to stderr).
    configure_logging("WARNING", "console")
    log = structlog.get_logger("m3bng.planted")
    with capture.diverted() as lines:
        log.info(f"planted {TEST_SECRET}", client_secret=TEST_SECRET, customer={"Email": EMAIL}, note=EMAIL)
        log.debug("planted debug line")
    assert capsys.readouterr().err == ""  # the console shows WARNING and above, as before
    assert [test for test, _ in lines] == [request.node.nodeid] * 2
    leaks = scanner().scan(lines)
    assert {leak.what for leak in leaks} == {"webhook secret TEST_SECRET"}  # both e-mails masked
    assert '"client_secret": "***"' in lines[0][1] and "a***@v***.example" in lines[0][1]


@pytest.mark.parametrize("workers", [None, "2"], ids=["one process", "xdist"])
def test_a_leak_fails_the_session_and_names_the_test(tmp_path: Path, workers: str | None) -> None:
    """Also under pytest-xdist, where the leak is logged in a worker and the controller scans."""
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from m3bng.observability.logging import configure_logging
            from tests.support import logscan


            def pytest_configure(config: pytest.Config) -> None:
                logscan.configure(config)
                configure_logging("WARNING", "console")
                config.pluginmanager.register(logscan, "m3bng-logscan")
            """
        )
    )
    (tmp_path / "test_planted.py").write_text(
        textwrap.dedent(
            f"""
            import structlog

            def test_clean():
                structlog.get_logger("x").info("nothing to see", client_secret="{TEST_SECRET}")

            def test_leaky():
                structlog.get_logger("x").info("oops {TEST_SECRET}")
            """
        )
    )
    # Only the plugins the scan needs (its own, registered by the conftest above, and xdist's):
    # loading every installed one (schemathesis, hypothesis, …) took seconds in each process.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            *(["-p", "xdist", "-n", workers] if workers else []),
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    kept = re.search(r"every captured line: (\S+)", out)
    if kept is not None:  # kept for inspection after a leak: this leak was planted
        Path(kept.group(1)).unlink(missing_ok=True)
    kept_workers = re.search(r"and the xdist workers' lines: (\S+)", out)
    if kept_workers is not None:
        shutil.rmtree(kept_workers.group(1), ignore_errors=True)
    assert result.returncode == 1, out + result.stderr
    assert "2 passed" in out
    assert "log scan: secrets or personal data in the logs" in out
    assert "test_planted.py::test_leaky: webhook secret TEST_SECRET" in out
    assert "test_clean" not in out.split("log scan:")[1]
    assert TEST_SECRET not in out
