from __future__ import annotations

import textwrap
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from m3bng.mapping import Mapping, MappingError, MappingFileError, load_mapping, load_mappings

REPO = Path(__file__).resolve().parents[3]


def write(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


BASE = """\
version: 1
flow: demo
trigger: [product.created]
vars: {warehouse: "100"}
lookups: {category: lookups/category.yaml}
calls:
  add:
    program: MMS200MI
    transaction: AddItmBasic
    fields:
"""


@pytest.fixture
def make(tmp_path: Path) -> Any:
    (tmp_path / "lookups").mkdir()
    (tmp_path / "lookups" / "category.yaml").write_text('Bikes: "BIK"\nParts: PRT\n')

    def build(fields: str) -> Mapping:
        return load_mapping(write(tmp_path, BASE + textwrap.indent(textwrap.dedent(fields), " " * 6)))

    return build


def render(mapping: Mapping, data: dict[str, Any], **ctx: Any) -> dict[str, str]:
    [record] = mapping.render("add", data, ctx)
    return record


def test_every_rule_type(make: Any) -> None:
    mapping = make(
        """\
        ITNO: SKU
        ITDS: {from: Name, truncate: 10}
        FUDS: {concat: [Brand, Name], sep: " - "}
        ITCL: {lookup: category, from: ProductCategory, default: "OTH"}
        WHLO: {var: warehouse}
        STAT: {when: [{if: "Status == 'Active'", then: {value: "20"}}], else: {value: "90"}}
        RGDT: {from: Created, type: date}
        PUPR: {from: Price, type: decimal}
        UNMS: {from: Unit, default: "PCS", upper: true}
        """
    )
    data = {
        "SKU": "A-1",
        "Name": "Mountain bike deluxe",
        "Brand": "Acme",
        "ProductCategory": "Bikes",
        "Status": "Active",
        "Created": "2026-11-24T10:00:00Z",
        "Price": 1299.5,
    }
    assert render(mapping, data) == {
        "ITNO": "A-1",
        "ITDS": "Mountain b",
        "FUDS": "Acme - Mountain bike deluxe",
        "ITCL": "BIK",
        "WHLO": "100",
        "STAT": "20",
        "RGDT": "20261124",
        "PUPR": "1299.5",
        "UNMS": "PCS",
    }
    other = render(mapping, {**data, "ProductCategory": "Boats", "Status": "Retired", "Brand": None})
    assert (other["ITCL"], other["STAT"], other["FUDS"]) == ("OTH", "90", "Mountain bike deluxe")


def test_required_and_length_errors_name_the_field(make: Any) -> None:
    mapping = make(
        """\
        ITNO: {from: SKU, required: true}
        ITDS: {from: Name, max_length: 5}
        """
    )
    with pytest.raises(MappingError, match="field ITNO: a value is required but 'SKU' gives none"):
        render(mapping, {"Name": "x"})
    with pytest.raises(MappingError, match="field ITDS: 8 characters; at most 5"):
        render(mapping, {"SKU": "A", "Name": "too long"})


def test_m3_field_lengths_from_metadata_truncate_or_refuse(make: Any) -> None:
    mapping = make(
        """\
        ITDS: {from: Name, truncate: true}
        FUDS: Name
        """
    )
    [record] = mapping.render("add", {"Name": "x" * 40}, field_lengths={"ITDS": 30, "FUDS": 60})
    assert len(record["ITDS"]) == 30 and len(record["FUDS"]) == 40
    with pytest.raises(MappingError, match="FUDS: 40 characters; at most 30"):
        mapping.render("add", {"Name": "x" * 40}, field_lengths={"ITDS": 30, "FUDS": 30})


def test_bad_date_and_number(make: Any) -> None:
    mapping = make(
        """\
        RGDT: {from: D, type: date}
        PUPR: {from: P, type: decimal}
        """
    )
    with pytest.raises(MappingError, match="'24/11/2026' is not a date"):
        render(mapping, {"D": "24/11/2026"})
    with pytest.raises(MappingError, match="'abc' is not a number"):
        render(mapping, {"P": "abc"})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("ITNO: {from: SKU, value: x}", "exactly one of"),
        ("ITNO: {truncate: true}", "exactly one of"),
        ("ITNO: {from: SKU, colour: red}", "Extra inputs are not permitted"),
        ("itno: SKU", "M3 field names"),
        ("ITNO: {var: nope}", "unknown var 'nope'"),
        ("ITNO: {lookup: nope, from: SKU}", "unknown lookup table 'nope'"),
        ("ITNO: {from: 'SKU[[['}", "bad path"),
    ],
)
def test_broken_mappings_report_file_line_and_problem(make: Any, fields: str, message: str) -> None:
    with pytest.raises(MappingFileError) as info:
        make(fields)
    text = str(info.value)
    assert message in text
    assert "flow.yaml:11:" in text  # the line of the offending rule


