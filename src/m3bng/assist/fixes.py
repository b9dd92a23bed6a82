"""Fix suggestions for a dead letter: what is probably wrong, and concrete ways out.

A dead letter says what M3 (or the mapping) refused; ops then look M3 up by hand for the item a
customer meant, count characters, or search the wiki for a message id. This module does that
look-up for them and *explains* each candidate (score, fields matched), so that ops decide; it
never replays anything itself. Choosing a candidate (``prepare``) builds the edited payload, and
the replay's dry run shows its diff; the replay proper is the ordinary replay, sent by ops.

How the cause is read (``classify``), first answer wins:

* m3bng's own "item missing: SKU …" / "customer missing: …" (``flows.runtime.MissingReference``);
* an M3 error recorded on the failed step or the dead letter, in the form ``errors._text``
  writes (``PROG/TX: message (code C, field F = V)``): "does not exist" on ITNO or CUNO is a
  missing item or customer, "too long" on any field a value too long;
* a mapping error "mapping FLOW/CALL, field F: N characters; at most L allowed";
* anything else: a remedy from ``remedies.yaml`` when one matches the message.

Candidates come from the configured M3 only, through the flows' own client (its timeout, its
concurrency cap, its circuit breaker): items by ``MMS200MI/LstItmByItm`` and customers by
``CRS610MI/LstByNumber``, read page by page by key (``maxrecs``) up to ``MAX_RECORDS`` records
and within ``LOOKUP_BUDGET`` seconds, once per request whatever the number of missing lines.
Ranking is local and deterministic: edit distance (with look-alike characters such as O/0
counted as half an edit) and token overlap. Nothing leaves the installation.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from m3bng.errors import M3bngError

REMEDIES_FILE = Path(__file__).with_name("remedies.yaml")
# How much of M3 one request may read: a tenant with 100,000 items is not listed whole to
# rank a typo; the window starts at the key nearest the refused value (M3 lists page by key).
MAX_RECORDS = 1000
PAGE_SIZE = 200
LOOKUP_BUDGET = 10.0  # seconds for all of one request's M3 reads
MAX_CANDIDATES = 5
MIN_SCORE = 0.5
BLOCKED_STATUS = 50  # item status from which M3 refuses new order lines
BLOCKED_FACTOR = 0.6
# Characters typed for one another (O for 0, l for 1): half an edit, so BIKE-10O is nearer
# BIKE-100 than BIKE-200 is.
_LOOKALIKE = {frozenset(pair) for pair in ("O0", "I1", "L1", "S5", "B8", "Z2")}

# Lists M3 pages by key: (program, transaction, key field, what the rows are).
ITEM_LIST = ("MMS200MI", "LstItmByItm", "ITNO")
CUSTOMER_LIST = ("CRS610MI", "LstByNumber", "CUNO")
CUSTOMER_BY_NAME = ("CRS610MI", "LstByName", "CUNM")  # rows told apart by CUNO

Lister = Callable[[str, str, dict[str, str], int], Awaitable[list[dict[str, str]]]]
FieldLength = Callable[[str, str, str], Awaitable[int | None]]


class FixError(M3bngError):
    """A suggestion that cannot be prepared (unknown number, nothing to replay)."""


# -- what a suggestion is -----------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One payload change: the value at ``path`` (``data.Lines[0].SKU``) becomes ``after``."""

    path: str
    before: Any
    after: Any


@dataclass(frozen=True)
class Suggestion:
    kind: str  # replace_item, create_item, use_customer, create_customer, truncate, remedy
    title: str
    why: str  # plain words: what matched and how well
    score: float  # 0..1, 1 = certain; candidates are sorted by it
    edit: list[Change] = field(default_factory=list)  # payload changes (empty: an action)
    action: str | None = None  # what ops do outside the replay (create the item in M3, …)
    mode: str = "from_start"  # the replay mode that fits: from_start with an edit
    matched: dict[str, float] = field(default_factory=dict)  # field → similarity

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Cause:
    """What the dead letter says went wrong, as far as it can be read."""

    kind: str  # missing_item, missing_customer, too_long, m3_message, unknown
    message: str = ""
    program: str | None = None
    transaction: str | None = None
    code: str | None = None
    field: str | None = None  # M3's field name (ITNO, CUNO, WHLO …)
    value: str | None = None  # the refused value, when known
    limit: int | None = None  # too_long: the length allowed
    flow: str | None = None  # mapping errors: the flow and call
    call: str | None = None
    error_class: str | None = None
    error_type: str | None = None
    line: int | None = None  # missing item: the 1-based order line


