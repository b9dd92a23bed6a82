from __future__ import annotations

import json

import pytest
import structlog

from m3bng.observability.logging import configure_logging


def test_json_logs_mask_secrets_and_personal_data(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    try:
        structlog.contextvars.bind_contextvars(correlation_id="abc")
        structlog.get_logger("t").info(
            "call",
            client_secret="s3cret",
            headers={"Authorization": "Bearer xyz", "Accept": "json"},
            customer={"Email": "a@b.c", "Phone": "+1", "BillingAddress": {"Street": "Main 1"}, "Name": "Ann"},
            metrics=3,
        )
    finally:
        structlog.contextvars.clear_contextvars()
        configure_logging("WARNING", "console")
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["correlation_id"] == "abc"
    assert line["client_secret"] == "***"
    assert line["headers"] == {"Authorization": "***", "Accept": "json"}
    # The ops API's masking rules (m3bng.ops.masking): recognisable, never the full value.
    assert line["customer"] == {
        "Email": "a***@b***.c",
        "Phone": "***",
        "BillingAddress": {"Street": "M***"},
        "Name": "Ann",
    }
    assert line["metrics"] == 3
    assert "s3cret" not in json.dumps(line) and "xyz" not in json.dumps(line)
