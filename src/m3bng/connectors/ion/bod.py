"""ION BODs: the one place in m3bng that parses XML from outside.

Hardening (design.md §5). lxml's ``resolve_entities=False, no_network=True`` alone still parses
an XXE document (it just leaves the entity unexpanded), so every layer below is applied:

1. the raw bytes are limited in size (``M3BNG_ION_MAX_BOD_BYTES``);
2. a document that contains ``<!DOCTYPE`` or ``<!ENTITY`` anywhere (any case, also in UTF-16/32,
   whose NUL bytes are ignored for this scan) is refused *before* lxml sees it: a BOD never needs
   a DTD, and without one there is no entity expansion, no XXE and no billion laughs. So is a
   start tag longer than ``MAX_TAG_BYTES``: libxml2 builds a whole start tag before anyone can
   look at it, and 300,000 attributes on one element cost it 90 MB;
3. the parser itself runs with no DTD loading, no entity resolution, no network, no huge-tree
   mode, processing instructions dropped, and a resolver that refuses every external file or URL;
4. while parsing (events are checked per chunk) a document is refused when it nests deeper than
   ``MAX_DEPTH``, when one element carries more than ``MAX_ATTRIBUTES`` attributes, or when it
   holds more elements than its byte limit allows (one per ``BYTES_PER_ELEMENT`` bytes on
   average, see :func:`max_elements`): the last two bound CPU and memory for documents that are
   small in bytes but huge as trees (the hostile-input suite, tests/security/);
5. after parsing, a document that still carries a DOCTYPE or an entity node is refused.

Every refusal raises ``BodError`` naming the problem; nothing else escapes ``parse_bod``.

The data dictionary (``ParsedBod.data``), which mapping authors query with JMESPath, is the noun
element converted by these rules:

* keys are element local names (namespaces dropped);
* an element without child elements becomes its stripped text (``""`` when empty);
* an element with child elements becomes a dict of its children (leading text, which OAGIS does
  not use, is kept under ``"#text"``);
* an element's attributes go into a sibling key ``"<Name>@"`` (a dict of attribute local names to
  values), whether the element holds text or children; elements without attributes get no
  ``@`` key. The noun element's own attributes, if any, are under ``"@"``;
* a repeated element becomes a list, and its ``@`` sibling (present when any occurrence has
  attributes) a list of attribute dicts aligned by index (``{}`` for occurrences without);
* elements whose name ends with ``Line``, and ``Communication``, ``AddressLine``, ``Note``,
  ``Code`` inside ``Codes`` and ``ID`` inside ``PartyIDs`` are *always* lists, even when single,
  so that ``SalesOrderLine[*]`` or ``Communication[?ChannelCode=='EMail'].URI | [0]`` work for
  one line as for many.

Example: ``<DocumentID><ID variationID="3" accountingEntity="770_AAA">1000123</ID></DocumentID>``
becomes ``{"DocumentID": {"ID": "1000123", "ID@": {"variationID": "3", "accountingEntity":
"770_AAA"}}}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from lxml import etree  # type: ignore[import-untyped]

from m3bng.errors import Malformed, TooLarge

OAGIS_NS = "http://schema.infor.com/InforOAGIS/2"
MAX_DEPTH = 100
MAX_TAG_BYTES = 64 * 1024  # a start tag with its attributes; real ones are well under 1 KiB
_LONG_START_TAG = re.compile(rb"<[A-Za-z_:][^<>]{%d}" % MAX_TAG_BYTES)
# Real BODs have at most a handful of attributes per element. lxml reads attributes in time
# quadratic in their number: 300,000 on one element (3 MB) took ten minutes of CPU to convert.
MAX_ATTRIBUTES = 64
# Real BODs take 50-65 bytes per element (the fixtures); a parsed element costs some hundreds of
# bytes of memory, so 1.2 million empty elements in 4 MB took 450 MB. Half the real density is
# allowed: a document at the byte limit may hold max_bytes / 32 elements.
BYTES_PER_ELEMENT = 32
MIN_ELEMENTS = 10_000
_FEED_CHUNK = 16 * 1024
_ALWAYS_LIST = frozenset({"Communication", "AddressLine", "Note"})
_ALWAYS_LIST_INSIDE = {"Codes": "Code", "PartyIDs": "ID"}
_NOT_METADATA = frozenset({"data", "namespace", "xml"})


class BodError(Malformed, ValueError):
    """The document is not a BOD m3bng accepts; the message names the problem and ``code`` is
    the machine-readable reason (``invalid_bod``, ``forbidden_xml``)."""

    code = "invalid_bod"
    too_large = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, code=code)


class BodTooLarge(TooLarge, BodError):
    """Over the byte limit, or more elements than a document of that size may hold."""

    too_large = True


# -- BODID --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BodId:
    """The parts of an ``infor-nid:<tenant>:<AE>:<location>:<documentId>:<revision>?<Noun>&verb=…``
    identifier (facts.md §3). Any part may be missing; a BODID in another form keeps only ``raw``."""

    raw: str
    tenant: str | None = None
    accounting_entity: str | None = None
    location: str | None = None
    document_id: str | None = None
    revision: str | None = None
    noun: str | None = None
    verb: str | None = None
    variation_id: int | None = None
    sequence: int | None = None


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.lstrip("-").isdigit() else None


def _blank_to_none(value: str | None) -> str | None:
    return value if value else None


def parse_bodid(value: str) -> BodId:
    """Split a BODID into its parts; never raises (an unknown form only keeps ``raw``)."""
    prefix = "infor-nid:"
    if not value.lower().startswith(prefix):
        return BodId(raw=value)
    left, _, query = value[len(prefix) :].partition("?")
    parts = [unquote(p) for p in left.split(":")]
    # The document id may itself contain ':'; the revision is always the last part when there
    # are five or more, so the document id is whatever lies between location and revision.
    document = ":".join(parts[3:-1]) if len(parts) >= 5 else (parts[3] if len(parts) == 4 else None)
    revision = parts[-1] if len(parts) >= 5 else None
    noun: str | None = None
    params: dict[str, str] = {}
    for item in query.split("&") if query else []:
        key, sep, val = item.partition("=")
        if not sep:
            noun = noun or _blank_to_none(unquote(key))
        else:
            params[key.lower()] = unquote(val)
    return BodId(
        raw=value,
        tenant=_blank_to_none(parts[0]) if parts else None,
        accounting_entity=_blank_to_none(parts[1]) if len(parts) > 1 else None,
        location=_blank_to_none(parts[2]) if len(parts) > 2 else None,
        document_id=_blank_to_none(document),
        revision=_blank_to_none(revision),
        noun=noun,
        verb=_blank_to_none(params.get("verb")),
        variation_id=_int_or_none(params.get("variationid")),
        sequence=_int_or_none(params.get("sequence")),
    )


def response_bodid(original: str, *, verb: str, sequence: int = 1) -> str:
    """The BODID of a response (Confirm, Acknowledge) to ``original``: the same identifier with
    the verb changed and ``&sequence=n`` set, as Infor's convention has it (facts.md §3)."""
    if "?" not in original:
        return f"{original}?BOD&verb={verb}&sequence={sequence}"
    left, _, query = original.partition("?")
    items = [item for item in query.split("&") if item]
    replaced: list[str] = []
    seen_verb = seen_sequence = False
    for item in items:
        key = item.partition("=")[0].lower()
        if key == "verb":
            replaced.append(f"verb={verb}")
            seen_verb = True
        elif key == "sequence":
            replaced.append(f"sequence={sequence}")
            seen_sequence = True
        else:
            replaced.append(item)
    if not seen_verb:
        replaced.append(f"verb={verb}")
    if not seen_sequence:
        replaced.append(f"sequence={sequence}")
    return f"{left}?{'&'.join(replaced)}"


