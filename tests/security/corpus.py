"""The hostile-input corpus, as data: one named :class:`Case` per bad input, per endpoint.

Every case must be refused with ``status``, in the project's error shape, with a message that
contains each of ``names`` (the field, header or limit at fault), and must store nothing. To add
a case, append it to the list of its endpoint; the tests in test_inbound_corpus.py pick it up.

Webhook bodies are signed properly by the test (for whichever scheme the server uses), so that
the validation behind the signature check is what each case reaches.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from m3bng.connectors.untrusted_json import MAX_DEPTH
from tests.integration.ion.conftest import parameters as ion_parameters
from tests.unit.ion.bods import bod

MAX_BODY: int = Settings.model_fields["max_body_bytes"].default  # the servers run with the defaults
MAX_BOD: int = Settings.model_fields["ion_max_bod_bytes"].default
DEPTH = MAX_DEPTH  # how deep JSON may nest
RAW = "__RAW_JSON__"


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    status: int
    names: tuple[str, ...]
    headers: Mapping[str, str | None] = field(default_factory=dict)  # None: leave the header out
    chunked: bool = False  # sent without Content-Length

    def __repr__(self) -> str:  # the body can be megabytes
        return f"Case({self.name!r})"


def case(name: str, body: bytes, status: int, *names: str, **kw: Any) -> Case:
    return Case(name, body, status, names, **kw)


# -- webhooks -----------------------------------------------------------------------------------


def envelope(event_type: Any = "order.created", data: Any = None, **top: Any) -> dict[str, Any]:
    """A valid event (with an ``id``, which the Stripe-style scheme takes from the body)."""
    body = {
        "id": "evt_corpus_1",
        "type": event_type,
        "timestamp": "2026-11-24T10:00:00Z",
        "data": sample(event_type) if data is None and isinstance(event_type, str) else data,
    }
    body.update(top)
    return body


def order(**changes: Any) -> dict[str, Any]:
    return envelope(data={**sample("order.created"), **changes})


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def with_raw(value: Any, raw: str) -> bytes:
    """``value`` as JSON with the string ``RAW`` replaced by ``raw`` verbatim (escapes, numbers)."""
    return dumps(value).replace(json.dumps(RAW).encode(), raw.encode())


def note_bytes(raw: bytes) -> bytes:
    """A valid order whose ``data.Note`` is ``raw`` bytes in quotes (invalid UTF-8 and the like)."""
    return dumps(order(Note=RAW)).replace(RAW.encode(), raw)


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def without(data: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != key}


ORDER = sample("order.created")
LINE = ORDER["Lines"][0]
BIG = b'{"type": "order.created", "data": {"Note": "' + b"x" * MAX_BODY + b'"}}'

WEBHOOK_CORPUS: list[Case] = [
    # Not JSON, or not an object.
    case("malformed_json", b'{"type": "order.created", "data": {', 400, "not valid JSON"),
    case("trailing_garbage", dumps(order()) + b"}", 400, "not valid JSON"),
    case("empty_body", b"", 400, "empty"),
    case("whitespace_body", b"  \n ", 400, "empty"),
    case("json_null", b"null", 422, "(body)"),
    case("json_array", b"[1, 2]", 422, "(body)"),
    case("json_string", b'"order.created"', 422, "(body)"),
    case("single_quotes", b"{'type': 'order.created'}", 400, "not valid JSON"),
    case("nan_literal", with_raw(order(Note=RAW), "NaN"), 400, "data.Note", "number"),
    case("infinity_literal", with_raw(order(Note=RAW), "-Infinity"), 400, "data.Note", "number"),
    # Envelope: missing fields, wrong types, wrong values.
    case("missing_type", dumps(without(order(), "type")), 422, "type", "Field required"),
    case("missing_data", dumps(without(order(), "data")), 422, "data", "Field required"),
    case("type_not_a_string", dumps(envelope(123, ORDER)), 422, "type"),
    case("type_null", dumps(envelope(None, ORDER)), 422, "type"),
    case("type_unknown", dumps(envelope("order.shipped", ORDER)), 422, "type", "unknown event type"),
    case("type_bad_pattern", dumps(envelope("ORDER CREATED", ORDER)), 422, "type"),
    case("type_overlong", dumps(envelope("order." + "x" * 200, ORDER)), 422, "type"),
    case("type_rtl_override", dumps(envelope("order.\u202ecreated", ORDER)), 422, "type"),
    case("type_non_bmp", dumps(envelope("order.created\U0001f600", ORDER)), 422, "type"),
    case("data_a_string", dumps(envelope("order.created", "SO-1")), 422, "data"),
    case("data_a_list", dumps(envelope("order.created", [ORDER])), 422, "data"),
    case("data_null", dumps(envelope("order.created", None) | {"data": None}), 422, "data"),
    case("timestamp_not_a_date", dumps(order() | {"timestamp": "yesterday"}), 422, "timestamp"),
    # Event data: missing fields, wrong types, values out of range.
    case("order_missing_id", dumps(envelope(data=without(ORDER, "OrderID"))), 422, "data.OrderID"),
    case("order_id_a_number", dumps(order(OrderID=1001)), 422, "data.OrderID"),
    case("order_id_an_object", dumps(order(OrderID={"$gt": ""})), 422, "data.OrderID"),
    case("order_id_empty", dumps(order(OrderID="")), 422, "data.OrderID"),
    case("order_no_lines", dumps(order(Lines=[])), 422, "data.Lines"),
    case("order_lines_not_a_list", dumps(order(Lines="SKU-1")), 422, "data.Lines"),
    case("order_too_many_lines", dumps(order(Lines=[LINE] * 2001)), 422, "data.Lines"),
    case("quantity_a_word", dumps(order(Lines=[{**LINE, "Quantity": "many"}])), 422, "data.Lines.0.Quantity"),
    case("quantity_negative", dumps(order(Lines=[{**LINE, "Quantity": -1}])), 422, "data.Lines.0.Quantity"),
    case(
        "quantity_1e400",
        with_raw(order(Lines=[{**LINE, "Quantity": RAW}]), "1e400"),
        400,
        "data.Lines.0.Quantity",
        "number out of range",
    ),
    case("quantity_huge_int", with_raw(order(Lines=[{**LINE, "Quantity": RAW}]), "9" * 40), 422, "Quantity"),
    case("extra_field_1e400", with_raw(order(Note=RAW), "1e400"), 400, "data.Note", "number"),
    case("extra_field_minus_1e400", with_raw(order(Note=RAW), "-1e400"), 400, "data.Note", "number"),
    case("extra_field_huge_int", with_raw(order(Note=RAW), "7" * 5000), 400, "data.Note", "number"),
    case("order_date_invalid", dumps(order(OrderDate="2026-13-45")), 422, "data.OrderDate"),
    case("currency_overlong", dumps(order(Currency="SEKK")), 422, "data.Currency"),
    case(
        "customer_without_name",
        dumps(envelope("customer.created", {"CustomerID": "C-1", "Email": "x@y.example"})),
        422,
        "CompanyName",
    ),
    case(
        "email_not_an_address",
        dumps(envelope("customer.created", {**sample("customer.created"), "Email": "not-an-address"})),
        422,
        "data.Email",
    ),
    case(
        "gl_entry_unbalanced",
        dumps(
            envelope(
                "gl_entry.created",
                {**sample("gl_entry.created"), "Lines": [{"Account": "1", "Debit": 1}, {"Account": "2"}]},
            )
        ),
        422,
        "debits",
    ),
    # Overlong strings, counted in characters however they are encoded.
    case("order_id_overlong", dumps(order(OrderID="S" * 256)), 422, "data.OrderID"),
    case("order_id_combining_marks", dumps(order(OrderID="S" + "\u0301" * 300)), 422, "data.OrderID"),
    case("order_id_non_bmp_overlong", dumps(order(OrderID="\U0001f6b2" * 256)), 422, "data.OrderID"),
    case(
        "email_overlong",
        dumps(
            envelope("customer.created", {**sample("customer.created"), "Email": "a" * 250 + "@x.example"})
        ),
        422,
        "data.Email",
    ),
    # Unicode that no store can keep, or that is not text at all.
    case("nul_in_order_id", with_raw(order(OrderID=RAW), r'"SO-1\u0000"'), 400, "data.OrderID", "NUL"),
    case("nul_in_extra_field", with_raw(order(Note=RAW), r'"a\u0000b"'), 400, "data.Note", "NUL"),
    case("nul_in_a_key", dumps(order()).replace(b'"OrderID"', b'"Order\\u0000ID"', 1), 400, "NUL"),
    case(
        "lone_high_surrogate", with_raw(order(OrderID=RAW), r'"SO-\ud800"'), 400, "data.OrderID", "surrogate"
    ),
    case("lone_low_surrogate", with_raw(order(Note=RAW), r'"\udfff"'), 400, "data.Note", "surrogate"),
    case(
        "reversed_surrogate_pair", with_raw(order(Note=RAW), r'"\udc00\ud800"'), 400, "data.Note", "surrogate"
    ),
    case("invalid_utf8", note_bytes(b"\xff\xfe"), 400, "UTF-8"),
    case("overlong_utf8_slash", note_bytes(b"\xc0\xaf"), 400, "UTF-8"),
    case(
        "cesu8_surrogate_bytes",
        note_bytes(b"\xed\xa0\x80"),
        400,
        "UTF-8",
    ),
    case("utf8_truncated", note_bytes(b"\xe2\x82"), 400, "UTF-8"),
    # Structure: depth and duplicate keys.
    case("nested_100", with_raw(order(Note=RAW), nested(100)), 400, "data.Note", f"deeper than {DEPTH}"),
    case("nested_100000", with_raw(order(Note=RAW), nested(100_000)), 400, f"deeper than {DEPTH}"),
    case("nested_objects", with_raw(order(Note=RAW), '{"a":' * 5000 + "1" + "}" * 5000), 400, "deeper"),
    case(
        "duplicate_type",
        dumps(order()).replace(b'"type"', b'"type": "customer.created", "type"', 1),
        400,
        "duplicate",
        "type",
    ),
    case(
        "duplicate_order_id",
        dumps(order()).replace(b'"OrderID"', b'"OrderID": "SO-X", "OrderID"', 1),
        400,
        "duplicate",
        "data.OrderID",
    ),
    # Size and content type.
    case("body_over_the_limit", BIG, 413, "limit", str(MAX_BODY)),
    case("body_over_the_limit_chunked", BIG, 413, "limit", str(MAX_BODY), chunked=True),
    case(
        "content_type_text_plain", dumps(order()), 415, "content-type", headers={"content-type": "text/plain"}
    ),
    case(
        "content_type_xml", dumps(order()), 415, "content-type", headers={"content-type": "application/xml"}
    ),
    case(
        "content_type_form",
        dumps(order()),
        415,
        "content-type",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    case("content_type_missing", dumps(order()), 415, "content-type", headers={"content-type": None}),
    case(
        "content_type_not_quite_json",
        dumps(order()),
        415,
        "content-type",
        headers={"content-type": "text/notjson"},
    ),
]

# Only the Stripe-style scheme takes the event id from the body.
STRIPE_CORPUS: list[Case] = [
    case("id_missing", dumps(without(order(), "id")), 422, "id"),
    case("id_empty", dumps(order() | {"id": ""}), 422, "id"),
    case("id_an_object", dumps(order() | {"id": {"a": 1}}), 422, "id"),
    case("id_a_list", dumps(order() | {"id": ["evt_1"]}), 422, "id"),
    case("id_overlong", dumps(order() | {"id": "evt_" + "x" * 300}), 422, "id:", "255"),
    case("id_with_nul", with_raw(order() | {"id": RAW}, r'"evt_\u0000"'), 400, "id", "NUL"),
]


# -- ION: /ion/bod and the IMS multipart endpoints ------------------------------------------------

ORDER_BOD = bod("SyncSalesOrder.xml")
XML = {"content-type": "application/xml"}


def bod_case(name: str, xml: bytes, status: int, *names: str, **headers: str | None) -> Case:
    return Case(name, xml, status, names, headers={**XML, **headers})


BODID = b"infor-nid:ACME_PRD:770_AAA::1000123:?SalesOrder&amp;verb=Sync&amp;variationID=1"


def replace(old: bytes, new: bytes) -> bytes:
    assert old in ORDER_BOD, old
    return ORDER_BOD.replace(old, new, 1)


BOD_CORPUS: list[Case] = [
    bod_case("empty_body", b"", 400, "empty document"),
    bod_case("malformed_xml", b"<SyncSalesOrder", 400, "not well-formed XML"),
    bod_case("truncated_bod", ORDER_BOD[: len(ORDER_BOD) // 2], 400, "not well-formed XML"),
    bod_case("json_instead_of_xml", dumps(order()), 400, "not well-formed XML"),
    bod_case("not_oagis", b"<Foo/>", 400, "not an OAGIS BOD"),
    bod_case("wrong_namespace", replace(b"InforOAGIS/2", b"Evil/2"), 400, "not an OAGIS BOD"),
    bod_case(
        "missing_bodid", replace(b"<BODID>", b"<X>").replace(b"</BODID>", b"</X>"), 400, "BODID missing"
    ),
    bod_case("blank_bodid", replace(BODID, b"  "), 400, "BODID missing"),
    bod_case(
        "missing_application_area",
        replace(b"<ApplicationArea>", b"<Other>").replace(b"</ApplicationArea>", b"</Other>"),
        400,
        "ApplicationArea missing",
    ),
    bod_case(
        "missing_data_area",
        replace(b"<DataArea>", b"<Other>").replace(b"</DataArea>", b"</Other>"),
        400,
        "DataArea missing",
    ),
    bod_case(
        "verb_noun_mismatch",
        replace(b"<SalesOrder>", b"<PurchaseOrder>").replace(b"</SalesOrder>", b"</PurchaseOrder>"),
        400,
        "does not match",
    ),
    bod_case("bad_creation_date", replace(b"2026-11-20T08:15:02Z", b"last tuesday"), 400, "CreationDateTime"),
    bod_case("nul_byte", replace(b"1000123</ID>", b"1000\x00123</ID>"), 400, "not well-formed XML"),
    bod_case("nul_char_reference", replace(b"1000123</ID>", b"1000&#0;123</ID>"), 400, "not well-formed XML"),
    bod_case(
        "surrogate_char_reference", replace(b"1000123</ID>", b"&#xD800;</ID>"), 400, "not well-formed XML"
    ),
    bod_case("invalid_utf8", replace(b"1000123</ID>", b"\xff\xfe</ID>"), 400, "not well-formed XML"),
    bod_case(
        "cesu8_surrogate_bytes", replace(b"1000123</ID>", b"\xed\xa0\x80</ID>"), 400, "not well-formed XML"
    ),
    bod_case("declared_encoding_lies", replace(b'encoding="UTF-8"', b'encoding="UTF-16"'), 400, "XML"),
    bod_case("unknown_declared_encoding", replace(b'encoding="UTF-8"', b'encoding="KLINGON-8"'), 400, "XML"),
    bod_case(
        "nested_10000",
        replace(b"<SalesOrderHeader>", b"<SalesOrderHeader>" + b"<A>" * 10_000 + b"</A>" * 10_000),
        400,
        "deeper than 100 levels",
    ),
    bod_case("body_over_the_limit", ORDER_BOD + b" " * MAX_BOD, 413, "limit", str(MAX_BOD)),
    bod_case("content_type_json", ORDER_BOD, 415, "content-type", **{"content-type": "application/json"}),
    bod_case("content_type_missing", ORDER_BOD, 415, "content-type", **{"content-type": None}),
    bod_case(
        "content_type_multipart", ORDER_BOD, 415, "content-type", **{"content-type": "multipart/form-data"}
    ),
    bod_case(
        "charset_unknown",
        ORDER_BOD.replace(b' encoding="UTF-8"', b""),
        400,
        "klingon",
        **{"content-type": "application/xml; charset=klingon"},
    ),
    bod_case(
        "charset_wrong_for_the_bytes",
        "<a>\u00e9\u4e2d</a>".encode("utf-8"),
        400,
        "not valid ascii",
        **{"content-type": "text/xml; charset=ascii"},
    ),
    bod_case("message_id_overlong", ORDER_BOD, 400, "X-Message-Id", "255", **{"x-message-id": "m" * 256}),
]


def multipart(*parts: tuple[str, bytes] | tuple[str, bytes, str], boundary: str = "corpus-boundary") -> bytes:
    """A multipart/form-data body written by hand (so that it can be broken on purpose)."""
    out = b""
    for part in parts:
        name, data = part[0], part[1]
        ctype = part[2] if len(part) > 2 else "application/octet-stream"
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n"
        ).encode()
        out += data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def parameters(**changes: Any) -> dict[str, Any]:
    """The ParameterRequest ION sends (tests/integration/ion), with ``changes`` applied."""
    return ion_parameters("msg-corpus-1") | changes


MULTIPART = {"content-type": "multipart/form-data; boundary=corpus-boundary"}
DEFLATE = {"characterSet": "UTF-8", "encoding": "DEFLATE"}


def ims_case(name: str, body: bytes, status: int, *names: str, **headers: str | None) -> Case:
    return Case(name, body, status, names, headers={**MULTIPART, **headers})


def message(params: dict[str, Any] | bytes, payload: bytes | None = ORDER_BOD) -> bytes:
    raw = params if isinstance(params, bytes) else dumps(params)
    parts: list[tuple[str, bytes] | tuple[str, bytes, str]] = [("ParameterRequest", raw, "application/json")]
    if payload is not None:
        parts.append(("MessagePayload", payload))
    return multipart(*parts)


def params_raw(raw: str, **changes: Any) -> bytes:
    """A ParameterRequest with ``RAW`` somewhere in ``changes`` replaced verbatim."""
    return with_raw(parameters(**changes), raw)


def bomb(size: int) -> bytes:
    inflater = zlib.compressobj(9)
    chunk = b"<" + b"A" * (1 << 20)
    out = inflater.compress(chunk)
    for _ in range(size >> 20):
        out += inflater.compress(b"A" * (1 << 20))
    return out + inflater.flush()


IMS_CORPUS: list[Case] = [
    ims_case("empty_body", b"", 400, "multipart"),
    ims_case("only_the_final_boundary", b"--corpus-boundary--\r\n", 400, "multipart"),
    ims_case("no_parameter_request", multipart(("MessagePayload", ORDER_BOD)), 400, "no ParameterRequest"),
    ims_case("no_payload", message(parameters(), None), 400, "no payload"),
    ims_case("empty_payload", message(parameters(), b""), 400, "no payload"),
    ims_case("parameter_request_not_json", message(b"{bad json"), 400, "ParameterRequest", "JSON"),
    ims_case("parameter_request_a_list", message(b"[1, 2]"), 400, "ParameterRequest"),
    ims_case(
        "parameter_request_invalid_utf8", message(b'{"messageId": "\xff"}'), 400, "ParameterRequest", "UTF-8"
    ),
    ims_case("message_id_a_number", message(parameters(messageId=42)), 400, "messageId", "string"),
    ims_case("message_id_an_object", message(parameters(messageId={"a": 1})), 400, "messageId"),
    ims_case("message_id_overlong", message(parameters(messageId="m" * 256)), 400, "messageId", "255"),
    ims_case("message_id_nul", message(params_raw(r'"msg-\u0000"', messageId=RAW)), 400, "messageId", "NUL"),
    ims_case(
        "message_id_lone_surrogate",
        message(params_raw(r'"msg-\udbff"', messageId=RAW)),
        400,
        "messageId",
        "surrogate",
    ),
    ims_case(
        "parameter_nul_elsewhere",
        message(params_raw(r'"x\u0000"', accountingEntity=RAW)),
        400,
        "accountingEntity",
        "NUL",
    ),
    ims_case(
        "parameter_1e400",
        message(params_raw("1e400", accountingEntity=RAW)),
        400,
        "accountingEntity",
        "number",
    ),
    ims_case(
        "parameter_huge_int",
        message(params_raw("9" * 5000, accountingEntity=RAW)),
        400,
        "accountingEntity",
        "number",
    ),
    ims_case(
        "parameter_nested_100000",
        message(params_raw(nested(100_000), accountingEntity=RAW)),
        400,
        f"deeper than {DEPTH}",
    ),
    ims_case(
        "parameter_duplicate_message_id",
        message(dumps(parameters()).replace(b'"messageId"', b'"messageId": "a", "messageId"', 1)),
        400,
        "duplicate",
        "messageId",
    ),
    ims_case("document_not_an_object", message(parameters(document="DEFLATE")), 400, "document"),
    ims_case("encoding_unknown", message(parameters(document={"encoding": "ROT13"})), 400, "encoding"),
    ims_case(
        "character_set_unknown",
        message(
            parameters(document={"characterSet": "klingon"}), ORDER_BOD.replace(b' encoding="UTF-8"', b"")
        ),
        400,
        "characterSet",
    ),
    ims_case("deflate_garbage", message(parameters(document=DEFLATE), b"\x01\x02garbage"), 400, "inflated"),
    ims_case(
        "deflate_bad_base64", message(parameters(document=DEFLATE), b"eJzz!!notbase64$$"), 400, "inflated"
    ),
    ims_case(
        "deflate_truncated",
        message(parameters(document=DEFLATE), zlib.compress(ORDER_BOD)[:-40]),
        400,
        "inflated",
    ),
    ims_case(
        "deflate_bomb", message(parameters(document=DEFLATE), bomb(64 << 20)), 413, "inflated", str(MAX_BOD)
    ),
    ims_case(
        "deflate_of_garbage_xml",
        message(parameters(document=DEFLATE), zlib.compress(b"<Sync")),
        400,
        "not well-formed XML",
    ),
    ims_case(
        "value_bad_base64",
        message(parameters(document={**DEFLATE, "value": "%%% not base64 %%%"}), None),
        400,
        "inflated",
    ),
    ims_case("payload_not_xml", message(parameters(), b"hello"), 400, "not well-formed XML"),
    ims_case("payload_over_the_limit", message(parameters(), ORDER_BOD + b" " * MAX_BOD), 413, "limit"),
    ims_case("too_many_parts", multipart(*[(f"p{n}", b"x") for n in range(9)]), 400, "more than 8 parts"),
    ims_case(
        "wrong_boundary",
        message(parameters()),
        400,
        "multipart",
        **{"content-type": "multipart/form-data; boundary=another-boundary"},
    ),
    ims_case(
        "no_boundary", message(parameters()), 400, "boundary", **{"content-type": "multipart/form-data"}
    ),
    ims_case("truncated_multipart", message(parameters())[:-40], 400, "truncated", "MessagePayload"),
    ims_case("content_type_missing", message(parameters()), 415, "content-type", **{"content-type": None}),
    ims_case(
        "content_type_xml", message(parameters()), 415, "content-type", **{"content-type": "application/xml"}
    ),
    ims_case("hostile_xml_in_payload", message(parameters(), bod("hostile/xxe_file.xml")), 400, "DOCTYPE"),
]
