"""Fix suggestions offline: how a dead letter's cause is read, how candidates are ranked and
explained, the bounded M3 reads, payload edits, and the remedy catalogue."""

from __future__ import annotations

from typing import Any

import pytest

from m3bng.assist import fixes
from m3bng.connectors.m3.errors import classify_mi_error
from m3bng.errors import M3bngError

ITEMS = [
    {"ITNO": "BIKE-100", "ITDS": "City bike 7-speed", "STAT": "20"},
    {"ITNO": "BIKE-200", "ITDS": "Mountain bike", "STAT": "20"},
    {"ITNO": "HELMET-1", "ITDS": "Helmet, size M", "STAT": "20"},
    {"ITNO": "TUBE-26", "ITDS": "Inner tube 26 in", "STAT": "20"},
]
CUSTOMERS = [
    {
        "CUNO": "10001",
        "CUNM": "Nordic Bikes AB",
        "MAIL": "orders@nordicbikes.example",
        "PHNO": "+46 8 555 0101",
    },
    {"CUNO": "10002", "CUNM": "Fjord Cycles AS", "MAIL": "", "PHNO": ""},
    {"CUNO": "TEMPLATE", "CUNM": "Customer template"},
]


def order(**data: Any) -> dict[str, Any]:
    base = {
        "OrderID": "SO-1",
        "CustomerID": "10001",
        "OrderDate": "2026-11-24",
        "Lines": [{"SKU": "BIKE-10O", "Quantity": "1"}, {"SKU": "TUBE-26", "Quantity": "2"}],
    }
    return {"type": "order.created", "timestamp": "2026-11-24T10:00:00Z", "data": {**base, **data}}


class FakeM3:
    """A lister over fixed tables that pages by key as M3 does (from the key on, inclusive)."""

    def __init__(self, tables: dict[tuple[str, str], list[dict[str, str]]], fail: bool = False) -> None:
        self.tables, self.fail, self.calls = tables, fail, []  # type: ignore[var-annotated]

    async def __call__(
        self, program: str, transaction: str, record: dict[str, str], maxrecs: int
    ) -> list[dict[str, str]]:
        self.calls.append((program, transaction, dict(record), maxrecs))
        if self.fail:
            raise M3bngError("M3 unavailable")
        key = {"LstItmByItm": "ITNO", "LstByNumber": "CUNO", "LstByName": "CUNM"}[transaction]
        rows = sorted(self.tables[(program, transaction)], key=lambda r: r[key])
        start = record.get(key, "")
        return [r for r in rows if r[key] >= start][:maxrecs]


def context(payload: Any, m3: FakeM3 | None, **extra: Any) -> fixes.Context:
    return fixes.Context(
        event_type="order.created",
        source="bng",
        payload=payload,
        has_flow=lambda event_type: event_type in ("product.created", "customer.created"),
        lookups=fixes.Lookups(m3, max_records=extra.pop("max_records", 1000)),
        **extra,
    )


def m3() -> FakeM3:
    return FakeM3(
        {
            ("MMS200MI", "LstItmByItm"): ITEMS,
            ("CRS610MI", "LstByNumber"): CUSTOMERS,
            ("CRS610MI", "LstByName"): CUSTOMERS,
        }
    )


# -- classification ---------------------------------------------------------------------------------


def test_missing_item_of_the_order_flow_names_sku_and_line() -> None:
    cause = fixes.classify(
        "missing_reference",
        "item missing: SKU 'BIKE-10O' (line 1, M3 ITNO 'BIKE-10O') does not exist in M3 "
        "(MMS200MI/GetItmBasic)",
    )
    assert (cause.kind, cause.field, cause.value, cause.line) == ("missing_item", "ITNO", "BIKE-10O", 1)


def test_missing_customer_of_the_order_flow() -> None:
    cause = fixes.classify(
        "missing_reference",
        "customer missing: BNG customer 'C-9' (M3 CUNO 'C-9') does not exist in M3 and the order "
        "carries no Customer block to create it from; customer data: none",
    )
    assert (cause.kind, cause.field, cause.value) == ("missing_customer", "CUNO", "C-9")