def test_invalid_yaml_and_duplicate_triggers(tmp_path: Path) -> None:
    write(tmp_path, "version: 1\nflow: [unclosed\n", "a.yaml")
    with pytest.raises(MappingFileError, match=r"a.yaml:\d+: invalid YAML"):
        load_mappings(tmp_path)
    (tmp_path / "a.yaml").unlink()
    one = BASE.replace("lookups: {category: lookups/category.yaml}\n", "") + "      ITNO: SKU\n"
    write(tmp_path, one, "a.yaml")
    write(tmp_path, one.replace("flow: demo", "flow: demo2"), "b.yaml")
    with pytest.raises(
        MappingFileError, match=r"trigger 'product\.created' is already handled by flow 'demo'"
    ):
        load_mappings(tmp_path)


def test_master_names_bng_or_m3(tmp_path: Path) -> None:
    """``master`` decides whether ``m3bng sync --to m3`` may load M3 from BNG: only a known value."""
    one = BASE.replace("lookups: {category: lookups/category.yaml}\n", "") + "      ITNO: SKU\n"
    assert load_mapping(write(tmp_path, one)).spec.master == "m3"  # the default
    assert (
        load_mapping(write(tmp_path, one.replace("version: 1\n", "version: 1\nmaster: bng\n"))).spec.master
        == "bng"
    )
    with pytest.raises(MappingFileError, match=r"flow.yaml:2: master: Input should be 'm3' or 'bng'"):
        load_mapping(write(tmp_path, one.replace("version: 1\n", "version: 1\nmaster: web\n")))


def test_shipped_mappings_load_and_hash_changes_with_content(tmp_path: Path) -> None:
    mappings = load_mappings(REPO / "mappings")
    assert set(mappings) == {
        "customer_sync",
        "order_to_cash",
        "order_update",
        "product_sync",
        "vendor_sync",
        "inventory_adjustment",
        "purchase_order",
        "supplier_invoice",
        "gl_entry",
        "payment",
        # M3 → BNG
        "order_status",
        "customer_to_bng",
        "product_to_bng",
        "vendor_to_bng",
        "inventory_to_bng",
        "inventory_poll",
        "invoice_to_bng",
    }
    hashes = {m.content_hash for m in mappings.values()}
    assert len(hashes) == len(mappings)


@given(
    st.one_of(
        st.dates(min_value=date(1900, 1, 1), max_value=date(2999, 12, 31)),
        st.datetimes(min_value=__import__("datetime").datetime(1900, 1, 1)),
    )
)
def test_property_dates_always_become_yyyymmdd(value: Any) -> None:
    mapping = _date_mapping()
    as_iso = value.isoformat()
    for candidate in (value, as_iso):
        [record] = mapping.render("add", {"D": candidate})
        assert record["RGDT"] == value.strftime("%Y%m%d")


@given(st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-(10**9), max_value=10**9))
def test_property_decimals_round_trip_with_a_dot(value: Decimal) -> None:
    mapping = _date_mapping()
    [record] = mapping.render("add", {"P": str(value)})
    assert "," not in record["PUPR"] and "E" not in record["PUPR"]
    assert Decimal(record["PUPR"]) == value


@given(st.text(max_size=200), st.integers(min_value=1, max_value=60))
def test_property_truncate_never_exceeds_the_limit(text: str, limit: int) -> None:
    mapping = _date_mapping()
    [record] = mapping.render("add", {"N": text}, field_lengths={"ITDS": limit})
    assert len(record.get("ITDS", "")) <= limit
    assert text.startswith(record.get("ITDS", ""))


_cache: dict[str, Mapping] = {}


def _date_mapping() -> Mapping:
    if "m" not in _cache:
        import tempfile

        folder = Path(tempfile.mkdtemp())
        _cache["m"] = load_mapping(
            write(
                folder,
                BASE.replace("lookups: {category: lookups/category.yaml}\n", "")
                + "      RGDT: {from: D, type: date}\n      PUPR: {from: P, type: decimal}\n"
                + "      ITDS: {from: N, truncate: true}\n",
            )
        )
    return _cache["m"]
