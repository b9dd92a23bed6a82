"""Storefront reads: what BNG's B2B storefront asks synchronously, answered from M3 through a cache.

A shopper's page shows its own net prices and what can ship, and its orders and invoices; the
storefront asks while the shopper waits, so the answer has to be fast, and M3 (a tenant with a
small concurrency cap, shared with order entry) must not feel the traffic. Hence:

* prices from **OIS320MI GetPriceLine** (the metadata's "Get item price for an orderline": sales
  price, net price, price list, the six discounts with their texts), cached per customer, item,
  quantity, currency and date; many items in one **bulk** MI POST (facts.md §1.5);
* balances from **MMS200MI GetItmWhsBal** (AV01 allocatable net, STQT on hand, ALQT allocated),
  or **OIS100MI GetATP** (AVTQ, AVTD) when a delivery date is asked, cached per item and
  warehouse (and date);
* orders from **OIS100MI LstHead** → **LstLine** → **LstDelLineByCO**, invoices from **OIS350MI
  LstInvHeadByPay** paged by invoice number; not cached (they change as the shopper looks);
* the M3 client is the storefront's lane: its own share of the installation's concurrency cap
  (``M3BNG_STOREFRONT_M3_SHARE``, connectors/__init__.py), so a read flood waits for itself.

The customer is BNG's id, turned into M3's CUNO through the cross-references m3bng keeps
(store/documents.py); a BNG id m3bng never linked is refused, never guessed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from m3bng.config import Settings
from m3bng.connectors import Connectors
from m3bng.connectors.m3.client import M3Client, MIResult, MiValue
from m3bng.connectors.m3.errors import M3Error
from m3bng.errors import M3bngError, NotFound, TransientError, Unavailable
from m3bng.observability import metrics
from m3bng.store import documents
from m3bng.store.models import DEFAULT_INSTANCE
from m3bng.storefront.answers import AnswerCache, HeldAnswer, picker
from m3bng.storefront.cache import Entry, Lookup, ReadCache

log = structlog.get_logger(__name__)

CUSTOMER_ENTITY = "customer"
DISCOUNTS = range(1, 7)  # DIP1..DIP6 / DIA1..DIA6 / DPR1..DPR6 / TX81..TX86
# The outputs each read uses (asked as selectedColumns: GetPriceLine has 95).
PRICE_COLUMNS = (
    *("SAPR", "NETP", "LNAM", "CUCD", "PRRF", "PRRO", "DISY", "SPUN", "ALUN", "PRMO", "AAGN", "PIDE"),
    *(f"{field}{n}" for n in DISCOUNTS for field in ("DIP", "DIA", "DPR", "TX8")),
)
BALANCE_COLUMNS = ("AV01", "STQT", "ALQT")
ATP_COLUMNS = ("AVTQ", "UNMS", "AVTD")
EPOCH_DAY = date(1970, 1, 1).toordinal()
# How often a held price answer keeps its entries recent in the cache's LRU: often enough that
# a hot entry is never among the least recently used, seldom enough to cost a warm read nothing.
TOUCH_SECONDS = 1.0


class StorefrontUnavailable(Unavailable):
    """M3 is not answering and the cache holds nothing young enough: try again later."""

    code = "m3_unavailable"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# -- keys and values --------------------------------------------------------------------------------


# Keys are named tuples, not dataclasses: a warm 20-line read hashes each key a few times, and a
# tuple hashes in C (the dataclass __hash__ was a visible part of a warm read's CPU).
class PriceKey(NamedTuple):
    cuno: str
    itno: str
    quantity: str  # normalised decimal text: 1, 1.5, 10
    currency: str  # "" = the customer's own
    day: str  # yyyyMMdd: a price list line is valid from/to a date


class StockKey(NamedTuple):
    itno: str
    whlo: str
    day: str  # "" = the balance now (GetItmWhsBal); a date = ATP on it (GetATP)


@dataclass(frozen=True)
class Discount:
    number: int
    percent: Decimal
    amount: Decimal
    per_unit: Decimal
    text: str


@dataclass(frozen=True)
class Price:
    sales_price: Decimal
    net_price: Decimal
    line_amount: Decimal
    currency: str
    price_list: str
    discount_model: str
    unit: str
    price_origin: str
    agreement: str
    promotion: str
    discounts: tuple[Discount, ...] = ()


@dataclass(frozen=True)
class Balance:
    available: Decimal
    on_hand: Decimal | None
    allocated: Decimal | None
    unit: str = ""
    available_date: str = ""  # GetATP's AVTD


@dataclass(frozen=True)
class Answer:
    """One item's answer as the API shows it (value or error, with age and staleness)."""

    value: Any
    age: float
    as_of: float
    stale: bool
    error: BaseException | None
    unavailable: bool = False  # no value because M3 is away (not an answer M3 gave)