@pytest.mark.parametrize(
    ("program", "transaction", "message", "code", "field", "value", "kind"),
    [
        (
            "OIS100MI",
            "AddBatchLine",
            "Item number X-1 does not exist",
            "WIT0103",
            "ITNO",
            "X-1",
            "missing_item",
        ),
        (
            "OIS100MI",
            "AddBatchHead",
            "Customer number NOPE does not exist",
            "XRE0103",
            "CUNO",
            "NOPE",
            "missing_customer",
        ),
        ("CRS610MI", "Add", "Input field CUNM is too long (max 36)", "XLE0001", "CUNM", None, "too_long"),
        (
            "OIS100MI",
            "AddBatchLine",
            "Item number is not permitted - status is 90",
            "XIT0107",
            "ITNO",
            "B",
            "m3_message",
        ),
    ],
)
def test_m3_errors_read_back_from_the_text_m3bng_records(
    program: str, transaction: str, message: str, code: str, field: str, value: str | None, kind: str
) -> None:
    """The step's error text is what ``connectors.m3.errors`` wrote; its parts come back out."""
    error = classify_mi_error(program, transaction, message, code=code, field=field, value=value)
    cause = fixes.classify(getattr(error, "error_class", None), None, str(error))
    assert (cause.kind, cause.program, cause.transaction, cause.code, cause.field) == (
        kind,
        program,
        transaction,
        code,
        field,
    )
    assert cause.value == value
    if kind == "too_long":
        assert cause.limit == 36


def test_mapping_length_error_is_a_value_too_long() -> None:
    cause = fixes.classify(
        "mapping",
        "mapping order_to_cash/head, field WHLO: 4 characters; at most 3 allowed (set truncate to cut)",
    )
    assert (cause.kind, cause.flow, cause.call, cause.field, cause.limit) == (
        "too_long",
        "order_to_cash",
        "head",
        "WHLO",
        3,
    )


def test_anything_else_is_unknown() -> None:
    assert fixes.classify("internal", "RuntimeError('boom')").kind == "unknown"


# -- ranking ------------------------------------------------------------------------------------------


def test_lookalike_characters_cost_half_an_edit() -> None:
    assert fixes.edit_distance("BIKE-10O", "BIKE-100") == 0.5
    assert fixes.edit_distance("BIKE-10O", "BIKE-200") == 1.5
    assert fixes.edit_distance("ab", "ba") == 1  # a swap is one edit


def test_items_rank_by_number_then_description() -> None:
    ranked = fixes.rank_items("BIKE-10O", ITEMS)
    assert [row["ITNO"] for _, _, row in ranked] == ["BIKE-100", "BIKE-200"]
    assert ranked[0][0] > ranked[1][0]
    with_description = fixes.rank_items("BIKE-1OO", ITEMS, description="mountain bike")
    assert with_description[0][2]["ITNO"] == "BIKE-200"
    assert with_description[0][1]["ITDS"] == 1.0


def test_separators_and_case_alone_still_make_a_candidate_and_blocked_items_come_last() -> None:
    rows = [*ITEMS, {"ITNO": "BIKE-1OO", "ITDS": "Old city bike", "STAT": "90"}]
    ranked = fixes.rank_items("bike 100", rows)
    assert ranked[0][2]["ITNO"] == "BIKE-100" and ranked[0][0] == 1.0
    # BIKE-1OO is as near BIKE-10O as BIKE-100 is, but status 90: after the active BIKE-200
    typo = fixes.rank_items("BIKE-10O", rows)
    assert [row["ITNO"] for _, _, row in typo] == ["BIKE-100", "BIKE-200", "BIKE-1OO"]
    assert fixes.blocked(rows[-1]) and not fixes.blocked(ITEMS[0])


def test_customers_rank_by_email_phone_name_number() -> None:
    by_email = fixes.rank_customers({"email": "ORDERS@nordicbikes.example", "number": "C-77"}, CUSTOMERS)
    assert by_email[0][2]["CUNO"] == "10001" and by_email[0][1]["MAIL"] == 1.0 and by_email[0][0] == 1.0
    by_phone = fixes.rank_customers({"phone": "08-555 01 01"}, CUSTOMERS)
    assert by_phone[0][2]["CUNO"] == "10001" and by_phone[0][1] == {"PHNO": 1.0}
    by_name = fixes.rank_customers({"name": "Fjord Cycles"}, CUSTOMERS)
    assert by_name[0][2]["CUNO"] == "10002" and by_name[0][1]["CUNM"] >= 0.6
    assert fixes.rank_customers({"name": "Zebra Unrelated Holding"}, CUSTOMERS) == []


