"""How MI errors are classified, checked against real M3 texts (tests/fixtures/m3_messages.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from m3bng.connectors.m3.errors import (
    M3Blocked,
    M3DataError,
    M3Duplicate,
    M3NotFound,
    M3RecordLocked,
    classify_mi_error,
)
from m3bng.errors import PermanentError, TransientError

TABLE: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "fixtures" / "m3_messages.yaml").read_text()
)


def entry_id(entry: dict[str, Any]) -> str:
    return f"{entry['code'] or entry['error_type']}:{entry['message'].strip()[:40]}"


@pytest.mark.parametrize("entry", TABLE, ids=[entry_id(e) for e in TABLE])
def test_every_known_message_gets_its_class(entry: dict[str, Any]) -> None:
    error = classify_mi_error(
        "MMS200MI",
        "Upd",
        entry["message"],
        code=entry["code"],
        field=entry["field"],
        error_type=entry["error_type"],
    )
    assert error.error_class == entry["class"]  # type: ignore[attr-defined]


def test_the_table_covers_every_kind_and_names_its_sources() -> None:
    kinds = {e["class"] for e in TABLE}
    assert {"locked", "blocked", "not_found", "duplicate", "data", "program"} <= kinds
    for entry in TABLE:
        assert entry["source"] and isinstance(entry["verified"], bool)
        if entry["verified"]:
            assert entry["source"] not in ("m3bng simulator", "m3bng issue 14")


@pytest.mark.parametrize(
    "message",
    [
        "Item BIKE-100 is blocked for sales",
        "Customer 10001 is blocked",
        "ITEM BIKE-100 BLOCKED",
        "Supplier 2001 is blocked - record locked",  # both: the block outlasts any lock
    ],
)
def test_blocked_is_never_a_lock(message: str) -> None:
    error = classify_mi_error("OIS100MI", "AddBatchLine", message, field="ITNO")
    assert isinstance(error, M3Blocked) and isinstance(error, M3DataError)
    assert isinstance(error, PermanentError) and not isinstance(error, TransientError)


def test_lock_words_need_whole_words() -> None:
    assert not isinstance(classify_mi_error("CRS610MI", "Chg", "Record unlocked"), M3RecordLocked)
    assert isinstance(classify_mi_error("CRS610MI", "Chg", "Record is locked"), M3RecordLocked)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("Record is reserved by another user", None),
        ("Record is locked", None),
        ("Item BIKE-100 is in use by another job", None),
        ("The record has been changed by user JSMITH", "XUP0001"),
    ],
)
def test_a_lock_is_retried(message: str, code: str | None) -> None:
    error = classify_mi_error("MMS200MI", "UpdItmBasic", message, code=code)
    assert isinstance(error, M3RecordLocked) and isinstance(error, TransientError)
    assert error.retry_after is not None and error.retry_after > 0


def test_the_blocked_error_names_the_item_and_field() -> None:
    error = classify_mi_error(
        "OIS100MI", "AddBatchLine", "Item BIKE-100 is blocked for sales   ", field="ITNO  "
    )
    assert str(error) == "OIS100MI/AddBatchLine: Item BIKE-100 is blocked for sales (field ITNO)"
    assert (error.field, error.mi_message) == ("ITNO", "Item BIKE-100 is blocked for sales")


def test_the_value_sent_is_named_when_m3_leaves_it_out() -> None:
    error = classify_mi_error(
        "OIS100MI",
        "AddBatchLine",
        "Item number is not permitted - status is 90",
        code="XIT0107",
        field="ITNO",
        value="BIKE-100",
    )
    assert isinstance(error, M3Blocked)
    assert str(error) == (
        "OIS100MI/AddBatchLine: Item number is not permitted - status is 90 "
        "(code XIT0107, field ITNO = BIKE-100)"
    )
    assert error.describe()["value"] == "BIKE-100"


def test_the_message_id_wins_over_the_text() -> None:
    # M3 translates its texts per user; the id stays the same.
    assert isinstance(
        classify_mi_error("CRS610MI", "Get", "Kundnummer 99 finns inte", code="WCU0203"), M3NotFound
    )
    assert isinstance(
        classify_mi_error("CRS610MI", "Add", "Kunde 99 existiert bereits", code="wcu0204 "), M3Duplicate
    )
    # An id whose meaning is not known leaves the decision to the text.
    assert isinstance(
        classify_mi_error("CRS610MI", "Add", "Customer 1 already exists", code="XRE0101"), M3Duplicate
    )


def test_the_error_type_wins_over_the_text() -> None:
    error = classify_mi_error(
        "CRS610MI", "Add", "Mandatory input field CUNO not found", error_type="MandatoryInputFieldNotFound"
    )
    assert type(error) is M3DataError