@dataclass
class Report:
    cause: Cause
    suggestions: list[Suggestion]
    notes: list[str] = field(default_factory=list)  # limits hit, lookups that failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "cause": asdict(self.cause),
            "suggestions": [s.to_dict() for s in self.suggestions],
            "notes": list(self.notes),
        }


# -- reading the cause ---------------------------------------------------------------------------

_M3_TEXT = re.compile(
    r"^(?P<program>[A-Z]{3}\d{3}MI)/(?P<transaction>\w+): (?P<message>.*?)"
    r"(?: \((?P<extras>(?:code [^,()]+)?(?:, )?(?:field [^()]*|value [^()]*)?)\))?$",
    re.S,
)
_EXTRA_CODE = re.compile(r"code (?P<code>[^,()\s]+)")
_EXTRA_FIELD = re.compile(r"field (?P<field>[A-Z0-9]{3,6})(?: = (?P<value>.*))?$")
_MAPPING_TEXT = re.compile(
    r"^mapping (?P<flow>[\w.-]+)/(?P<call>[\w.-]+), field (?P<field>[\w.-]+): (?P<problem>.*)$", re.S
)
_LIMIT = re.compile(r"(?:at most|max(?:imum)?|allows|exceed)\s*(?P<n>\d+)", re.I)
_ITEM_MISSING = re.compile(
    r"item missing: SKU (?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\") \(line (?P<line>\d+), "
    r"M3 ITNO (?P<itno>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\)"
)
_CUSTOMER_MISSING = re.compile(
    r"customer missing: BNG customer (?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\") "
    r"\(M3 CUNO (?P<cuno>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")\)"
)
# m3bng's own "missing" errors (flows/orders.py, flows/customers.py): pattern, cause, the lookup
# that found nothing, and the M3 field it names.
_OWN_MISSING = (
    (_ITEM_MISSING, "missing_item", "MMS200MI", "GetItmBasic", "ITNO"),
    (_CUSTOMER_MISSING, "missing_customer", "CRS610MI", "GetBasicData", "CUNO"),
)
_NOT_FOUND = re.compile(r"\b(?:does not exists?|doesn't exist|not found|is not registered)\b", re.I)
_TOO_LONG = re.compile(r"\btoo long\b|\bmay not exceed\b|\bat most \d+ allowed\b|\bM3 allows \d+\b", re.I)


def _unquote(text: str) -> str:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text.strip("'\"")
    return str(value)


def parse_m3_text(text: str) -> dict[str, str | None] | None:
    """``PROG/TX: message (code C, field F = V)`` (``connectors.m3.errors._text``) taken apart."""
    match = _M3_TEXT.match(text.strip())
    if match is None:
        return None
    out: dict[str, str | None] = {
        "program": match["program"],
        "transaction": match["transaction"],
        "message": match["message"],
        "code": None,
        "field": None,
        "value": None,
    }
    extras = match["extras"] or ""
    if code := _EXTRA_CODE.search(extras):
        out["code"] = code["code"]
    if found := _EXTRA_FIELD.search(extras):
        out["field"], out["value"] = found["field"], found["value"]
    return out