# -- suggestions ------------------------------------------------------------------------------------


async def test_missing_item_suggests_the_nearest_items_and_creating_it() -> None:
    payload, fake = order(), m3()
    cause = fixes.classify(
        "missing_reference", "item missing: SKU 'BIKE-10O' (line 1, M3 ITNO 'BIKE-10O') ..."
    )
    report = await fixes.suggest(cause, context(payload, fake))
    first = report.suggestions[0]
    assert first.kind == "replace_item" and first.title.startswith("Use item BIKE-100")
    assert first.edit == [fixes.Change("data.Lines[0].SKU", "BIKE-10O", "BIKE-100")]
    assert "ITNO BIKE-100" in first.why and "MMS200MI/LstItmByItm" in first.why
    assert [s.kind for s in report.suggestions][-1] == "create_item"
    # One read, from the SKU's first character (LstItmByItm's ITNO is mandatory: a key to start at)
    assert fake.calls == [("MMS200MI", "LstItmByItm", {"ITNO": "B"}, fixes.PAGE_SIZE)]
    edited = fixes.apply_edit(payload, first.edit)
    assert (
        edited["data"]["Lines"][0]["SKU"] == "BIKE-100" and payload["data"]["Lines"][0]["SKU"] == "BIKE-10O"
    )


async def test_reads_are_capped_and_say_so() -> None:
    many = [{"ITNO": f"BIKE-{n:04d}", "ITDS": "bike"} for n in range(50)]
    fake = FakeM3({("MMS200MI", "LstItmByItm"): many})
    lookups = fixes.Lookups(fake, max_records=20)
    rows = await lookups.read("MMS200MI", "LstItmByItm", "ITNO", "B")
    assert len(rows) == 20 and len({r["ITNO"] for r in rows}) == 20
    assert lookups.notes and "20 records" in lookups.notes[0]
    again = await lookups.read("MMS200MI", "LstItmByItm", "ITNO", "B")
    assert again is rows  # cached for the request


async def test_paging_by_key_reads_past_one_page() -> None:
    many = [{"ITNO": f"BIKE-{n:04d}"} for n in range(450)]
    fake = FakeM3({("MMS200MI", "LstItmByItm"): many})
    rows = await fixes.Lookups(fake).read("MMS200MI", "LstItmByItm", "ITNO", "B")
    assert len(rows) == 450 and len(fake.calls) == 3
    assert fake.calls[1][2] == {"ITNO": "BIKE-0199"}  # the next page starts at the last key


async def test_m3_failure_is_a_note_not_an_error() -> None:
    fake = FakeM3({}, fail=True)
    cause = fixes.Cause("missing_item", field="ITNO", value="BIKE-10O")
    report = await fixes.suggest(cause, context(order(), fake))
    assert [s.kind for s in report.suggestions] == ["create_item"]
    assert "failed" in report.notes[0]


async def test_missing_customer_by_email_edits_the_customer_id() -> None:
    payload = order(
        CustomerID="C-77", Customer={"CompanyName": "Nordic Bikes", "Email": "orders@nordicbikes.example"}
    )
    cause = fixes.Cause("missing_customer", field="CUNO", value="C-77")
    report = await fixes.suggest(cause, context(payload, m3(), option=lambda _name: False))
    first = report.suggestions[0]
    assert first.kind == "use_customer" and first.edit == [fixes.Change("data.CustomerID", "C-77", "10001")]
    assert "e-mail identical (MAIL)" in first.why and "name" in first.why
    assert "CRS610MI/LstByName" in first.why


