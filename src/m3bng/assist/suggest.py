"""Mapping suggestions: for each input field of an M3 transaction, the sample's paths most
likely to fill it, scored, with the reasons and the conversion the rule needs.

Why a transparent scorer and not a model: a suggestion is only useful if the person accepting it
can see *why* it was made (``CUNM`` ← ``CompanyName``: "name" in both, 13 characters fit M3's
36) and reject it when the reason is wrong. Every signal below is a plain rule over data the
installation already has, so the suggestions run offline and the same input always gives the
same answer. The signals, added up and kept within 0..1:

* words: the field's M3 description (``Customer address 1``) against the path's words
  (``BillingAddress.Line1``), through a small business thesaurus (``Item`` ~ ``SKU``,
  ``Supplier`` ~ ``Vendor``, ``number`` ~ ``ID``); M3's run-together descriptions
  (``Suppliername``) are split into known words first;
* value shape: a date for a ``D`` field, a number for an ``N`` field, a short code for a short
  field, a value that fits the field's length; the wrong shape counts against a path;
* use: the same field filled from the same path (or the same last name, ``SKU`` against
  ``_line.SKU``) in the installation's mappings.

The functions are pure: the caller brings the field list (the tenant's MRS001MI metadata), the
sample and the pairs already in use.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from m3bng.connectors.m3.client import COMPANY_FIELDS
from m3bng.connectors.m3.metadata import FieldSpec
from m3bng.mapping.schema import CallSpec, MappingSpec

GOOD_SCORE = 0.35  # below this a candidate is shown but not counted as a good one
DRAFT_SCORE = 0.5  # a draft mapping takes only candidates this good
TOP = 3
MAX_PATHS = 400
MAX_DEPTH = 32  # deeper than any payload a mapping reads; a pasted sample may be anything
NUMBER_PATH = "_number"
LINE_PREFIX = "_line."

# Words of one concept, in M3's descriptions and in eCommerce payloads. General business
# vocabulary, not the shipped mappings' answers: it is what lets "Item number" meet "SKU".
_CONCEPTS: dict[str, tuple[str, ...]] = {
    "item": ("item", "sku", "product", "article", "part", "itm"),
    "quantity": ("quantity", "qty", "quantities", "qt"),
    "phone": ("telephone", "phone", "tel", "mobile"),
    "email": ("email", "mail"),
    "city": ("city", "town"),
    "postal": ("postal", "zip", "postcode", "zipcode"),
    "country": ("country", "nation"),
    "currency": ("currency", "cur"),
    "price": ("price", "salesprice", "cost"),
    "supplier": ("supplier", "vendor"),
    "customer": ("customer", "client", "buyer", "customers"),
    "warehouse": ("warehouse", "whs", "depot", "store"),
    "location": ("location", "bin", "shelf"),
    "id": ("id", "number", "no", "identifier", "nr", "num", "reference", "ref"),
    "amount": ("amount", "total", "sum"),
    "unit": ("unit", "uom", "measure"),
    "group": ("group", "category", "class", "type"),
    "name": ("name", "title"),
    "description": ("description", "desc", "text", "note"),
    "address": ("address", "addr", "street"),
    "terms": ("terms", "term", "conditions"),
    "payment": ("payment", "pay"),
    "status": ("status",),
    "state": ("state", "province", "region"),
    "date": ("date", "day", "time", "timestamp"),
    "delivery": ("delivery", "ship", "shipping", "dispatch", "requested"),
    "invoice": ("invoice", "bill"),
    "order": ("order", "ordered"),
    "line": ("line", "row", "position"),
}
_CONCEPT_OF = {word: concept for concept, words in _CONCEPTS.items() for word in words}
_SPLIT_WORDS = sorted({w for ws in _CONCEPTS.values() for w in ws if len(w) >= 3}, key=len, reverse=True)
# Words that say little on their own: they count, but less.
_WEAK = {"id": 0.6, "order": 0.6, "customer": 0.5, "supplier": 0.5, "date": 0.5, "line": 0.5, "code": 0.3}
_STOP = {"a", "an", "at", "by", "for", "in", "of", "on", "the", "to", "and", "or", "-"}
_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%d.%m.%Y", "%m/%d/%Y")
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_NUMBER = re.compile(r"^-?\d+([.,]\d+)?$")
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


@dataclass(frozen=True)
class SourcePath:
    """One path a rule's ``from`` can read, with its value in the sample (None: not in it)."""

    path: str
    value: Any = None
    in_sample: bool = True