def classify(error_class: str | None, error: str | None, step_error: str | None = None) -> Cause:
    """The cause of a dead letter from its error class and texts (the failed step's first: it
    is M3's answer, where the dead letter may only summarise)."""
    texts = [t for t in (step_error, error) if t]
    for text in texts:
        for pattern, kind, program, transaction, name in _OWN_MISSING:
            if found := pattern.search(text):
                line = found.groupdict().get("line")
                return Cause(
                    kind,
                    message=text,
                    program=program,
                    transaction=transaction,
                    field=name,
                    value=_unquote(found["value"]),
                    error_class=error_class,
                    line=int(line) if line else None,
                )
    for text in texts:
        if found := _MAPPING_TEXT.match(text.strip()):
            limit = _LIMIT.search(found["problem"])
            kind = (
                "too_long"
                if _TOO_LONG.search(found["problem"]) or "characters" in found["problem"]
                else "unknown"
            )
            return Cause(
                kind if limit else "unknown",
                message=found["problem"],
                field=found["field"],
                limit=int(limit["n"]) if limit else None,
                flow=found["flow"],
                call=found["call"],
                error_class=error_class,
            )
        parts = parse_m3_text(text)
        if parts is None:
            continue
        message = parts["message"] or ""
        common: dict[str, Any] = {
            "message": message,
            "program": parts["program"],
            "transaction": parts["transaction"],
            "code": parts["code"],
            "field": parts["field"],
            "value": parts["value"],
            "error_class": error_class,
        }
        if _NOT_FOUND.search(message) and parts["field"] == "ITNO":
            return Cause("missing_item", **common)
        if _NOT_FOUND.search(message) and parts["field"] == "CUNO":
            return Cause("missing_customer", **common)
        if _TOO_LONG.search(message):
            limit = _LIMIT.search(message)
            return Cause("too_long", limit=int(limit["n"]) if limit else None, **common)
        return Cause("m3_message", **common)
    return Cause("unknown", message=texts[0] if texts else "", error_class=error_class)


# -- similarity ------------------------------------------------------------------------------------


def _sub_cost(a: str, b: str) -> float:
    if a == b:
        return 0.0
    return 0.5 if frozenset((a, b)) in _LOOKALIKE else 1.0