# -- accounting entity --------------------------------------------------------------------------


def split_accounting_entity(value: str | None) -> tuple[int | None, str | None]:
    """M3's accounting entity is ``CONO_DIVI`` (``770_AAA``), or only ``CONO`` with Master AE."""
    if not value:
        return None, None
    cono, _, divi = value.strip().partition("_")
    return (int(cono) if cono.isdigit() else None), (divi or None)


# -- the parsed document -----------------------------------------------------------------------


@dataclass(frozen=True)
class ParsedBod:
    bod_type: str
    verb: str
    noun: str
    action_code: str | None
    logical_id: str | None
    component_id: str | None
    confirmation_code: str | None
    bodid: str
    creation_datetime: datetime | None
    tenant_id: str | None
    accounting_entity: str | None
    cono: int | None
    divi: str | None
    location: str | None
    document_id: str | None
    variation_id: int | None
    revision_id: str | None
    release_id: str | None
    version_id: str | None
    data: dict[str, Any] = field(repr=False)
    namespace: str = OAGIS_NS
    xml: str = field(default="", repr=False)

    def metadata(self) -> dict[str, Any]:
        """``payload["bod"]``: the BOD's identity and routing fields, JSON-able."""
        meta = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_METADATA}
        meta["creation_datetime"] = (
            self.creation_datetime.isoformat() if self.creation_datetime is not None else None
        )
        return meta

    def to_payload(self, ims: dict[str, Any] | None = None) -> dict[str, Any]:
        """The stored event payload (the contract with the M3 → BNG flows, docs/ion.md)."""
        return {"bod": self.metadata(), "data": self.data, "ims": ims, "xml": self.xml}