@dataclass(frozen=True)
class UsedPair:
    """A field filled from a path in one of the installation's mappings."""

    field: str
    path: str
    flow: str
    operation: str  # PROGRAM/Transaction


@dataclass
class Candidate:
    path: str
    score: float
    reasons: list[str]
    rule: dict[str, Any]  # the rule to write (schema.FieldRule, as the YAML writes it)
    example: str = ""
    in_sample: bool = True
    raw: float = dataclasses.field(default=0.0, repr=False)  # the order before 0..1 is enforced


@dataclass
class FieldSuggestion:
    field: FieldSpec
    candidates: list[Candidate] = dataclasses.field(default_factory=list)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates and self.candidates[0].score >= GOOD_SCORE else None


@dataclass
class Suggestions:
    program: str
    transaction: str
    fields: list[FieldSuggestion]

    @property
    def missing_mandatory(self) -> list[FieldSpec]:
        """Mandatory fields for which no path is a good candidate: a person must decide (a var,
        a fixed value, a value the flow finds)."""
        return [s.field for s in self.fields if s.field.mandatory and s.best is None]


# -- the sample's paths -----------------------------------------------------------------------------

_SIMPLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _walk(value: Any, path: str, out: list[SourcePath], depth: int = 0) -> None:
    if len(out) >= MAX_PATHS or depth > MAX_DEPTH:
        return
    if isinstance(value, dict):
        for name, item in value.items():
            key = str(name) if _SIMPLE.match(str(name)) else '"' + str(name).replace('"', '\\"') + '"'
            _walk(item, f"{path}.{key}" if path else key, out, depth + 1)
    elif isinstance(value, list):
        return  # a list is a for_each's business, not a field's value
    elif path:
        out.append(SourcePath(path, value))


def sample_paths(data: Mapping[str, Any], for_each: str | None = None) -> list[SourcePath]:
    """Every leaf of the sample as a rule writes its path; for a call with ``for_each`` also the
    first element's leaves as ``_line.…`` and the element's position ``_number``."""
    out: list[SourcePath] = []
    _walk(dict(data), "", out)
    if for_each is not None:
        items = _search(for_each, data)
        if isinstance(items, list) and items and isinstance(items[0], dict):
            _walk(items[0], "_line", out)
        out.append(SourcePath(NUMBER_PATH, 1))
    return out


def _search(expression: str, data: Mapping[str, Any]) -> Any:
    import jmespath

    try:
        return jmespath.search(expression, dict(data))
    except Exception:  # a for_each this sample cannot answer: no _line paths
        return None


# -- words ------------------------------------------------------------------------------------------


def _split_glued(word: str) -> list[str]:
    """``suppliername`` → ``supplier``, ``name``: M3 writes some descriptions without spaces."""
    if word in _CONCEPT_OF or len(word) < 6:
        return [word]
    for known in _SPLIT_WORDS:
        if word.startswith(known) and len(word) > len(known):
            rest = _split_glued(word[len(known) :])
            if all(r in _CONCEPT_OF or r.isdigit() for r in rest):
                return [known, *rest]
    return [word]


def words(text: str) -> list[str]:
    """The concepts of a description or a path: camel case and separators split, e-mail joined,
    glued words split, synonyms folded (``SKU`` and ``Item`` both give ``item``)."""
    text = re.sub(r"(?i)e-mail", "Email", text)
    out: list[str] = []
    for part in _CAMEL.findall(text.replace("_", " ")):
        for word in _split_glued(part.lower()):
            out.append(_CONCEPT_OF.get(word, word))
    return out


def _path_words(path: str) -> tuple[list[str], list[str]]:
    """The last name's words and the words of the names above it (``BillingAddress.Line1``:
    ``line 1`` and ``billing address``)."""
    if path == NUMBER_PATH:
        return ["line", "id"], []
    names = [n for n in path.split(".") if n]
    if names and names[0] == "_line":
        names[0] = "Line"  # an element of the for_each list: a "line" of the document
    leaf = names[-1] if names else path
    return words(leaf.strip('"')), [w for n in names[:-1] for w in words(n.strip('"'))]