def edit_distance(a: str, b: str) -> float:
    """Optimal string alignment distance (insert, delete, substitute, swap two neighbours), with
    look-alike characters counted as half a substitution."""
    rows = [[0.0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        rows[i][0] = float(i)
    for j in range(len(b) + 1):
        rows[0][j] = float(j)
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            best = min(
                rows[i - 1][j] + 1,
                rows[i][j - 1] + 1,
                rows[i - 1][j - 1] + _sub_cost(a[i - 1], b[j - 1]),
            )
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                best = min(best, rows[i - 2][j - 2] + 1)
            rows[i][j] = best
    return rows[len(a)][len(b)]


def number_similarity(a: str, b: str) -> float:
    """1 for the same key (case, spaces and separators aside), 0 for nothing in common."""
    x, y = _key(a), _key(b)
    if not x or not y:
        return 0.0
    return max(0.0, 1.0 - edit_distance(x, y) / max(len(x), len(y)))


def _key(text: str) -> str:
    return re.sub(r"[\s_.\-/]+", "", text.upper())


def tokens(text: str) -> set[str]:
    return {t for t in re.split(r"[^0-9a-zà-ÿ]+", text.lower()) if len(t) > 1}


def token_overlap(a: str, b: str) -> float:
    """Jaccard overlap of the words of two texts (0 when either has none)."""
    x, y = tokens(a), tokens(b)
    return len(x & y) / len(x | y) if x and y else 0.0


def name_similarity(a: str, b: str) -> float:
    """Names as people type them: the better of word overlap and whole-string closeness."""
    return max(token_overlap(a, b), number_similarity(a, b))


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def phone_match(a: str, b: str) -> bool:
    """Same number whatever the formatting or country prefix: the last 8 digits agree."""
    x, y = _digits(a), _digits(b)
    return len(x) >= 6 and len(y) >= 6 and x[-8:] == y[-8:]


# -- ranking ----------------------------------------------------------------------------------------


def rank_items(
    sku: str, rows: Sequence[Mapping[str, str]], description: str | None = None
) -> list[tuple[float, dict[str, float], Mapping[str, str]]]:
    """M3 items nearest a refused SKU: by number, and by description when the line has one."""
    ranked = []
    for row in rows:
        itno = (row.get("ITNO") or "").strip()
        if not itno or itno.upper() == sku.strip().upper():  # the refused number itself
            continue
        matched = {"ITNO": round(number_similarity(sku, itno), 3)}
        score = matched["ITNO"]
        if description:
            desc = max(
                token_overlap(description, row.get("ITDS") or ""),
                token_overlap(description, row.get("FUDS") or ""),
            )
            matched["ITDS"] = round(desc, 3)
            score = 0.7 * score + 0.3 * desc if desc else score
        if blocked(row):
            score *= BLOCKED_FACTOR  # offered last: M3 would refuse it on the order line
        if score >= MIN_SCORE:
            ranked.append((round(score, 3), matched, row))
    ranked.sort(key=lambda r: (-r[0], r[2].get("ITNO") or ""))
    return ranked[:MAX_CANDIDATES]


def blocked(row: Mapping[str, str]) -> bool:
    """An item whose status (STAT 50 and above: being phased out, blocked, deleted) M3 refuses
    on new order lines."""
    status = (row.get("STAT") or "").strip()
    return status.isdigit() and int(status) >= BLOCKED_STATUS


def rank_customers(
    wanted: Mapping[str, str | None], rows: Sequence[Mapping[str, str]]
) -> list[tuple[float, dict[str, float], Mapping[str, str]]]:
    """M3 customers nearest the order's customer: e-mail, phone, name, customer number.

    An identical e-mail is near-certain (1.0), an identical phone strong (0.9); a name scores
    its similarity times 0.9 and the number its similarity times 0.8, so a look-alike number
    alone never outranks a customer with the same e-mail.
    """
    ranked = []
    for row in rows:
        cuno = (row.get("CUNO") or "").strip()
        if not cuno:
            continue
        matched: dict[str, float] = {}
        scores = []
        email = (wanted.get("email") or "").strip().lower()
        if email and (row.get("MAIL") or "").strip().lower() == email:
            matched["MAIL"] = 1.0
            scores.append(1.0)
        phone = wanted.get("phone") or ""
        if phone and any(phone_match(phone, row.get(f) or "") for f in ("PHNO", "PHN2")):
            matched["PHNO"] = 1.0
            scores.append(0.9)
        name = wanted.get("name") or ""
        if name and row.get("CUNM"):
            similarity = round(name_similarity(name, row["CUNM"]), 3)
            if similarity >= MIN_SCORE:
                matched["CUNM"] = similarity
                scores.append(0.9 * similarity)
        number = wanted.get("number") or ""
        if number:
            similarity = round(number_similarity(number, cuno), 3)
            if similarity >= MIN_SCORE:
                matched["CUNO"] = similarity
                scores.append(0.8 * similarity)
        if not scores or cuno.upper() == number.strip().upper():  # the refused number itself
            continue
        # Several fields agreeing add a little: two strong matches beat one.
        score = min(1.0, max(scores) + 0.05 * (len(scores) - 1))
        if score >= MIN_SCORE:
            ranked.append((round(score, 3), matched, row))
    ranked.sort(key=lambda r: (-r[0], r[2].get("CUNO") or ""))
    return ranked[:MAX_CANDIDATES]


# -- M3 reads, bounded ------------------------------------------------------------------------------


class Lookups:
    """M3 lists read for one request: each list once, paged by key, capped, within a budget."""

    def __init__(
        self, lister: Lister | None, *, max_records: int = MAX_RECORDS, budget: float = LOOKUP_BUDGET
    ) -> None:
        self.lister = lister
        self.max_records = max_records
        self.budget = budget
        self.notes: list[str] = []
        self._cache: dict[tuple[str, str, str], list[dict[str, str]]] = {}

    async def read(
        self, program: str, transaction: str, key: str, start: str, *, ident: str | None = None
    ) -> list[dict[str, str]]:
        """Rows from ``start`` on in key order, at most ``max_records`` (a note says when cut).

        ``ident`` is the field that tells rows apart when the key does not (customers by name:
        two customers may share one); it defaults to the key."""
        cache_key = (program, transaction, start)
        if cache_key in self._cache:
            return self._cache[cache_key]
        rows: list[dict[str, str]] = []
        if self.lister is None:
            self.notes.append(f"M3 is not configured: {program}/{transaction} was not read")
            self._cache[cache_key] = rows
            return rows
        try:
            async with asyncio.timeout(self.budget):
                await self._pages(program, transaction, key, ident or key, start, rows)
        except TimeoutError:
            self.notes.append(
                f"{program}/{transaction}: stopped after {self.budget:g} s with {len(rows)} records read"
            )
        except M3bngError as exc:
            self.notes.append(f"{program}/{transaction} failed: {exc}")
        self._cache[cache_key] = rows
        return rows

    async def _pages(
        self, program: str, transaction: str, key: str, ident: str, start: str, rows: list[dict[str, str]]
    ) -> None:
        assert self.lister is not None
        seen: set[str] = set()
        first = start
        while len(rows) < self.max_records:
            size = min(PAGE_SIZE, self.max_records - len(rows) + 1)
            page = await self.lister(program, transaction, {key: start} if start else {}, size)
            fresh = [r for r in page if (r.get(ident) or "").strip() not in seen]
            for row in fresh:
                seen.add((row.get(ident) or "").strip())
            rows.extend(fresh[: self.max_records - len(rows)])
            if len(page) < size or not fresh:
                return
            start = (page[-1].get(key) or "").strip()  # M3 lists from this key on (inclusive)
        where = f"{key} {first!r} on" if first else "the start"
        self.notes.append(
            f"{program}/{transaction}: read {self.max_records} records (the cap) from {where}; "
            "a candidate beyond them is not shown"
        )


# -- payload helpers -----------------------------------------------------------------------------------


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _walk(sub, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            yield from _walk(sub, f"{path}[{index}]")
    else:
        yield path, value


def paths_holding(payload: Any, value: str, *, under: str = "data") -> list[str]:
    """Every leaf of the payload whose text is the refused value (case and padding aside)."""
    wanted = value.strip().upper()
    return [
        path
        for path, leaf in _walk(payload)
        if path.startswith(under) and isinstance(leaf, str) and leaf.strip().upper() == wanted
    ]


_STEP = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def _steps(path: str) -> list[str | int]:
    out: list[str | int] = []
    for name, index in _STEP.findall(path):
        out.append(int(index) if index else name)
    return out


def get_path(payload: Any, path: str) -> Any:
    node = payload
    for step in _steps(path):
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                return None
            node = node[step]
        else:
            if not isinstance(node, dict):
                return None
            node = node.get(step)
    return node


def apply_edit(payload: Any, changes: Sequence[Change]) -> Any:
    """A copy of the payload with each change made; a path that no longer holds ``before``
    refuses (the payload changed since the suggestion was made)."""
    out = copy.deepcopy(payload)
    for change in changes:
        steps = _steps(change.path)
        node = out
        for step in steps[:-1]:
            node = node[step] if isinstance(step, int) else node.get(step) if isinstance(node, dict) else None
            if node is None:
                raise FixError(f"{change.path}: not in the payload any more")
        last = steps[-1]
        current = (
            node[last]
            if isinstance(last, int) and isinstance(node, list) and last < len(node)
            else (node.get(last) if isinstance(node, dict) and isinstance(last, str) else None)
        )
        if current != change.before:
            raise FixError(
                f"{change.path}: is {current!r} now, not {change.before!r}; ask for suggestions again"
            )
        node[last] = change.after
    return out


# -- remedies ----------------------------------------------------------------------------------------


@cache
def remedies() -> list[dict[str, Any]]:
    data = yaml.safe_load(REMEDIES_FILE.read_text(encoding="utf-8")) or []
    return [dict(entry) for entry in data]


def remedy_for(cause: Cause) -> dict[str, Any] | None:
    """The catalogue's first entry whose every match key holds for this cause."""
    for entry in remedies():
        checks = [
            ("code", cause.code),
            ("error_type", cause.error_type),
            ("error_class", cause.error_class),
            ("field", cause.field),
        ]
        if not any(entry.get(name) for name, _ in checks) and not entry.get("words"):
            continue
        if any(entry.get(name) and entry[name] != value for name, value in checks):
            continue
        if entry.get("words") and not re.search(entry["words"], cause.message or "", re.I):
            continue
        return entry
    return None


def _remedy_suggestion(entry: dict[str, Any]) -> Suggestion:
    matched_on = (
        ", ".join(
            f"{name} {entry[name]}"
            for name in ("code", "error_type", "error_class", "field")
            if entry.get(name)
        )
        or "the message's words"
    )
    return Suggestion(
        kind="remedy",
        title=f"Remedy ({entry.get('where', 'either')}): {entry['id']}",
        why=f"known message, matched on {matched_on}; remedy text: m3bng's own wording "
        f"(message from: {entry.get('message', 'm3')})",
        score=0.5,
        action=str(entry["remedy"]).strip(),
        mode="from_failed_step",
    )


# -- the suggestions ---------------------------------------------------------------------------------


@dataclass
class Context:
    """What a suggestion may use besides the dead letter: the event's payload and type, the
    loaded flows, and M3 (through the flows' client) for lists and field lengths."""

    event_type: str
    source: str
    payload: Any
    has_flow: Callable[[str], bool]  # is a flow loaded for this event type (product.created …)
    lookups: Lookups
    field_length: FieldLength | None = None  # (program, transaction, field) → M3's length
    option: Callable[[str], Any] = lambda _name: None  # an option of the event's mapping
    rule_sources: Callable[[str, str], list[str]] = lambda _call, _field: []  # mapping → payload paths


async def suggest(cause: Cause, ctx: Context) -> Report:
    """Every candidate the cause allows, best first, each saying why."""
    report = Report(cause, [])
    if cause.kind == "missing_item":
        report.suggestions += await _missing_item(cause, ctx)
    elif cause.kind == "missing_customer":
        report.suggestions += await _missing_customer(cause, ctx)
    elif cause.kind == "too_long":
        report.suggestions += await _too_long(cause, ctx)
    entry = remedy_for(cause)
    if entry is not None:
        report.suggestions.append(_remedy_suggestion(entry))
    report.notes += ctx.lookups.notes
    report.suggestions.sort(key=lambda s: -s.score)
    return report


def _data(ctx: Context) -> dict[str, Any]:
    data = ctx.payload.get("data") if isinstance(ctx.payload, dict) else None
    return data if isinstance(data, dict) else {}


async def _missing_item(cause: Cause, ctx: Context) -> list[Suggestion]:
    sku = (cause.value or "").strip()
    if not sku or ctx.source != "bng":
        return []
    paths = paths_holding(ctx.payload, sku)
    if cause.line is not None:
        line_path = f"data.Lines[{cause.line - 1}].SKU"
        paths = [line_path] if line_path in paths else paths
    description = None
    for path in paths:
        parent = get_path(ctx.payload, path.rsplit(".", 1)[0])
        if isinstance(parent, dict):
            description = parent.get("Description") or parent.get("Name") or description
    program, transaction, key = ITEM_LIST
    rows = await ctx.lookups.read(program, transaction, key, sku[:1].upper())
    out = []
    for score, matched, row in rank_items(sku, rows, description):
        itno = row["ITNO"].strip()
        reasons = [
            f"ITNO {itno} is {matched['ITNO']:.0%} like {sku!r} (edit distance, O/0-style look-alikes half)"
        ]
        if matched.get("ITDS"):
            reasons.append(f"description shares {matched['ITDS']:.0%} of its words with the line's")
        if blocked(row):
            reasons.append(
                f"but its status {row['STAT'].strip()} blocks it on orders (score × {BLOCKED_FACTOR})"
            )
        status = (row.get("STAT") or "").strip()
        label = f"{itno} {(row.get('ITDS') or '').strip()}".strip()
        out.append(
            Suggestion(
                kind="replace_item",
                title=f"Use item {label}" + (f" (status {status})" if status else ""),
                why="; ".join(reasons) + f"; read from M3 {program}/{transaction}",
                score=score,
                edit=[Change(path, get_path(ctx.payload, path), itno) for path in paths],
                matched=matched,
            )
        )
    if ctx.has_flow("product.created"):
        out.append(
            Suggestion(
                kind="create_item",
                title=f"Create the item {sku} in M3",
                why="a product mapping (product.created → MMS200MI/AddItmBasic) is loaded, so the "
                "item can be created from BNG's product; the order then goes through unchanged",
                score=0.4,
                action=f"Send product.created for SKU {sku} from BNG (save the product there), or "
                "create the item in M3 (MMS001); then replay from the failed step.",
                mode="from_failed_step",
            )
        )
    return out


def _customer_wanted(cause: Cause, ctx: Context) -> dict[str, str | None]:
    data = _data(ctx)
    block = data.get("Customer") if isinstance(data.get("Customer"), dict) else data
    assert isinstance(block, dict)
    name = block.get("CompanyName") or " ".join(
        str(block[k]) for k in ("FirstName", "LastName") if block.get(k)
    )
    return {
        "email": block.get("Email"),
        "phone": block.get("Phone"),
        "name": name or None,
        "number": cause.value or data.get("CustomerID"),
    }


async def _missing_customer(cause: Cause, ctx: Context) -> list[Suggestion]:
    # In a customer's own event CustomerID is the customer itself, not a reference to change.
    if ctx.source != "bng" or ctx.event_type.startswith("customer."):
        return []
    data = _data(ctx)
    wanted = _customer_wanted(cause, ctx)
    target = "data.CustomerID" if "CustomerID" in data else None
    if target is None and cause.value:
        found = paths_holding(ctx.payload, cause.value)
        target = found[0] if found else None
    program, transaction, key = CUSTOMER_LIST
    rows = await ctx.lookups.read(program, transaction, key, "")
    read = f"{program}/{transaction}"
    name = (wanted.get("name") or "").strip()
    if name:
        # Beyond the capped read by number, the customers named like this one (M3 lists them
        # from a name on): a large customer base still finds the name's neighbours.
        by_name, _, name_key = CUSTOMER_BY_NAME
        named = await ctx.lookups.read(by_name, "LstByName", name_key, name[:3], ident="CUNO")
        known = {(r.get("CUNO") or "").strip() for r in rows}
        rows = rows + [r for r in named if (r.get("CUNO") or "").strip() not in known]
        read += " and CRS610MI/LstByName"
    out = []
    labels = {"MAIL": "e-mail", "PHNO": "phone", "CUNM": "name", "CUNO": "customer number"}
    for score, matched, row in rank_customers(wanted, rows):
        cuno = row["CUNO"].strip()
        reasons = [
            f"{labels[f]} {'identical' if s == 1.0 else f'{s:.0%} alike'} ({f})" for f, s in matched.items()
        ]
        out.append(
            Suggestion(
                kind="use_customer",
                title=f"Use customer {cuno} {(row.get('CUNM') or '').strip()}".strip(),
                why="; ".join(reasons) + f"; read from M3 {read}",
                score=score,
                edit=[Change(target, get_path(ctx.payload, target), cuno)] if target else [],
                matched=matched,
                action=None if target else f"The payload has no CustomerID to change; use {cuno} in BNG.",
            )
        )
    if isinstance(data.get("Customer"), dict) and ctx.has_flow("customer.created"):
        auto = ctx.option("auto_create_customer")
        out.append(
            Suggestion(
                kind="create_customer",
                title="Create the customer from the order",
                why="the order carries a Customer block and a customer mapping (customer_sync) is loaded"
                + ("" if auto else "; the order mapping's auto_create_customer is off"),
                score=0.4,
                action="Send customer.created for this customer from BNG, or set "
                "options.auto_create_customer: true in the order mapping (it then creates the "
                "customer from the order's Customer block); then replay from the failed step.",
                mode="from_failed_step",
            )
        )
    return out


async def _too_long(cause: Cause, ctx: Context) -> list[Suggestion]:
    if ctx.source != "bng" or not cause.field:
        return []
    limit, origin = None, ""
    if ctx.field_length is not None and cause.program and cause.transaction:
        limit = await ctx.field_length(cause.program, cause.transaction, cause.field)
        origin = f"M3's length of {cause.field} in {cause.program}/{cause.transaction} (MRS001MI)"
    if not limit and cause.limit:
        limit, origin = cause.limit, "the limit the error states"
    if not limit:
        return []
    paths: list[str] = []
    if cause.value:
        paths = paths_holding(ctx.payload, cause.value)
    if not paths and cause.call:
        for source in ctx.rule_sources(cause.call, cause.field):
            paths += [
                p
                for p, leaf in _walk(ctx.payload)
                if _matches_source(p, source) and isinstance(leaf, str) and len(leaf.strip()) > limit
            ]
    out = []
    for path in dict.fromkeys(paths):
        before = get_path(ctx.payload, path)
        if not isinstance(before, str) or len(before) <= limit:
            continue
        after = before.strip()[:limit]
        out.append(
            Suggestion(
                kind="truncate",
                title=f"Shorten {path} to {limit} characters: {after!r}",
                why=f"{cause.field} takes at most {limit} characters ({origin}); the value has {len(before)}",
                score=0.7,
                edit=[Change(path, before, after)],
                matched={cause.field: 1.0},
            )
        )
    return out


def _matches_source(path: str, source: str) -> bool:
    """A payload path the mapping rule's ``from`` reads: ``Warehouse`` ↔ ``data.Warehouse``,
    ``_line.SKU`` ↔ ``data.Lines[i].SKU``."""
    if source.startswith("_line."):
        return re.fullmatch(r"data\.\w+\[\d+\]\." + re.escape(source[len("_line.") :]), path) is not None
    return path == f"data.{source}"
