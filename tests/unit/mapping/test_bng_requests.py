"""Mappings that write to BNG: method, path with parameters, and a typed, nested JSON body."""

from __future__ import annotations

from pathlib import Path

import pytest

from m3bng.mapping import MappingError, MappingFileError, load_mapping

MAPPING = """
version: 1
flow: customer_to_bng
source: ion
target: bng
trigger: [SyncCustomerPartyMaster]
keys:
  M3Key: {from: "PartyIDs.ID[0]", required: true}
calls:
  upsert:
    method: PUT
    path: /api/v1/customers/{CustomerID}
    params:
      CustomerID: {from: _ctx.BngID, required: true}
    fields:
      CustomerID: _ctx.BngID
      CompanyName: Name
      Email: "Communication[?ChannelCode=='EMail'].URI | [0]"
      BillingAddress.City: Location.Address.CityName
      BillingAddress.Country: {from: Location.Address.CountryCode, upper: true}
      CreditLimit: {from: Limit, type: decimal}
      Lines: Lines
      Since: {from: Created, type: date}
      Active: {from: Active, type: bool}
  lines:
    for_each: Lines
    method: PATCH
    path: /api/v1/things/{Id}
    params:
      Id: {from: _line}
    fields:
      Number: {from: _number, type: int}
"""

BOD_DATA = {
    "PartyIDs": {"ID": ["10001"]},
    "Name": "Nordic Bikes",
    "Communication": [
        {"ChannelCode": "Telephone", "DialNumber": "+46 8 1"},
        {"ChannelCode": "EMail", "URI": "ann@example.com"},
    ],
    "Location": {"Address": {"CityName": "Stockholm", "CountryCode": "se"}},
    "Limit": "5000.50",
    "Lines": ["a/b", "c"],
    "Created": "20261124",
    "Active": "true",
}


@pytest.fixture
def mapping(tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "customer_to_bng.yaml"
    path.write_text(MAPPING)
    return load_mapping(path)


def test_body_is_typed_and_nested_and_path_is_quoted(mapping) -> None:  # type: ignore[no-untyped-def]
    assert mapping.key("M3Key", BOD_DATA) == "10001"
    [request] = mapping.requests("upsert", BOD_DATA, {"BngID": "C 1/x"})
    assert request.method == "PUT"
    assert request.path == "/api/v1/customers/C%201%2Fx"
    assert request.body == {
        "CustomerID": "C 1/x",
        "CompanyName": "Nordic Bikes",
        "Email": "ann@example.com",
        "BillingAddress": {"City": "Stockholm", "Country": "SE"},
        "CreditLimit": 5000.5,
        "Lines": ["a/b", "c"],  # an untyped list or object passes through to the JSON body
        "Since": "2026-11-24",
        "Active": True,
    }


def test_for_each_makes_one_request_per_element(mapping) -> None:  # type: ignore[no-untyped-def]
    requests = mapping.requests("lines", BOD_DATA, {})
    assert [(r.path, r.body) for r in requests] == [
        ("/api/v1/things/a%2Fb", {"Number": 1}),
        ("/api/v1/things/c", {"Number": 2}),
    ]


def test_missing_path_parameter_names_it(mapping) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MappingError, match=r"upsert, field params.CustomerID"):
        mapping.requests("upsert", BOD_DATA, {})


def test_an_mi_call_is_not_a_bng_request(mapping) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MappingError, match="is a BNG request"):
        mapping.call("upsert")


def test_preview_shows_bng_requests(mapping) -> None:  # type: ignore[no-untyped-def]
    previews = mapping.preview(BOD_DATA, {"BngID": "C-1"})
    assert previews[0].target == "bng"
    assert previews[0].operation == "PUT /api/v1/customers/C-1"
    assert previews[0].record["CompanyName"] == "Nordic Bikes"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("method: PUT\n    path: /x/{Id}\n    fields: {A: B}", "params has no rule for it"),
        ("method: PUT\n    path: /x\n    params: {Id: B}", "do not appear in path"),
        ("method: PUT\n    path: /x\n    fields: {'bad name': B}", "JSON names"),
        ("method: FETCH\n    path: /x", "method"),
    ],
)
def test_broken_bng_calls_name_file_line_and_problem(tmp_path: Path, call: str, message: str) -> None:
    path = tmp_path / "flow.yaml"
    path.write_text(f"version: 1\nflow: f\ntarget: bng\ntrigger: [X]\ncalls:\n  put:\n    {call}\n")
    with pytest.raises(MappingFileError) as info:
        load_mapping(path)
    text = str(info.value)
    assert message in text
    assert "flow.yaml:" in text
    assert ".bng." not in text and ".m3." not in text