def _word_score(spec: FieldSpec, path: str) -> tuple[float, list[str]]:
    wanted = [w for w in words(spec.description) if w not in _STOP]
    if not wanted:
        wanted = words(spec.name)
    leaf, parents = _path_words(path)
    if not wanted or not leaf:
        return 0.0, []
    weight = {w: _WEAK.get(w, 1.0) for w in wanted}
    total = sum(weight.values())
    got = 0.0
    shared: list[str] = []
    for w, wt in weight.items():
        if w in leaf:
            got += wt
            shared.append(w)
        elif w in parents:
            got += wt * 0.5
            shared.append(w)
    if not shared:
        return 0.0, []
    # Words of the path the description does not have lower the match a little.
    extra = [w for w in leaf if w not in weight]
    score = (got / total) * (1.0 - 0.15 * min(len(extra), 2))
    return score, shared


# -- value shape ------------------------------------------------------------------------------------


def date_format(value: Any) -> str | None:
    """The strptime format ``value`` is a date in (``iso`` for what the engine reads without
    ``date_input``: ISO dates and times, yyyyMMdd), or None when it is no date."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if _ISO_DATETIME.match(text):
        return "iso"
    for fmt in _DATE_FORMATS:
        try:
            datetime.strptime(text, fmt)
        except ValueError:
            continue
        return "iso" if fmt in ("%Y-%m-%d", "%Y%m%d") else fmt
    return None


def is_date(value: Any) -> bool:
    return date_format(value) is not None


def is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and _NUMBER.match(value.strip()) is not None


def _shape(spec: FieldSpec, value: Any, in_sample: bool) -> tuple[float, list[str], dict[str, Any]]:
    """Points for (or against) a value's shape in a field, the reasons, and the conversion."""
    if not in_sample or value is None:
        return 0.0, [], {}
    if isinstance(value, bool):
        return -0.1, ["a true/false value"], {}
    text = str(value)
    rule: dict[str, Any] = {}
    concepts = set(words(spec.description))
    if spec.type == "D":
        fmt = date_format(value)
        if fmt is not None:
            rule["type"] = "date"
            if fmt != "iso":
                rule["date_input"] = fmt
            if isinstance(value, str) and not (len(text) == 8 and text.isdigit()):
                return 0.3, [f"a date ({text}): converted to yyyyMMdd"], rule
            return 0.3, ["a date"], rule
        return -0.4, ["M3 wants a date here; this is not one"], rule
    if spec.type == "N":
        if is_number(value):
            rule["type"] = "decimal"
            return 0.2, ["a number, as the N field wants"], rule
        return -0.4, ["M3 wants a number here; this is not one"], rule
    points, reasons = 0.0, []
    if is_date(value) and "date" not in concepts:
        points -= 0.2
        reasons.append("a date, but the field is not one")
    if is_number(value) and concepts & {"quantity", "price", "amount"}:
        points += 0.2
        reasons.append("a number, for a quantity/price/amount")
        rule["type"] = "decimal"
    if spec.length:
        if len(text) <= spec.length:
            if spec.length <= 3 and text.isalnum():
                points += 0.15
                reasons.append(f"a short code that fits {spec.length} characters")
                if text.upper() != text:
                    rule["upper"] = True
        elif " " in text.strip() or spec.length > 10:
            points -= 0.05
            reasons.append(f"{len(text)} characters, M3 takes {spec.length}: truncated")
            rule["truncate"] = True
        elif spec.length <= 3 and text.isalpha():
            points -= 0.1
            reasons.append(
                f"a word, M3 takes a code of {spec.length}: a lookup table turns one into the other"
            )
        else:
            points -= 0.3
            reasons.append(f"{len(text)} characters; M3 takes {spec.length}")
    return points, reasons, rule


# -- pairs already in use ---------------------------------------------------------------------------


def used_pairs(mappings: Iterable[MappingSpec], *, exclude_flow: str | None = None) -> list[UsedPair]:
    """Every (M3 field, path) a mapping fills from the event (``from``, a lookup's key), except in
    ``exclude_flow`` (the mapping being measured, so it does not find its own answers)."""
    out: list[UsedPair] = []
    for spec in mappings:
        if spec.flow == exclude_flow:
            continue
        for call in spec.calls.values():
            if not isinstance(call, CallSpec):
                continue
            for name, rule in call.fields.items():
                if rule.from_ is not None and not rule.from_.startswith("_ctx."):
                    out.append(UsedPair(name, rule.from_, spec.flow, f"{call.program}/{call.transaction}"))
    return out


