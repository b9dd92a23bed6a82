"""The IMS message: multipart parts (by name and by content), payload encodings, bounded inflation.

What the sender is answered is asserted through ``status_for``: the status of a refusal is decided
in api/errors.py, never carried by the error."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from typing import Any

import httpx
import pytest

from m3bng.api.errors import status_for
from m3bng.connectors.ion.ims import (
    ImsError,
    decode_payload,
    inflate,
    parse_multipart,
    read_message,
    split_message,
    transcode,
)
from tests.unit.ion.bods import LIMIT, bod

XML = bod("SyncSalesOrder.xml")
PARAMS: dict[str, Any] = {
    "documentName": "SyncSalesOrder",
    "fromLogicalId": "lid://infor.m3.m3",
    "toLogicalId": "lid://infor.m3bng.m3bng",
    "messageId": "msg-1:-ION-:0f1e",
    "document": {"characterSet": "UTF-8", "encoding": "NONE"},
}


def multipart(files: dict[str, Any]) -> tuple[bytes, str]:
    """Encode a multipart body exactly as httpx sends it."""
    request = httpx.Request("POST", "http://x/", files=files)
    return request.read(), request.headers["content-type"]


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def test_standard_message() -> None:
    body, ctype = multipart(
        {
            "ParameterRequest": (None, json.dumps(PARAMS), "application/json"),
            "MessagePayload": ("message.xml", XML, "application/octet-stream"),
        }
    )
    message = read_message(body, ctype, max_bod_bytes=LIMIT)
    assert message.payload == XML
    assert message.message_id == "msg-1:-ION-:0f1e"
    assert message.document_name == "SyncSalesOrder"
    assert message.parameters == PARAMS


def test_parts_told_apart_by_content_when_names_are_wrong() -> None:
    body, ctype = multipart(
        {
            "MessagePayload": (None, json.dumps(PARAMS), "application/json"),
            "ParameterRequest": ("x", XML, "application/octet-stream"),
        }
    )
    message = read_message(body, ctype, max_bod_bytes=LIMIT)
    assert message.payload == XML and message.message_id == PARAMS["messageId"]
    body, ctype = multipart({"a": ("b", XML), "c": (None, json.dumps(PARAMS))})
    assert read_message(body, ctype, max_bod_bytes=LIMIT).payload == XML


def test_payload_in_document_value() -> None:
    params = {**PARAMS, "document": {"characterSet": "UTF-8", "encoding": "NONE", "value": XML.decode()}}
    body, ctype = multipart({"ParameterRequest": (None, json.dumps(params), "application/json")})
    message = read_message(body, ctype, max_bod_bytes=LIMIT)
    assert message.payload == XML
    assert message.parameters["document"] == {"characterSet": "UTF-8", "encoding": "NONE"}


def test_deflated_value_in_parameter_request() -> None:
    value = base64.b64encode(zlib.compress(XML)).decode()
    params = {**PARAMS, "document": {"characterSet": "UTF-8", "encoding": "DEFLATE", "value": value}}
    body, ctype = multipart({"ParameterRequest": (None, json.dumps(params), "application/json")})
    assert read_message(body, ctype, max_bod_bytes=LIMIT).payload == XML


@pytest.mark.parametrize(
    "pack",
    [
        zlib.compress,
        raw_deflate,
        gzip.compress,
        lambda d: base64.b64encode(zlib.compress(d)),
        lambda d: base64.b64encode(raw_deflate(d)),
        lambda d: base64.encodebytes(gzip.compress(d)),  # with line breaks
        lambda d: base64.urlsafe_b64encode(zlib.compress(d)),
    ],
    ids=["zlib", "raw", "gzip", "b64-zlib", "b64-raw", "b64-gzip-lines", "b64url-zlib"],
)
@pytest.mark.parametrize("encoding", ["DEFLATE", "deflate", "Deflate"])
def test_inflation_variants(pack: Any, encoding: str) -> None:
    assert decode_payload(pack(XML), encoding=encoding, max_bytes=LIMIT) == XML


def test_deflated_though_encoding_says_none() -> None:
    assert decode_payload(zlib.compress(XML), encoding="NONE", max_bytes=LIMIT) == XML


def test_plain_though_encoding_says_deflate() -> None:
    assert decode_payload(XML, encoding="DEFLATE", max_bytes=LIMIT) == XML
    assert decode_payload(base64.b64encode(XML), encoding="DEFLATE", max_bytes=LIMIT) == XML


def test_garbage_said_deflated() -> None:
    with pytest.raises(ImsError, match="could not be inflated"):
        decode_payload(b"\x00\x01garbage\xff" * 10, encoding="DEFLATE", max_bytes=LIMIT)


def test_unknown_encoding() -> None:
    with pytest.raises(ImsError, match=r"document\.encoding 'BROTLI' is not supported"):
        decode_payload(XML, encoding="BROTLI", max_bytes=LIMIT)


@pytest.mark.parametrize(
    "pack", [zlib.compress, raw_deflate, gzip.compress, lambda d: base64.b64encode(zlib.compress(d))]
)
def test_deflate_bomb_is_bounded(pack: Any) -> None:
    bomb = pack(b"<" + b"A" * 50_000_000)  # 50 MB that compresses to ~50 kB
    assert len(bomb) < 100_000
    with pytest.raises(ImsError) as caught:
        inflate(bomb, max_bytes=100_000)
    assert status_for(caught.value) == 413
    assert "inflated payload exceeds the limit of 100000 bytes" in str(caught.value)


def test_limit_exactly_reached_is_fine() -> None:
    assert inflate(zlib.compress(b"x" * 1000), max_bytes=1000) == b"x" * 1000


def test_multipart_errors() -> None:
    with pytest.raises(ImsError) as caught:
        parse_multipart(b"x", "application/json", max_part_bytes=LIMIT)
    assert status_for(caught.value) == 415
    with pytest.raises(ImsError, match="no boundary"):
        parse_multipart(b"x", "multipart/form-data", max_part_bytes=LIMIT)
    with pytest.raises(ImsError, match="invalid multipart body"):
        parse_multipart(b"garbage", "multipart/form-data; boundary=abc", max_part_bytes=LIMIT)
    with pytest.raises(ImsError, match="holds no parts"):
        parse_multipart(b"--abc--\r\n", "multipart/form-data; boundary=abc", max_part_bytes=LIMIT)
    body, ctype = multipart({"MessagePayload": ("m", b"x" * 2000)})
    with pytest.raises(ImsError, match="part 'MessagePayload' exceeds the limit of 1000 bytes") as too_big:
        parse_multipart(body, ctype, max_part_bytes=1000)
    assert status_for(too_big.value) == 413
    body, ctype = multipart({f"p{i}": (None, "x") for i in range(20)})
    with pytest.raises(ImsError, match="more than 8 parts"):
        parse_multipart(body, ctype, max_part_bytes=LIMIT)


def test_missing_or_bad_parameter_request() -> None:
    body, ctype = multipart({"MessagePayload": ("m", XML)})
    with pytest.raises(ImsError, match="no ParameterRequest: none of the parts \\('MessagePayload'\\)"):
        read_message(body, ctype, max_bod_bytes=LIMIT)
    body, ctype = multipart({"ParameterRequest": (None, "{not json"), "MessagePayload": ("m", XML)})
    with pytest.raises(ImsError, match="ParameterRequest is not a JSON object") as caught:
        read_message(body, ctype, max_bod_bytes=LIMIT)
    assert caught.value.code == "invalid_parameter_request"
    body, ctype = multipart({"ParameterRequest": (None, "[1]"), "MessagePayload": ("m", XML)})
    with pytest.raises(ImsError, match="a JSON list, not an object"):
        read_message(body, ctype, max_bod_bytes=LIMIT)


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"messageId": 5}, "ParameterRequest.messageId must be a string"),
        ({"messageId": "x" * 256}, "messageId is longer than 255"),
        ({"document": "NONE"}, "ParameterRequest.document must be an object"),
    ],
)
def test_parameter_checks(params: dict[str, Any], problem: str) -> None:
    body, ctype = multipart({"ParameterRequest": (None, json.dumps(params)), "MessagePayload": ("m", XML)})
    with pytest.raises(ImsError, match=problem):
        read_message(body, ctype, max_bod_bytes=LIMIT)


def test_missing_payload() -> None:
    body, ctype = multipart({"ParameterRequest": (None, json.dumps(PARAMS))})
    with pytest.raises(ImsError, match="no payload") as caught:
        read_message(body, ctype, max_bod_bytes=LIMIT)
    assert caught.value.code == "missing_payload"


def test_payload_over_limit() -> None:
    body, ctype = multipart({"ParameterRequest": (None, json.dumps(PARAMS)), "MessagePayload": ("m", XML)})
    with pytest.raises(ImsError, match=f"payload is {len(XML)} bytes; the limit is 2000") as caught:
        read_message(body, ctype, max_bod_bytes=2000)
    assert status_for(caught.value) == 413


def test_split_prefers_the_named_json_part() -> None:
    from m3bng.connectors.ion.ims import Part

    parts = [
        Part("Other", data=bytearray(b'{"messageId": "wrong"}')),
        Part("ParameterRequest", data=bytearray(b'{"messageId": "right"}')),
        Part("MessagePayload", data=bytearray(XML)),
    ]
    parameters, payload = split_message(parts)
    assert parameters == {"messageId": "right"} and payload == XML


def test_transcode_character_set() -> None:
    latin = '<?xml version="1.0"?><a>Göteborg</a>'.encode("latin-1")
    assert transcode(latin, "ISO-8859-1") == '<?xml version="1.0"?><a>Göteborg</a>'.encode()
    declared = '<?xml version="1.0" encoding="ISO-8859-1"?><a>Göteborg</a>'.encode("latin-1")
    assert transcode(declared, "ISO-8859-1") == declared  # the document's own declaration wins
    assert transcode(XML, "UTF-8") == XML
    with pytest.raises(ImsError, match="not a known character set"):
        transcode(latin, "no-such-charset")
    with pytest.raises(ImsError, match="not valid ascii"):
        transcode(latin, "ascii")