# -- hardened parsing ---------------------------------------------------------------------------


class _RefuseExternal(etree.Resolver):  # type: ignore[misc]
    """Every external file, URL or DTD a document names is refused, not fetched."""

    def resolve(self, system_url: str | None, public_id: str | None, context: Any) -> Any:
        raise BodError(f"external reference {system_url or public_id!r} refused", code="forbidden_xml")


def _new_parser() -> Any:
    parser = etree.XMLPullParser(
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=True,
        remove_comments=True,
        attribute_defaults=False,
    )
    parser.resolvers.add(_RefuseExternal())
    return parser


def refuse_dtd(raw: bytes) -> None:
    """Refuse DTDs before any parser sees the bytes (layer 2 in the module docstring)."""
    folded = raw.replace(b"\x00", b"").lower()
    if b"<!doctype" in folded:
        raise BodError(
            "DOCTYPE is not allowed: BODs need no DTD, and DTDs carry XXE and entity-expansion attacks",
            code="forbidden_xml",
        )
    if b"<!entity" in folded:
        raise BodError("ENTITY declarations are not allowed", code="forbidden_xml")


def refuse_long_tags(raw: bytes) -> None:
    """Refuse a start tag longer than MAX_TAG_BYTES before any parser sees the bytes (layer 2)."""
    data = raw.replace(b"\x00", b"") if b"\x00" in raw[:4] else raw  # UTF-16/32
    match = _LONG_START_TAG.search(data)
    if match is not None:
        name = re.match(rb"<([^\s/>]{1,64})", match.group(0))
        shown = name.group(1).decode("utf-8", "replace") if name else "?"
        raise BodError(
            f"start tag <{shown}> is longer than {MAX_TAG_BYTES} bytes (huge or too many attributes)",
            code="forbidden_xml",
        )