def _leaf(path: str) -> str:
    return path.removeprefix(LINE_PREFIX).rsplit(".", 1)[-1]


def _use_score(name: str, path: str, pairs: Sequence[UsedPair]) -> tuple[float, list[str]]:
    # ``SKU`` of an event and ``_line.SKU`` of an element are the same name at another level.
    plain = path.removeprefix(LINE_PREFIX)
    same = [p for p in pairs if p.field == name and p.path.removeprefix(LINE_PREFIX) == plain]
    if same:
        return 0.5, [f"{name} ← {path} in {same[0].flow} ({same[0].operation})"]
    similar = [p for p in pairs if p.field == name and _leaf(p.path) == _leaf(path)]
    if similar:
        return 0.3, [f"{name} ← {similar[0].path} in {similar[0].flow} ({similar[0].operation})"]
    return 0.0, []


# -- the suggestions --------------------------------------------------------------------------------


def _example(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 40 else text[:37] + "…"


def score(
    spec: FieldSpec, source: SourcePath, pairs: Sequence[UsedPair] = (), *, for_each: bool = False
) -> Candidate:
    """How likely ``source`` fills ``spec``, with the reasons and the rule to write."""
    word_points, shared = _word_score(spec, source.path)
    reasons = [f"words in common: {', '.join(shared)}"] if shared else []
    points = 0.6 * word_points
    shape_points, shape_reasons, conversion = _shape(spec, source.value, source.in_sample)
    points += shape_points
    reasons += shape_reasons
    use_points, use_reasons = _use_score(spec.name, source.path, pairs)
    points += use_points
    reasons += use_reasons
    if for_each and source.path.startswith(LINE_PREFIX):
        points += 0.1
        reasons.append("a value of each element, as the call is made per element")
    if not source.in_sample:  # a hint from another flow's mapping, never a good candidate alone
        points = min(points - 0.2, GOOD_SCORE - 0.05)
        reasons.append("not in this sample")
    if word_points == 0 and use_points == 0:
        points = 0.0  # a shape alone is no reason to fill a field: not listed
    if source.path == NUMBER_PATH:
        conversion = {"type": "int"}  # a position: 1, 2, …
    rule = {"from": source.path, **conversion}
    if spec.mandatory:
        rule["required"] = True  # a missing value is then a clean data error, not M3's refusal
    shown = round(max(0.0, min(1.0, points)), 3)
    return Candidate(source.path, shown, reasons, rule, _example(source.value), source.in_sample, points)


def suggest(
    program: str,
    transaction: str,
    specs: Mapping[str, FieldSpec],
    data: Mapping[str, Any],
    *,
    for_each: str | None = None,
    pairs: Sequence[UsedPair] = (),
    exclude: Iterable[str] = (),
    top: int = TOP,
) -> Suggestions:
    """For every input field of ``program/transaction`` (but ``exclude``, the fields a call fills
    already), the ``top`` paths of ``data`` most likely to fill it, best first. Paths the
    installation's mappings fill the field from are candidates even when the sample lacks them."""
    paths = sample_paths(data, for_each)
    known = {p.path for p in paths}
    skip = set(exclude) | set(COMPANY_FIELDS)
    out: list[FieldSuggestion] = []
    for name, spec in specs.items():
        if name in skip:
            continue
        sources = list(paths) + [
            SourcePath(p.path, None, in_sample=False)
            for p in pairs
            if p.field == name
            and p.path not in known
            and (for_each is not None or not p.path.startswith((LINE_PREFIX, NUMBER_PATH)))
        ]
        scored = sorted(
            (
                score(spec, s, pairs, for_each=for_each is not None)
                for s in {s.path: s for s in sources}.values()
            ),
            key=lambda c: (-c.raw, c.path),
        )
        out.append(FieldSuggestion(spec, [c for c in scored if c.score > 0][:top]))
    out.sort(key=lambda s: (not s.field.mandatory, -(s.candidates[0].score if s.candidates else 0.0)))
    return Suggestions(program, transaction, out)
