from __future__ import annotations

from datetime import date
from decimal import Decimal

from m3bng.connectors.m3.client import MiValue
from m3bng.connectors.m3.metadata import FieldSpec, check_record, parse_lst_fields

SPECS = parse_lst_fields(
    [
        {"FLNM": "CUNO      ", "FLDS": "Customer", "LENG": "10", "TYPE": "A", "MAND": "0"},
        {"FLNM": "CUNM", "FLDS": "Name", "LENG": "36", "TYPE": "A", "MAND": "1"},
        {"FLNM": "ORQT", "FLDS": "Quantity", "LENG": "15", "TYPE": "N", "MAND": "0"},
        {"FLNM": "ORDT", "FLDS": "Order date", "LENG": "8", "TYPE": "D", "MAND": "0"},
    ]
)


def test_parse_lst_fields() -> None:
    assert SPECS["CUNO"] == FieldSpec("CUNO", 10, "A", False, "Customer")
    assert SPECS["CUNM"].mandatory and SPECS["ORQT"].type == "N"


def test_a_fitting_record_has_no_problems() -> None:
    record: dict[str, MiValue] = {
        "CUNO": "10001",
        "CUNM": "ACME",
        "ORQT": Decimal("2.5"),
        "ORDT": date(2026, 11, 24),
    }
    assert check_record("CRS610MI", "Add", SPECS, record) == []


def test_every_problem_is_named() -> None:
    record = {"CUNO": "X" * 11, "ORQT": "2,5", "ORDT": "2026-11-24", "ZZZZ": "1"}
    problems = [str(p) for p in check_record("CRS610MI", "Add", SPECS, record)]
    assert problems == [
        "CUNM: is mandatory in CRS610MI/Add",
        "CUNO: is 11 characters; M3 allows 10",
        "ORQT: must be a number with '.' as decimal point, got '2,5'",
        "ORDT: must be a date as yyyyMMdd, got '2026-11-24'",
        "ZZZZ: is not an input field of CRS610MI/Add",
    ]
    assert [str(p) for p in check_record("X", "Y", SPECS, {"CUNM": "A", "ORDT": "20261331"})] == [
        "ORDT: must be a date as yyyyMMdd, got '20261331'"
    ]