def max_elements(max_bytes: int) -> int:
    """How many elements a document may hold, given the byte limit it is held to."""
    return max(MIN_ELEMENTS, max_bytes // BYTES_PER_ELEMENT)


def parse_xml(raw: bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH, check_dtd: bool = True) -> Any:
    """Parse untrusted XML into an lxml root element, or raise ``BodError``.

    ``check_dtd=False`` skips the byte scans (DTD, long start tags) so that tests can prove the
    parser layer holds on its own; production code always scans.
    """
    if len(raw) > max_bytes:
        raise BodTooLarge(f"document too large: {len(raw)} bytes > limit {max_bytes}")
    if not raw.strip():
        raise BodError("empty document")
    if check_dtd:
        refuse_dtd(raw)
        refuse_long_tags(raw)
    parser = _new_parser()
    depth = elements = 0
    element_limit = max_elements(max_bytes)

    def check_events() -> None:
        nonlocal depth, elements
        for event, element in parser.read_events():
            if event == "start":
                depth += 1
                elements += 1
                if depth > max_depth:
                    raise BodError(f"document nested deeper than {max_depth} levels")
                if elements > element_limit:
                    raise BodTooLarge(
                        f"document holds more than {element_limit} elements, the most a document of "
                        f"the byte limit ({max_bytes}, M3BNG_ION_MAX_BOD_BYTES) may hold"
                    )
                if len(element.attrib) > MAX_ATTRIBUTES:
                    raise BodError(
                        f"element {_local(element)} has {len(element.attrib)} attributes; "
                        f"at most {MAX_ATTRIBUTES} are allowed"
                    )
            else:
                depth -= 1

    try:
        for offset in range(0, len(raw), _FEED_CHUNK):
            parser.feed(raw[offset : offset + _FEED_CHUNK])
            check_events()
        root = parser.close()
        check_events()
    except etree.XMLSyntaxError as exc:
        message = str(exc)
        if "Excessive depth" in message:
            raise BodError(f"document nested deeper than {max_depth} levels") from None
        if "Detected an entity reference loop" in message or "amplification" in message:
            raise BodError(f"entity expansion refused: {message}", code="forbidden_xml") from None
        raise BodError(f"not well-formed XML: {message}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise BodError("DOCTYPE is not allowed", code="forbidden_xml")
    if next(root.iter(etree.Entity), None) is not None:
        raise BodError("entity references are not allowed", code="forbidden_xml")
    return root


def decode_text(raw: bytes, encoding: str | None) -> str:
    """The document as text, in the encoding lxml found (declaration, BOM, or UTF-8)."""
    name = (encoding or "utf-8").lower()
    codec = "utf-8-sig" if name in ("utf-8", "utf8") else name
    try:
        return raw.decode(codec)
    except (UnicodeDecodeError, LookupError):
        raise BodError(f"document is not valid {encoding or 'UTF-8'} text") from None


# -- navigation ---------------------------------------------------------------------------------


def _local(element: Any) -> str:
    return str(etree.QName(element).localname)


def _elements(element: Any) -> Iterator[Any]:
    return (child for child in element if isinstance(child.tag, str))


def _child(element: Any | None, name: str) -> Any | None:
    if element is None:
        return None
    return next((c for c in _elements(element) if _local(c) == name), None)


def _path(element: Any | None, *names: str) -> Any | None:
    for name in names:
        element = _child(element, name)
    return element


def _text(element: Any | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def _attribute(element: Any | None, name: str) -> str | None:
    if element is None:
        return None
    for key, value in element.attrib.items():
        if etree.QName(key).localname == name:
            return str(value).strip() or None
    return None


# -- XML → dict ---------------------------------------------------------------------------------


def _attributes(element: Any) -> dict[str, str]:
    return {str(etree.QName(k).localname): str(v) for k, v in element.attrib.items()}


def _always_list(name: str, parent: str) -> bool:
    return name.endswith("Line") or name in _ALWAYS_LIST or _ALWAYS_LIST_INSIDE.get(parent) == name


def _value(element: Any) -> str | dict[str, Any]:
    children = list(_elements(element))
    if not children:
        return (element.text or "").strip()
    parent = _local(element)
    groups: dict[str, list[Any]] = {}
    for child in children:
        groups.setdefault(_local(child), []).append(child)
    out: dict[str, Any] = {}
    leading = (element.text or "").strip()
    if leading:
        out["#text"] = leading
    for name, members in groups.items():
        attrs = [_attributes(m) for m in members]
        if len(members) == 1 and not _always_list(name, parent):
            out[name] = _value(members[0])
            if attrs[0]:
                out[f"{name}@"] = attrs[0]
        else:
            out[name] = [_value(m) for m in members]
            if any(attrs):
                out[f"{name}@"] = attrs
    return out


def element_to_dict(element: Any) -> dict[str, Any]:
    """Convert one element by the rules in the module docstring (always a dict)."""
    value = _value(element)
    out: dict[str, Any] = value if isinstance(value, dict) else ({"#text": value} if value else {})
    attrs = _attributes(element)
    if attrs:
        out["@"] = attrs
    return out


# -- BOD structure ------------------------------------------------------------------------------


def _document_id_element(noun_element: Any, noun: str) -> Any | None:
    candidates = (
        (f"{noun}Header", "DocumentID", "ID"),
        ("DocumentID", "ID"),
        ("PartyIDs", "ID"),
        (f"{noun}Header", "ItemID", "ID"),
        ("ItemMasterHeader", "ItemID", "ID"),
    )
    for names in candidates:
        found = _path(noun_element, *names)
        if _text(found) is not None:
            return found
    return None


def _creation_datetime(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BodError(f"ApplicationArea/CreationDateTime {value!r} is not an ISO 8601 date-time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_bod(raw: bytes, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> ParsedBod:
    """Parse one BOD (hardened, see the module docstring) or raise ``BodError``."""
    root = parse_xml(raw, max_bytes=max_bytes, max_depth=max_depth)
    qname = etree.QName(root)
    if qname.namespace != OAGIS_NS:
        raise BodError(
            f"not an OAGIS BOD: root namespace {qname.namespace or '(none)'!r}, expected {OAGIS_NS!r}"
        )
    bod_type = str(qname.localname)
    application = _child(root, "ApplicationArea")
    if application is None:
        raise BodError("ApplicationArea missing")
    bodid = _text(_child(application, "BODID"))
    if bodid is None:
        raise BodError("ApplicationArea/BODID missing")
    data_area = _child(root, "DataArea")
    if data_area is None:
        raise BodError("DataArea missing")
    parts = list(_elements(data_area))
    if len(parts) < 2:
        raise BodError("DataArea must hold a verb element (Sync, Process, …) followed by a noun element")
    verb_element, noun_element = parts[0], parts[1]
    verb, noun = _local(verb_element), _local(noun_element)
    if bod_type != verb + noun:
        raise BodError(f"root element {bod_type} does not match DataArea/{verb} + {noun}")
    extra = [_local(p) for p in parts[2:]]
    if extra:
        raise BodError(
            f"DataArea holds {len(parts) - 1} noun elements ({', '.join([noun, *extra])}); "
            "m3bng accepts one noun per BOD"
        )

    sender = _child(application, "Sender")
    ids = parse_bodid(bodid)
    id_element = _document_id_element(noun_element, noun)
    accounting_entity = (
        _text(_child(verb_element, "AccountingEntityID"))
        or _attribute(id_element, "accountingEntity")
        or ids.accounting_entity
    )
    cono, divi = split_accounting_entity(accounting_entity)
    variation = _attribute(id_element, "variationID")
    return ParsedBod(
        bod_type=bod_type,
        verb=verb,
        noun=noun,
        action_code=_attribute(_path(verb_element, "ActionCriteria", "ActionExpression"), "actionCode"),
        logical_id=_text(_child(sender, "LogicalID")),
        component_id=_text(_child(sender, "ComponentID")),
        confirmation_code=_text(_child(sender, "ConfirmationCode")),
        bodid=bodid,
        creation_datetime=_creation_datetime(_text(_child(application, "CreationDateTime"))),
        tenant_id=_text(_child(verb_element, "TenantID")) or ids.tenant,
        accounting_entity=accounting_entity,
        cono=cono,
        divi=divi,
        location=(
            _text(_child(verb_element, "LocationID")) or _attribute(id_element, "location") or ids.location
        ),
        document_id=_text(id_element) or ids.document_id,
        variation_id=_int_or_none(variation) if variation is not None else ids.variation_id,
        revision_id=_attribute(id_element, "revisionID") or ids.revision,
        release_id=_attribute(root, "releaseID"),
        version_id=_attribute(root, "versionID"),
        data=element_to_dict(noun_element),
        xml=decode_text(raw, root.getroottree().docinfo.encoding),
    )
