"""The M3 simulator speaks M3 as Infor's published metadata describes it, not as m3bng expects.

The data file is the only source of the simulator's transactions and fields; these tests fail
if a hand-written exception creeps in (a field added to fit a mapping, a dropped mandatory flag).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from m3bng.sim.m3 import build_metadata, programs
from m3bng.sim.m3.programs import HANDLERS, MIError, State, execute, load_seed
from m3bng.sim.m3.specs import DATA_FILE, PROGRAMS

DATA: dict[str, Any] = json.loads(DATA_FILE.read_text(encoding="utf-8"))


def fresh_state() -> State:
    state = State()
    state.seed(load_seed())
    return state


def test_the_simulator_spec_is_the_data_file_and_nothing_else() -> None:
    assert set(PROGRAMS) == set(DATA["programs"])
    for program, pdata in DATA["programs"].items():
        assert set(PROGRAMS[program]) == set(pdata["transactions"]), program
        for name, tdata in pdata["transactions"].items():
            spec = PROGRAMS[program][name]
            assert [(f.name, f.type, f.length, f.mandatory, f.description) for f in spec.inputs.values()] == [
                (f["name"], f["type"], f["length"], f["mandatory"], f["description"]) for f in tdata["inputs"]
            ], f"{program}/{name} inputs"
            assert [(f.name, f.type, f.length) for f in spec.outputs.values()] == [
                (f["name"], f["type"], f["length"]) for f in tdata["outputs"]
            ], f"{program}/{name} outputs"


def test_every_handler_is_a_transaction_the_metadata_lists() -> None:
    assert [
        key for key in HANDLERS if key[1] not in DATA["programs"].get(key[0], {}).get("transactions", {})
    ] == []


def test_data_file_is_what_the_converter_writes() -> None:
    """Regenerating from the converted data itself changes nothing: the file is the converter's
    output, byte for byte, never edited by hand."""
    assert build_metadata.dump(DATA) == DATA_FILE.read_text(encoding="utf-8")
    assert DATA["source"]["repository"] == "GaryWayneSmith/M3H5"
    assert DATA["source"]["commit"] == "62f027a9ceaa027138bb193aaffb1745c3f5c6fd"


def test_input_lengths_come_from_output_lists_and_are_marked() -> None:
    head = {f["name"]: f for f in DATA["programs"]["OIS100MI"]["transactions"]["AddBatchHead"]["inputs"]}
    assert head["CUOR"]["length"] == 20 and head["CUOR"]["length_from"] in ("output", "program")
    assert head["ORDT"]["length"] == 8 and head["ORDT"]["length_from"] == "date"
    gl = {f["name"]: f for f in DATA["programs"]["GLS840MI"]["transactions"]["AddBatchHead"]["inputs"]}
    assert gl["KEY1"]["length"] is None and gl["KEY1"]["length_from"] == "unverified"


@pytest.mark.parametrize(
    ("program", "transaction", "field"),
    [
        ("CRS610MI", "Add", "CUCD"),  # the currency comes from the template, not from Add
        ("OIS100MI", "LstHead", "CUOR"),  # LstHead takes CUNO, CONO, ORSL, ORST only
        ("APS450MI", "AddLine", "AIT1"),
        ("APS450MI", "AddLine", "VTXT"),
        ("CRS620MI", "AddSupplier", "SUA1"),
        ("CRS620MI", "AddSupplier", "MAIL"),
        ("MMS080MI", "LstItemWarehous", "FITN"),
    ],
)
def test_a_field_the_transaction_does_not_list_is_refused(program: str, transaction: str, field: str) -> None:
    assert field not in PROGRAMS[program][transaction].inputs
    with pytest.raises(MIError) as refused:
        programs.validate(program, transaction, {field: "X"})
    assert refused.value.field == field and "not defined" in refused.value.message


@pytest.mark.parametrize(
    ("program", "transaction", "mandatory"),
    [
        ("CRS610MI", "Add", {"CUTM", "CUNM", "CUA1"}),
        ("GLS840MI", "AddBatchHead", {"CONO", "KEY1", "INTN", "DESC"}),
        ("MMS850MI", "AddAdjust", {"E0PA", "E065", "WHLO"}),
        ("APS450MI", "LstInvBySupInv", {"SPYN", "SUNO", "SINO"}),
    ],
)
def test_mandatory_fields_are_those_of_the_metadata(
    program: str, transaction: str, mandatory: set[str]
) -> None:
    assert {f.name for f in PROGRAMS[program][transaction].inputs.values() if f.mandatory} == mandatory
    with pytest.raises(MIError) as refused:
        programs.validate(program, transaction, {})
    assert refused.value.field in mandatory and "must be entered" in refused.value.message


def test_lengths_and_types_are_checked() -> None:
    with pytest.raises(MIError) as long:
        programs.validate("OIS100MI", "AddBatchHead", {"CUNO": "10001", "CUOR": "X" * 21})
    assert long.value.field == "CUOR" and long.value.error_type == "InputFieldTooLong"
    with pytest.raises(MIError) as date:
        programs.validate("OIS100MI", "AddBatchHead", {"CUNO": "10001", "ORDT": "2026-11-24"})
    assert date.value.field == "ORDT"
    with pytest.raises(MIError) as number:
        programs.validate("GLS840MI", "AddBatchLine", {"CONO": "1x0", "KEY1": "K", "LINE": "1", "PARM": "p"})
    assert number.value.field == "CONO"


def test_answers_carry_only_the_transactions_output_fields() -> None:
    state = fresh_state()
    [head] = execute(state, "OIS100MI", "AddBatchHead", {"CUNO": "10001", "CUOR": "SO-1"})
    assert list(head) == ["ORNO"]
    execute(state, "OIS100MI", "AddBatchLine", {"ORNO": head["ORNO"], "ITNO": "BIKE-100", "CUPO": "1"})
    [confirmed] = execute(state, "OIS100MI", "Confirm", {"ORNO": head["ORNO"]})
    rows = execute(state, "OIS100MI", "LstHead", {"CUNO": "10001"})
    assert list(rows[0]) == list(PROGRAMS["OIS100MI"]["LstHead"].outputs)
    assert "CUNO" not in rows[0]  # LstHead answers no customer number
    assert execute(state, "OIS100MI", "GetOrderNo", {"ORNO": head["ORNO"]}) == [{"ORNR": confirmed["ORNO"]}]
    with pytest.raises(MIError, match="does not exist"):  # a confirmed batch is gone
        execute(state, "OIS100MI", "Confirm", {"ORNO": head["ORNO"]})


def test_customers_by_name_start_at_the_given_name() -> None:
    state = fresh_state()
    rows = execute(state, "CRS610MI", "LstByName", {"CUNM": "Fjord"}, maxrecs=2)
    assert [row["CUNM"] for row in rows] == ["Fjord Cycles AS", "Nordic Bikes AB"]
    assert list(rows[0]) == list(PROGRAMS["CRS610MI"]["LstByName"].outputs)


def test_a_transaction_the_simulator_does_not_implement_says_so() -> None:
    with pytest.raises(MIError) as missing:
        execute(
            fresh_state(),
            "OIS100MI",
            "GetOrderPromise",
            {"ITNO": "BIKE-100", "ORQT": "1", "DWDT": "20261224"},
        )
    assert missing.value.error_type == "NotImplementedInSimulator"
    with pytest.raises(MIError) as unknown:
        execute(fresh_state(), "OIS100MI", "AddHead", {})
    assert unknown.value.error_type == "TransactionNotFound"


def test_blocked_item_is_refused_naming_it() -> None:
    state = fresh_state()
    state.items["BIKE-100"]["STAT"] = "50"
    [head] = execute(state, "OIS100MI", "AddBatchHead", {"CUNO": "10001"})
    with pytest.raises(MIError) as blocked:
        execute(state, "OIS100MI", "AddBatchLine", {"ORNO": head["ORNO"], "ITNO": "BIKE-100"})
    assert blocked.value.message == "Item BIKE-100 is blocked for sales" and blocked.value.field == "ITNO"


def test_metadata_transactions_answer_from_the_data_file() -> None:
    state = fresh_state()
    names = [r["TRNM"] for r in execute(state, "MRS001MI", "LstTransactions", {"MINM": "GLS840MI"})]
    assert sorted(names) == sorted(DATA["programs"]["GLS840MI"]["transactions"])
    fields = execute(
        state, "MRS001MI", "LstFields", {"MINM": "GLS840MI", "TRNM": "AddBatchHead", "TRTP": "I"}
    )
    assert {r["FLNM"]: r["MAND"] for r in fields} == {
        "CONO": "1",
        "KEY1": "1",
        "INTN": "1",
        "DESC": "1",
        "DIVI": "0",
        "USID": "0",
    }
    assert {r["FLNM"]: r["LENG"] for r in fields}["KEY1"] == "0"  # no public source gives it
