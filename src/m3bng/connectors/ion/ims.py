"""ION's IMS protocol, receiving side: the multipart message and its payload (facts.md §4).

An IMS message is ``multipart/form-data`` with a ``ParameterRequest`` part (JSON: documentName,
fromLogicalId, toLogicalId, messageId, document{characterSet, encoding, value?}, …) and a
``MessagePayload`` part (the BOD). ION's v2 sent wrong or mismatched part names, so parts are
told apart by content, not by name: the part that is a JSON object is the ParameterRequest (the
one *named* so wins when several are), the other one is the payload. A payload carried in
``document.value`` instead of a separate part is accepted too.

The multipart body is parsed here with python-multipart (the parser Starlette uses) rather than
with ``request.form()``: Starlette hands non-file parts back as text decoded by a guessed
charset, which cannot be undone reliably for a deflated (binary) payload sent as a plain field;
here every part stays bytes, and each part is limited explicitly (Starlette's default of 1 MiB
per part would refuse large BODs).

``encoding`` ``DEFLATE`` is inflated; the exact framing ION uses is not documented (facts.md
§4), so zlib-wrapped, gzip, raw deflate and base64 of any of them are all tried. Inflation is
bounded: at most ``max_bytes`` of output are ever produced, so a deflate bomb costs no memory.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from m3bng.connectors.untrusted_json import UntrustedJsonError, parse_json
from m3bng.errors import Malformed, TooLarge, UnsupportedMediaType

_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
_BASE64 = re.compile(rb"[A-Za-z0-9+/=_-]+")
_XML_DECLARED_ENCODING = re.compile(rb"^\s*<\?xml[^>]*\bencoding\s*=", re.I)
MAX_PARTS = 8


class ImsError(Malformed, ValueError):
    """An IMS message m3bng cannot take; ``code`` is what the sender is told, the kind (this
    class, or a subclass below) decides the HTTP status in ``api/errors.py``."""

    code = "invalid_message"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code)


class ImsTooLarge(TooLarge, ImsError):
    """A part, the payload or the inflated payload is over ``M3BNG_ION_MAX_BOD_BYTES``."""

    code = "payload_too_large"


class ImsUnsupportedMediaType(UnsupportedMediaType, ImsError):
    code = "unsupported_media_type"


@dataclass
class Part:
    name: str
    filename: str | None = None
    content_type: str | None = None
    data: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True)
class ImsMessage:
    """A received IMS message: its parameters (without ``document.value``) and the BOD bytes."""

    parameters: dict[str, Any]
    payload: bytes

    @property
    def message_id(self) -> str | None:
        value = self.parameters.get("messageId")
        return str(value) if value else None

    @property
    def document_name(self) -> str | None:
        value = self.parameters.get("documentName")
        return str(value) if value else None


# -- multipart ----------------------------------------------------------------------------------


def parse_multipart(body: bytes, content_type: str, *, max_part_bytes: int) -> list[Part]:
    """Split a ``multipart/form-data`` body into raw parts, refusing any part over the limit."""
    mime, options = parse_options_header(content_type)
    if mime != b"multipart/form-data":
        raise ImsUnsupportedMediaType(f"content-type must be multipart/form-data, not {content_type!r}")
    boundary = options.get(b"boundary")
    if not boundary:
        raise ImsError("content-type multipart/form-data has no boundary")
    parts: list[Part] = []
    current = Part(name="")
    header_name = bytearray()
    header_value = bytearray()
    headers: dict[bytes, bytes] = {}
    ended: list[bool] = []

    def on_part_begin() -> None:
        nonlocal current
        if len(parts) >= MAX_PARTS:
            raise ImsError(f"multipart body holds more than {MAX_PARTS} parts")
        current = Part(name="")
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        current.name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        current.filename = filename.decode("utf-8", "replace") if filename is not None else None
        ctype = headers.get(b"content-type")
        current.content_type = ctype.decode("latin-1") if ctype is not None else None

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if len(current.data) + (end - start) > max_part_bytes:
            raise ImsTooLarge(
                f"multipart part {current.name or '(unnamed)'!r} exceeds the limit of {max_part_bytes} bytes"
            )
        current.data.extend(data[start:end])

    def on_part_end() -> None:
        parts.append(current)

    def on_end() -> None:
        ended.append(True)

    callbacks: Any = {
        "on_part_begin": on_part_begin,
        "on_part_data": on_part_data,
        "on_part_end": on_part_end,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_end": on_end,
    }
    parser = MultipartParser(boundary, callbacks)
    try:
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:
        raise ImsError(f"invalid multipart body: {exc}") from None
    if not parts:
        raise ImsError("multipart body holds no parts (expected ParameterRequest and MessagePayload)")
    if not ended:  # the last part was cut off: say so, rather than "no payload" or a half BOD
        raise ImsError(f"multipart body is truncated: no closing boundary after part {current.name!r}")
    return parts


def _json_object(part: Part) -> tuple[dict[str, Any] | None, str | None]:
    """The part as a JSON object, or why it is not one. JSON that *is* a document but holds what
    no store can keep (NUL, lone surrogates, 1e400, duplicate keys, deep nesting: see
    ``untrusted_json``) is refused outright: before, it reached the database and failed there."""
    try:
        value = parse_json(bytes(part.data), name="ParameterRequest")
    except UntrustedJsonError as exc:
        if exc.syntax:
            return None, str(exc).removeprefix("ParameterRequest is ")
        field = f"ParameterRequest.{exc.field}" if exc.field else "ParameterRequest"
        problem = str(exc).split(": ", 1)[-1]
        raise ImsError(f"{field}: {problem}", code="invalid_parameter_request") from None
    if not isinstance(value, dict):
        return None, f"a JSON {type(value).__name__}, not an object"
    return value, None


def split_message(parts: list[Part]) -> tuple[dict[str, Any], bytes | None]:
    """Tell the ParameterRequest from the payload (by content: see the module docstring)."""
    named = {p.name.lower(): p for p in parts}
    candidates = [named["parameterrequest"]] if "parameterrequest" in named else []
    candidates += [p for p in parts if p not in candidates]
    parameters: dict[str, Any] | None = None
    chosen: Part | None = None
    first_problem: str | None = None
    for part in candidates:
        parameters, problem = _json_object(part)
        if parameters is not None:
            chosen = part
            break
        if part.name.lower() == "parameterrequest" and first_problem is None:
            first_problem = problem
    if parameters is None or chosen is None:
        names = ", ".join(repr(p.name) for p in parts)
        detail = f"ParameterRequest is not a JSON object ({first_problem})" if first_problem else ""
        raise ImsError(
            detail or f"no ParameterRequest: none of the parts ({names}) is a JSON object",
            code="invalid_parameter_request",
        )
    rest = [p for p in parts if p is not chosen]
    payload = named.get("messagepayload")
    if payload is None or payload is chosen:
        payload = rest[0] if rest else None
    return parameters, bytes(payload.data) if payload is not None else None


# -- payload decoding ---------------------------------------------------------------------------


def looks_like_xml(data: bytes) -> bool:
    for bom in _BOMS:
        if data.startswith(bom):
            return True
    return data.lstrip().startswith(b"<")


def _inflate_with(data: bytes, wbits: int, max_bytes: int) -> bytes | None:
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error:
        return None
    if len(out) > max_bytes:
        raise ImsTooLarge(
            f"inflated payload exceeds the limit of {max_bytes} bytes (M3BNG_ION_MAX_BOD_BYTES)"
        )
    return out if inflater.eof else None


def _base64(data: bytes) -> bytes | None:
    compact = b"".join(data.split())
    if not compact or len(compact) % 4 or not _BASE64.fullmatch(compact):
        return None
    try:
        if b"-" in compact or b"_" in compact:
            return base64.urlsafe_b64decode(compact)
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None


def inflate(data: bytes, *, max_bytes: int) -> bytes | None:
    """Inflate ``data`` in whichever framing it has; None when it is none of them."""
    for wbits in (15, 31):  # zlib-wrapped, gzip
        out = _inflate_with(data, wbits, max_bytes)
        if out is not None:
            return out
    decoded = _base64(data)
    if decoded is not None:
        for wbits in (15, 31, -15):
            out = _inflate_with(decoded, wbits, max_bytes)
            if out is not None:
                return out
        if looks_like_xml(decoded):
            return decoded
    return _inflate_with(data, -15, max_bytes)  # raw deflate last: it accepts the most garbage


def decode_payload(data: bytes, *, encoding: str | None, max_bytes: int) -> bytes:
    """The BOD bytes of a payload sent with ``document.encoding`` (NONE or DEFLATE)."""
    name = (encoding or "NONE").strip().upper()
    if name not in ("NONE", "DEFLATE", ""):
        raise ImsError(
            f"document.encoding {encoding!r} is not supported; expected NONE or DEFLATE",
            code="invalid_parameter_request",
        )
    if name in ("NONE", "") and looks_like_xml(data):
        return data
    inflated = inflate(data, max_bytes=max_bytes)
    if inflated is not None:
        return inflated
    if looks_like_xml(data):
        return data  # said DEFLATE, but is plain XML
    if name == "DEFLATE":
        raise ImsError(
            "payload could not be inflated (tried zlib, gzip, raw deflate and base64 of each)",
            code="invalid_payload",
        )
    return data  # neither XML nor compressed: the BOD parser names the problem


def transcode(data: bytes, character_set: str | None) -> bytes:
    """Honour ``document.characterSet`` for a payload that declares no encoding of its own.

    XML without a BOM or an encoding declaration is read as UTF-8; a payload ION says is, e.g.,
    ISO-8859-1 is converted to UTF-8 first. A document that declares its encoding keeps it.
    """
    if not character_set or character_set.strip().lower().replace("_", "-") in ("utf-8", "utf8"):
        return data
    if any(data.startswith(bom) for bom in _BOMS) or _XML_DECLARED_ENCODING.match(data):
        return data
    try:
        return data.decode(character_set.strip()).encode("utf-8")
    except LookupError:
        raise ImsError(
            f"document.characterSet {character_set!r} is not a known character set",
            code="invalid_parameter_request",
        ) from None
    except UnicodeDecodeError:
        raise ImsError(f"payload is not valid {character_set} text", code="invalid_payload") from None


# -- the whole message --------------------------------------------------------------------------


def _check_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    for key in ("messageId", "documentName", "fromLogicalId", "toLogicalId"):
        value = parameters.get(key)
        if value is not None and not isinstance(value, str):
            raise ImsError(f"ParameterRequest.{key} must be a string", code="invalid_parameter_request")
    message_id = parameters.get("messageId")
    if message_id is not None and len(message_id) > 255:
        raise ImsError(
            "ParameterRequest.messageId is longer than 255 characters", code="invalid_parameter_request"
        )
    document = parameters.get("document")
    if document is not None and not isinstance(document, dict):
        raise ImsError("ParameterRequest.document must be an object", code="invalid_parameter_request")
    return document or {}


def read_message(body: bytes, content_type: str, *, max_bod_bytes: int) -> ImsMessage:
    """Parse, unpack and decode one IMS multipart message, or raise ``ImsError``."""
    parts = parse_multipart(body, content_type, max_part_bytes=2 * max_bod_bytes)
    parameters, payload = split_message(parts)
    document = _check_parameters(parameters)
    value = document.get("value")
    if payload is None or not payload.strip():
        if isinstance(value, str) and value.strip():
            payload = value.encode("utf-8")
        else:
            raise ImsError(
                "no payload: neither a MessagePayload part nor ParameterRequest.document.value",
                code="missing_payload",
            )
    if len(payload) > max_bod_bytes:
        raise ImsTooLarge(
            f"payload is {len(payload)} bytes; the limit is {max_bod_bytes} (M3BNG_ION_MAX_BOD_BYTES)"
        )
    encoding = document.get("encoding")
    data = decode_payload(payload, encoding=str(encoding) if encoding else None, max_bytes=max_bod_bytes)
    character_set = document.get("characterSet")
    data = transcode(data, str(character_set) if character_set else None)
    stored = dict(parameters)
    if "value" in document:
        stored["document"] = {k: v for k, v in document.items() if k != "value"}
    return ImsMessage(parameters=stored, payload=data)