async def test_customers_beyond_the_capped_number_list_are_found_by_name() -> None:
    many = [{"CUNO": f"{n:05d}", "CUNM": f"Filler {n}"} for n in range(30)]
    named = [*many, {"CUNO": "99999", "CUNM": "Velo Sport AB", "MAIL": "a@velo.example"}]
    fake = FakeM3({("CRS610MI", "LstByNumber"): named, ("CRS610MI", "LstByName"): named})
    payload = order(CustomerID="C-9", Customer={"CompanyName": "Velo Sport AB", "Email": "a@velo.example"})
    cause = fixes.Cause("missing_customer", field="CUNO", value="C-9")
    report = await fixes.suggest(cause, context(payload, fake, max_records=10))
    assert report.suggestions[0].title == "Use customer 99999 Velo Sport AB"
    assert ("CRS610MI", "LstByName", {"CUNM": "Vel"}, 11) in fake.calls
    assert any("LstByNumber" in note and "10 records" in note for note in report.notes)
    assert report.suggestions[-1].kind == "create_customer"
    assert "auto_create_customer is off" in report.suggestions[-1].why


async def test_value_too_long_is_cut_to_m3s_length() -> None:
    payload = order(Warehouse="1000")
    cause = fixes.Cause(
        "too_long", field="WHLO", program="OIS100MI", transaction="AddBatchHead", call="head", limit=3
    )

    async def length(program: str, transaction: str, name: str) -> int | None:
        return 3 if (program, transaction, name) == ("OIS100MI", "AddBatchHead", "WHLO") else None

    ctx = context(payload, None, field_length=length, rule_sources=lambda call, name: ["Warehouse"])
    report = await fixes.suggest(cause, ctx)
    [cut] = [s for s in report.suggestions if s.kind == "truncate"]
    assert cut.edit == [fixes.Change("data.Warehouse", "1000", "100")]
    assert "M3's length of WHLO" in cut.why


async def test_line_values_are_found_through_the_rule_source() -> None:
    payload = order(Lines=[{"SKU": "BIKE-100-WITH-A-LONG-NAME", "Quantity": "1"}])
    cause = fixes.Cause("too_long", field="ITNO", call="check_item", limit=15)
    ctx = context(payload, None, rule_sources=lambda call, name: ["_line.SKU"])
    [cut] = [s for s in (await fixes.suggest(cause, ctx)).suggestions if s.kind == "truncate"]
    assert cut.edit[0].path == "data.Lines[0].SKU" and cut.edit[0].after == "BIKE-100-WITH-A"


def test_apply_edit_refuses_a_payload_changed_since() -> None:
    with pytest.raises(fixes.FixError, match="not 'OLD'"):
        fixes.apply_edit(order(), [fixes.Change("data.CustomerID", "OLD", "NEW")])


# -- remedies -----------------------------------------------------------------------------------------


def test_every_remedy_is_marked_as_m3bngs_wording_and_can_match() -> None:
    keys = {"code", "error_type", "error_class", "field", "words"}
    for entry in fixes.remedies():
        assert entry["wording"] == "m3bng" and entry["remedy"].strip(), entry["id"]
        assert entry["message"] in ("m3", "simulator", "m3bng"), entry["id"]
        assert keys & set(entry), entry["id"]


@pytest.mark.parametrize(
    ("cause", "remedy"),
    [
        (
            fixes.Cause("m3_message", code="XIT0107", message="Item number is not permitted - status is 90"),
            "item-blocked-status",
        ),
        (
            fixes.Cause("m3_message", code="XBL0001", message="Item BIKE-100 is blocked for sales"),
            "item-blocked-for-sales",
        ),
        (
            fixes.Cause("m3_message", code="XAU0008", message="Not authorized for company 0"),
            "not-authorized-company",
        ),
        (fixes.Cause("too_long", message="Input field CUNM is too long (max 36)"), "field-too-long"),
        (fixes.Cause("unknown", error_class="unknown_outcome"), "unknown-outcome"),
        (fixes.Cause("m3_message", code="ZZZ9999", message="Something new"), None),
    ],
)
def test_remedy_catalogue_matches(cause: fixes.Cause, remedy: str | None) -> None:
    entry = fixes.remedy_for(cause)
    assert (entry["id"] if entry else None) == remedy


async def test_a_remedy_is_an_action_with_a_replay_from_the_failed_step() -> None:
    cause = fixes.Cause("m3_message", code="XIT0107", message="Item number is not permitted - status is 90")
    [suggestion] = (await fixes.suggest(cause, context(order(), None))).suggestions
    assert suggestion.kind == "remedy" and suggestion.edit == [] and suggestion.mode == "from_failed_step"
    assert "MMS001" in (suggestion.action or "") and "m3bng's own wording" in suggestion.why