@dataclass
class Order:
    head: dict[str, str]
    lines: list[dict[str, str]] = field(default_factory=list)
    deliveries: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # by PONR


def number(text: str | None) -> Decimal:
    try:
        return Decimal((text or "0").strip() or "0")
    except InvalidOperation:
        return Decimal(0)


def _optional(text: str | None) -> Decimal | None:
    return None if text in (None, "") else number(text)


def normalise_quantity(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def degradable(exc: BaseException) -> bool:
    """M3 being down, slow or throttled: a stale value is better than none. An answer M3 gave
    (no such item, no price) is not: it is shown as that item's error."""
    return isinstance(exc, TransientError | TimeoutError) or not isinstance(exc, M3bngError)


def _retry_after(errors: Iterable[BaseException | None]) -> float:
    waits = [getattr(e, "retry_after", None) for e in errors]
    known = [w for w in waits if isinstance(w, int | float) and w > 0]
    return float(max(1.0, min(known))) if known else 5.0


# -- the service ------------------------------------------------------------------------------------


class Storefront:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        m3: M3Client | None,
        *,
        instance: str = DEFAULT_INSTANCE,
    ) -> None:
        """The storefront of one BNG ``instance`` (instances.py): ``m3`` runs in its company, and
        its customers are its own cross-references. Each instance has a cache of its own, so its
        keys are its company's by construction (a CUNO or price list of company 100 never answers
        a read of company 200)."""
        self.settings = settings
        self.sessions = sessions
        self.m3 = m3
        self.instance = instance
        self.prices: ReadCache[PriceKey, Price] = self._cache("price", settings.storefront_price_ttl_seconds)
        self.stock: ReadCache[StockKey, Balance] = self._cache("stock", settings.storefront_stock_ttl_seconds)
        # BNG customer id → CUNO: a link rarely changes; asked once per price TTL.
        self._customers: dict[str, tuple[str, float]] = {}
        self.answers = AnswerCache(settings.storefront_answer_cache_bytes)
        self._answered = metrics.storefront_cache_counter("price", "answer")

    def _cache(self, kind: str, ttl: float) -> ReadCache[Any, Any]:
        """Both caches are indexed by item: every BOD that changes them names items."""
        return ReadCache(
            kind,
            ttl=ttl,
            max_stale=self.settings.storefront_max_stale_seconds,
            max_entries=self.settings.storefront_cache_entries,
            item_of=lambda key: str(key.itno),
            degradable=degradable,
        )

    @property
    def cono(self) -> int | None:
        """The M3 company this storefront reads (None: the M3 service account's own)."""
        return self.m3.config.cono if self.m3 is not None else None

    def reads_company(self, accounting_entity: str | None) -> bool:
        """Whether a BOD of ``accounting_entity`` (``CONO_DIVI`` or ``CONO``) can change what this
        storefront cached: its own company's, or any when either side names no company."""
        if not accounting_entity or self.cono is None:
            return True
        cono = accounting_entity.split("_", 1)[0].strip()
        return not cono or cono.lstrip("0") == str(self.cono).lstrip("0")

    def _client(self) -> M3Client:
        if self.m3 is None:
            raise Unavailable("M3 is not configured (M3BNG_IONAPI_FILE)", code="m3_not_configured")
        return self.m3

    async def customer_number(self, bng_id: str) -> str:
        """M3's CUNO for BNG's customer id, from the cross-references; NotFound names the field."""
        now = time.monotonic()
        known = self._customers.get(bng_id)
        if known is not None and now - known[1] < self.settings.storefront_price_ttl_seconds:
            return known[0]
        async with self.sessions() as session:
            cuno = await documents.get_xref(session, CUSTOMER_ENTITY, bng_id, instance=self.instance)
        if cuno is None:
            raise NotFound(
                f"customer {bng_id!r} is not linked to an M3 customer (no cross-reference)",
                code="unknown_customer",
                fields=[{"field": "customer", "problem": "no M3 customer is linked to this BNG id"}],
            )
        if len(self._customers) > self.settings.storefront_cache_entries:
            self._customers.clear()
        self._customers[bng_id] = (cuno, now)
        return cuno

    # -- prices ------------------------------------------------------------------------------------

    async def price_list(
        self,
        bng_customer: str,
        lines: Sequence[tuple[str, Decimal]],
        *,
        currency: str | None = None,
        on: date | None = None,
    ) -> tuple[str, list[tuple[PriceKey, Answer]]]:
        """Net prices of ``lines`` (item, quantity) for one customer, in the order asked."""
        cuno = await self.customer_number(bng_customer)
        return cuno, await self.prices_of(cuno, lines, currency=currency, on=on)

    async def prices_of(
        self,
        cuno: str,
        lines: Sequence[tuple[str, Decimal]],
        *,
        currency: str | None = None,
        on: date | None = None,
        wait: float | None = None,
    ) -> list[tuple[PriceKey, Answer]]:
        """``price_list`` for an M3 customer number (the catalog price push's reference customer,
        sync.py): the same cache, bulk reads and lane. ``wait``: how long to wait for M3 (default
        the storefront's ``M3BNG_STOREFRONT_M3_WAIT_SECONDS``)."""
        day = (on or datetime.now(UTC).date()).strftime("%Y%m%d")
        keys = [PriceKey(cuno, itno, normalise_quantity(qty), currency or "", day) for itno, qty in lines]
        found = await self.prices.get_many(
            keys, self._fetch_prices, wait=self.settings.storefront_m3_wait_seconds if wait is None else wait
        )
        return [(key, self._checked(found, key)) for key in keys]

    async def _fetch_prices(self, keys: list[PriceKey]) -> dict[PriceKey, Price | BaseException]:
        def record(key: PriceKey) -> dict[str, MiValue]:
            fields: dict[str, MiValue] = {"CUNO": key.cuno, "ITNO": key.itno, "ORQA": key.quantity}
            if key.currency:
                fields["CUCD"] = key.currency
            fields["ORDT"] = key.day
            return fields

        return await self._bulk("OIS320MI", "GetPriceLine", keys, record, _price, PRICE_COLUMNS)

    def hold_prices(
        self,
        raw: bytes,
        bng_customer: str,
        cuno: str,
        answers: Sequence[tuple[PriceKey, Answer]],
        template: bytes,
        *,
        dated: bool,
    ) -> bool:
        """Keep the encoded answer of a price read under its raw request body, if every line is a
        fresh cached value (no item error, nothing stale or refetched in between) and the customer
        link it used is still the one cached; else forget any answer held under ``raw``.
        ``dated``: the request named its price date (else it is the day of the keys, and the
        answer is not served on another day)."""
        self.answers.drop(raw)
        link = self._customers.get(bng_customer)
        if link is None or link[0] != cuno:
            return False
        held: dict[PriceKey, Entry[Price]] = {}
        fetched_at: list[float] = []
        for key, answer in answers:
            entry = None
            if answer.error is None and not answer.stale and answer.value is not None:
                entry = self.prices.fresh_entry(key, answer.value)
            if entry is None or entry.fetched_wall != answer.as_of:
                return False
            held[key] = entry
            fetched_at.append(entry.fetched_at)
        day = None if dated else date.fromisoformat(answers[0][0].day).toordinal() - EPOCH_DAY
        fetched, pick = picker(fetched_at)
        keys, entries = tuple(held), tuple(held.values())
        self.answers.put(raw, HeldAnswer(bng_customer, cuno, day, keys, entries, template, fetched, pick))
        return True

    def held_prices(self, raw: bytes) -> tuple[HeldAnswer, float] | None:
        """The answer held under ``raw`` and the price cache's clock now, if a read would answer
        exactly it: the same customer link, the same default price date, and every line still
        the fresh entry it was built from (its age is the only part that changes)."""
        held = self.answers.get(raw)
        if held is None:
            return None
        link = self._customers.get(held.customer)
        if (
            link is None
            or link[0] != held.cuno
            or time.monotonic() - link[1] >= self.settings.storefront_price_ttl_seconds
            or (held.day is not None and held.day != int(time.time() // 86400))
        ):
            self.answers.drop(raw)
            return None
        now = self.prices.still_fresh(held.entries, min(held.fetched))
        if now is None:
            self.answers.drop(raw)
            return None
        if now - held.touched >= TOUCH_SECONDS:
            self.prices.touch(held.keys)
            held.touched = now
        self._answered.inc()
        return held, now

    # -- availability ------------------------------------------------------------------------------

    async def availability(
        self, items: Sequence[str], warehouses: Sequence[str], *, on: date | None = None
    ) -> list[tuple[StockKey, Answer]]:
        day = on.strftime("%Y%m%d") if on is not None else ""
        keys = [StockKey(itno, whlo, day) for itno in items for whlo in warehouses]
        found = await self.stock.get_many(
            keys, self._fetch_stock, wait=self.settings.storefront_m3_wait_seconds
        )
        return [(key, self._checked(found, key)) for key in keys]

    async def _fetch_stock(self, keys: list[StockKey]) -> dict[StockKey, Balance | BaseException]:
        now = [k for k in keys if not k.day]
        dated = [k for k in keys if k.day]
        parts = await asyncio.gather(
            self._bulk(
                "MMS200MI",
                "GetItmWhsBal",
                now,
                lambda k: {"WHLO": k.whlo, "ITNO": k.itno},
                _balance,
                BALANCE_COLUMNS,
            ),
            self._bulk(
                "OIS100MI",
                "GetATP",
                dated,
                lambda k: {"ITNO": k.itno, "WHLO": k.whlo, "DWDT": k.day},
                _atp,
                ATP_COLUMNS,
            ),
        )
        return {**parts[0], **parts[1]}

    # -- shared by both -----------------------------------------------------------------------------

    async def _bulk(
        self,
        program: str,
        transaction: str,
        keys: list[Any],
        record: Any,
        convert: Any,
        columns: Sequence[str],
    ) -> dict[Any, Any]:
        """One bulk MI POST per ``storefront_bulk_size`` keys, all at once (they queue in the
        storefront's lane of the M3 cap); each key gets its value or its own error."""
        if not keys:
            return {}
        m3 = self._client()
        size = self.settings.storefront_bulk_size
        chunks = [keys[i : i + size] for i in range(0, len(keys), size)]

        async def one(chunk: list[Any]) -> dict[Any, Any]:
            calls = [(transaction, record(key)) for key in chunk]
            try:
                results = await m3.execute_many(program, calls, columns=columns)
            except M3Error as exc:
                return dict.fromkeys(chunk, exc)
            out: dict[Any, Any] = {}
            for key, result in zip(chunk, results, strict=False):
                out[key] = result if isinstance(result, BaseException) else convert(result)
            return out

        merged: dict[Any, Any] = {}
        for part in await asyncio.gather(*(one(chunk) for chunk in chunks)):
            merged.update(part)
        return merged

    @staticmethod
    def _checked(found: Mapping[Any, Lookup[Any]], key: Any) -> Answer:
        lookup = found[key]
        return Answer(lookup.value, lookup.age, lookup.as_of, lookup.stale, lookup.error, lookup.unavailable)

    def raise_if_unavailable(self, answers: Iterable[Answer]) -> None:
        """503 for the whole read when any value is missing because M3 is away (and the cache
        held nothing young enough): a page with holes in its prices is worse than a retry."""
        missing = [a.error for a in answers if a.unavailable]
        if missing:
            raise StorefrontUnavailable(
                f"M3 is not answering and {len(missing)} value(s) have no cached copy younger "
                f"than {self.settings.storefront_max_stale_seconds:g} s",
                retry_after=_retry_after(missing),
            )

    # -- orders and invoices ------------------------------------------------------------------------

    async def orders(
        self, bng_customer: str, *, status_from: str | None = None, status_to: str | None = None
    ) -> tuple[str, list[Order]]:
        """The customer's orders with their lines and delivery lines. LstHead and LstLine have no
        "from" key among their inputs (metadata), so they cannot be paged by key: they are read
        to the end in one call each (maxrecs=0). Delivery lines are one LstDelLineByCO per line,
        sent in bulk."""
        cuno = await self.customer_number(bng_customer)
        m3 = self._client()
        head_in: dict[str, MiValue] = {"CUNO": cuno, "ORSL": status_from, "ORST": status_to}
        heads = (await self._read(m3.execute("OIS100MI", "LstHead", head_in, maxrecs=0))).records
        orders = [Order(head=h) for h in heads]
        by_orno = {o.head["ORNO"]: o for o in orders}
        line_results = await self._bulk_lists(
            m3, "OIS100MI", [("LstLine", {"ORNO": orno}) for orno in by_orno]
        )
        for orno, result in zip(by_orno, line_results, strict=False):
            by_orno[orno].lines = result
        wanted = [
            (o.head["ORNO"], line.get("PONR", "")) for o in orders for line in o.lines if line.get("PONR")
        ]
        delivery_results = await self._bulk_lists(
            m3, "OIS100MI", [("LstDelLineByCO", {"ORNO": orno, "PONR": ponr}) for orno, ponr in wanted]
        )
        for (orno, ponr), rows in zip(wanted, delivery_results, strict=False):
            if rows:
                by_orno[orno].deliveries[ponr] = rows
        return cuno, orders

    async def invoices(self, bng_customer: str, *, year: int) -> tuple[str, list[dict[str, str]]]:
        """The customer's invoices of ``year`` as its payer, read page by page: each page starts
        at the invoice number after the last one of the page before (M3 lists page by key), until
        a page comes back short. The customer is taken as its own payer (PYNO = CUNO), M3's
        default; a customer billed through another payer shows that payer's invoices only when
        asked by the payer's BNG id."""
        cuno = await self.customer_number(bng_customer)
        m3 = self._client()
        page = self.settings.storefront_list_page
        rows: list[dict[str, str]] = []
        start: int | None = None
        seen: set[str] = set()
        while True:
            fields: dict[str, MiValue] = {"YEA4": year, "PYNO": cuno, "IVNO": start}
            got = (await self._read(m3.execute("OIS350MI", "LstInvHeadByPay", fields, maxrecs=page))).records
            fresh = [r for r in got if r.get("IVNO") not in seen]
            rows.extend(fresh)
            seen.update(r.get("IVNO", "") for r in fresh)
            if len(got) < page or not fresh:
                return cuno, rows
            start = int(number(fresh[-1].get("IVNO"))) + 1

    async def _bulk_lists(
        self, m3: M3Client, program: str, calls: list[tuple[str, dict[str, MiValue]]]
    ) -> list[list[dict[str, str]]]:
        if not calls:
            return []
        size = self.settings.storefront_bulk_size
        chunks = [calls[i : i + size] for i in range(0, len(calls), size)]
        parts = await asyncio.gather(
            *(self._read(m3.execute_many(program, chunk, maxrecs=0)) for chunk in chunks)
        )
        out: list[list[dict[str, str]]] = []
        for part in parts:
            for result in part:
                if isinstance(result, BaseException):
                    if degradable(result):
                        raise self._unavailable(result)
                    out.append([])  # e.g. an order deleted between the two reads
                else:
                    out.append(result.records)
        return out

    async def _read(self, call: Any) -> Any:
        """An uncached read: M3's absence is a 503 with Retry-After, its answer is passed on."""
        try:
            async with asyncio.timeout(self.settings.m3_timeout + 1):
                return await call
        except (TransientError, TimeoutError) as exc:
            raise self._unavailable(exc) from None

    @staticmethod
    def _unavailable(exc: BaseException) -> StorefrontUnavailable:
        return StorefrontUnavailable(
            f"M3 is not answering: {str(exc)[:200]}", retry_after=_retry_after([exc])
        )

    # -- invalidation -------------------------------------------------------------------------------

    def invalidate(self, *, prices: Iterable[str] = (), stock: Iterable[tuple[str, str | None]] = ()) -> int:
        """Prices of these items (every customer) and balances of these (item, warehouse) pairs
        (warehouse None: every warehouse) are read from M3 again at the next request."""
        count = self.prices.invalidate(set(prices))
        by_item: dict[str, set[str | None]] = {}
        for itno, whlo in stock:
            by_item.setdefault(itno, set()).add(whlo)
        for itno, warehouses in by_item.items():
            if None in warehouses:
                count += self.stock.invalidate([itno])
            else:
                count += self.stock.invalidate([itno], keep=lambda k, w=warehouses: k.whlo not in w)  # type: ignore[misc]
        return count

    async def aclose(self) -> None:
        await self.prices.aclose()
        await self.stock.aclose()


def storefront_for(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    connectors: Connectors,
    instance_id: str = DEFAULT_INSTANCE,
) -> Storefront:
    """The storefront of one BNG instance: its reads in its M3 company (``M3Client.for_company``)
    on the storefront's lane of the M3 cap, its settings, its customer links. KeyError: the
    instance is not configured."""
    instances = connectors.instances
    instance = instances.get(instance_id) if instances is not None else None
    if instance is None and instance_id != DEFAULT_INSTANCE:
        raise KeyError(instance_id)
    m3 = connectors.m3_storefront or connectors.m3
    if m3 is not None and instance is not None:
        m3 = m3.for_company(instance.cono, instance.divi)
    own = instance.settings if instance is not None else settings
    return Storefront(own, sessions, m3, instance=instance_id)


def _price(result: MIResult) -> Price:
    r = result.record
    discounts = tuple(
        Discount(
            number=n,
            percent=number(r.get(f"DIP{n}")),
            amount=number(r.get(f"DIA{n}")),
            per_unit=number(r.get(f"DPR{n}")),
            text=r.get(f"TX8{n}", ""),
        )
        for n in DISCOUNTS
        if number(r.get(f"DIP{n}")) or number(r.get(f"DIA{n}")) or number(r.get(f"DPR{n}"))
    )
    return Price(
        sales_price=number(r.get("SAPR")),
        net_price=number(r.get("NETP")),
        line_amount=number(r.get("LNAM")),
        currency=r.get("CUCD", ""),
        price_list=r.get("PRRF", "") or r.get("PRRO", ""),
        discount_model=r.get("DISY", ""),
        unit=r.get("SPUN", "") or r.get("ALUN", ""),
        price_origin=r.get("PRMO", ""),
        agreement=r.get("AAGN", ""),
        promotion=r.get("PIDE", ""),
        discounts=discounts,
    )


def _balance(result: MIResult) -> Balance:
    r = result.record
    return Balance(
        available=number(r.get("AV01")), on_hand=_optional(r.get("STQT")), allocated=_optional(r.get("ALQT"))
    )


def _atp(result: MIResult) -> Balance:
    r = result.record
    return Balance(
        available=number(r.get("AVTQ")),
        on_hand=None,
        allocated=None,
        unit=r.get("UNMS", ""),
        available_date=r.get("AVTD", ""),
    )
