"""``/api/v1/storefront``: what BNG's B2B storefront reads from M3 while a shopper waits.

Prices, availability, a customer's orders (with lines and deliveries) and invoices. Every route
needs a token with scope ``storefront:read`` (api/ops/auth.py): a scope of its own, so the
storefront's token reaches no ops route and no ops token reads customer prices. The logic is in
``m3bng.storefront``; this module turns requests into its calls and its answers into JSON, and
M3's absence into ``503`` with ``Retry-After`` (docs/storefront-api.md).
"""

from __future__ import annotations

import datetime as dt
import math
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

import orjson
import structlog
from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import QueryParams
from starlette.types import Receive, Scope, Send

from m3bng.api.deps import RuntimeDep, receive_body, request_headers, send_json
from m3bng.api.errors import ApiError, error_response, validation_error
from m3bng.api.ops.auth import StorefrontCaller, check_authorization
from m3bng.connectors.m3.errors import M3Error, M3NotFound
from m3bng.errors import Refused
from m3bng.instances import DEFAULT
from m3bng.ops.tokens import Scope as TokenScope
from m3bng.runtime import Runtime
from m3bng.storefront.answers import encode_age, template_of
from m3bng.storefront.service import Answer, Balance, Price, PriceKey, Storefront, StorefrontUnavailable

log = structlog.get_logger(__name__)
router = APIRouter(prefix="/api/v1/storefront", tags=["storefront"])

ITEM = r"^[^\s,][^,]{0,14}$"  # an M3 item number (ITNO A15), no commas (they separate lists)
WAREHOUSE = r"^[^\s,][^,]{0,2}$"  # WHLO A3
CUSTOMER = Annotated[
    str, Path(min_length=1, max_length=64, description="the customer's BNG id (linked to its M3 CUNO)")
]
INSTANCE = Annotated[
    str | None,
    Query(
        max_length=64,
        description="the BNG instance (M3BNG_INSTANCES_FILE) whose M3 company and customer links "
        "are read; default `default`. Unknown: 404 unknown_instance",
    ),
]
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {
        "description": "M3 is not answering and the cache holds no value younger than "
        "M3BNG_STOREFRONT_MAX_STALE_SECONDS; Retry-After says when to ask again"
    },
    404: {"description": "the customer's BNG id is linked to no M3 customer, or no such instance"},
}


class ItemError(BaseModel):
    code: str = Field(description="M3's error class: not_found, data, program …")
    message: str


class Freshness(BaseModel):
    age_seconds: float = Field(description="how long ago M3 gave this value")
    as_of: datetime | None = Field(description="when M3 gave this value")
    stale: bool = Field(
        description="true: M3 did not answer in time and this is the cached value (still within "
        "the maximum staleness); false: fresh (within its TTL)"
    )


class DiscountOut(BaseModel):
    number: int = Field(description="discount 1..6 of M3's discount model")
    percent: Decimal
    amount: Decimal = Field(description="for the line's quantity")
    per_unit: Decimal
    text: str


class PriceOut(Freshness):
    item: str
    quantity: Decimal
    net_price: Decimal | None = Field(description="per unit, after discounts (M3 NETP)")
    sales_price: Decimal | None = Field(description="per unit, from the price list (M3 SAPR)")
    line_amount: Decimal | None = Field(description="net price × quantity (M3 LNAM)")
    currency: str | None
    price_list: str | None = Field(description="the price list that gave the sales price (M3 PRRF)")
    discount_model: str | None = Field(description="M3 DISY")
    unit: str | None = Field(description="sales price unit of measure (M3 SPUN)")
    discounts: list[DiscountOut] = Field(default_factory=list)
    error: ItemError | None = Field(default=None, description="set: M3 gave no price for this item")


class PriceLineIn(BaseModel):
    item: str = Field(pattern=ITEM, description="M3 item number (ITNO)")
    quantity: Decimal = Field(default=Decimal(1), gt=0, le=Decimal("99999999999"), decimal_places=6)


class PriceRequest(BaseModel):
    customer: str = Field(min_length=1, max_length=64, description="the customer's BNG id")
    currency: str | None = Field(
        default=None, pattern=r"^[A-Z]{3}$", description="ISO code; default the customer's in M3"
    )
    date: dt.date | None = Field(default=None, description="price date; default today (UTC)")
    items: list[PriceLineIn] = Field(min_length=1)


class PriceAnswer(BaseModel):
    customer: str
    stale: bool = Field(description="true if any price is a stale cached value")
    prices: list[PriceOut]


class AvailabilityOut(Freshness):
    item: str
    warehouse: str
    available: Decimal | None = Field(
        description="allocatable now (MMS200MI AV01), or available to promise on the date (OIS100MI AVTQ)"
    )
    on_hand: Decimal | None = Field(description="MMS200MI STQT (no date asked)")
    allocated: Decimal | None = Field(description="MMS200MI ALQT (no date asked)")
    available_date: str | None = Field(description="OIS100MI GetATP AVTD (a date asked)")
    error: ItemError | None = None


class AvailabilityAnswer(BaseModel):
    stale: bool
    date: dt.date | None
    availability: list[AvailabilityOut]


class DeliveryOut(BaseModel):
    delivery: str = Field(description="delivery number (DLIX)")
    quantity: Decimal | None = Field(description="TRQT")
    status: str = Field(description="progress status (PGRS)")
    fields: dict[str, str] = Field(description="the delivery line as M3 listed it")


class OrderLineOut(BaseModel):
    line: str = Field(description="PONR")
    item: str
    quantity: Decimal | None
    net_price: Decimal | None
    status: str = Field(description="highest status of the line (ORST)")
    deliveries: list[DeliveryOut]
    fields: dict[str, str]


class OrderOut(BaseModel):
    order: str = Field(description="M3 order number (ORNO)")
    customer_order: str = Field(description="the customer's order reference (CUOR)")
    order_date: str
    status_low: str = Field(description="ORSL: lowest line status (22 reserved … 77 invoiced)")
    status_high: str = Field(description="ORST: highest line status")
    lines: list[OrderLineOut]
    fields: dict[str, str]


class OrdersAnswer(BaseModel):
    customer: str
    orders: list[OrderOut]


class InvoiceOut(BaseModel):
    invoice: str = Field(description="IVNO")
    year: int
    invoice_date: str
    due_date: str
    amount: Decimal | None = Field(description="AMT1")
    open_amount: Decimal | None = Field(description="RAFC, remaining to pay")
    currency: str
    status: str = Field(description="INST")
    fields: dict[str, str]


class InvoicesAnswer(BaseModel):
    customer: str
    year: int
    invoices: list[InvoiceOut]


# -- helpers ----------------------------------------------------------------------------------------


def _item_error(answer: Answer) -> dict[str, str] | None:
    """ItemError's shape."""
    if answer.error is None:
        return None
    code = str(getattr(answer.error, "error_class", "error"))
    message = getattr(answer.error, "mi_message", None) if isinstance(answer.error, M3Error) else None
    return {"code": code, "message": str(message or answer.error)[:300]}


def _plain(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _json(content: dict[str, Any]) -> Response:
    """The answer as the response model describes it, encoded by orjson straight from the values:
    a warm price read is a cache lookup, and validating and encoding twenty lines through
    pydantic again cost more than the lookup itself (docs/benchmarks.md, storefront)."""
    return Response(orjson.dumps(content, default=_plain), media_type="application/json")


def _freshness(answer: Answer) -> dict[str, Any]:
    return {
        "age_seconds": round(answer.age, 3),
        "as_of": datetime.fromtimestamp(answer.as_of, UTC) if answer.as_of else None,
        "stale": answer.stale,
    }


PRICE_FIELDS = (
    "net_price",
    "sales_price",
    "line_amount",
    "currency",
    "price_list",
    "discount_model",
    "unit",
)


def _values(value: object | None, names: tuple[str, ...]) -> dict[str, Any]:
    """The named attributes of a cached value, or None each when there is none (an error)."""
    return {name: getattr(value, name) if value is not None else None for name in names}


def _unavailable(exc: StorefrontUnavailable) -> ApiError:
    return ApiError(
        503,
        exc.code,
        exc.message,
        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
    )


def _m3_refused(exc: M3Error) -> ApiError:
    """M3 answered a list read with an error (the linked customer is not in M3, no authority
    for the company …): 404 when M3 says it does not exist, else 502, with M3's message."""
    message = f"M3 {exc.program}/{exc.transaction}: {exc.mi_message}"[:300]
    if isinstance(exc, M3NotFound):
        return ApiError(404, "m3_not_found", message)
    return ApiError(502, "m3_refused", message)


def _decimal(value: str | None) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value).strip())
    except ArithmeticError:
        return None


def _too_many(field: str, count: int, limit: int) -> ApiError:
    return ApiError(
        422,
        "invalid_request",
        f"{field}: {count} asked, at most {limit} per request (M3BNG_STOREFRONT_MAX_ITEMS)",
        fields=[{"field": field, "problem": f"at most {limit}"}],
    )


def storefront_of(runtime: Runtime, instance: str | None) -> Storefront:
    """The storefront of the ``?instance=`` asked (default ``default``), as the ops API names
    instances; 404 ``unknown_instance`` naming it when it is not configured."""
    instance_id = instance or DEFAULT
    if not runtime.known_instance(instance_id):
        shown = instance_id if len(instance_id) <= 64 else instance_id[:64] + "…"
        raise ApiError(
            404, "unknown_instance", f"no BNG instance {shown!r} is configured (M3BNG_INSTANCES_FILE)"
        )
    return runtime.storefront_for(instance_id)


# -- routes -----------------------------------------------------------------------------------------


@router.post("/prices", response_model=PriceAnswer, responses=_UNAVAILABLE)
async def prices(
    body: PriceRequest, caller: StorefrontCaller, runtime: RuntimeDep, instance: INSTANCE = None
) -> Response:
    """Net prices of many items for one customer (OIS320MI GetPriceLine, in bulk), each with the
    price list and discounts that produced it, and its age; cached per customer, item, quantity,
    currency and date. (Served by ``fast_prices`` below; this route is its OpenAPI entry.)"""
    return await price_answer(runtime, body, instance)


async def price_answer(runtime: Runtime, body: PriceRequest, instance: str | None = None) -> Response:
    return Response(await price_body(runtime, body, instance), media_type="application/json")


async def price_body(
    runtime: Runtime, body: PriceRequest, instance: str | None = None, raw: bytes | None = None
) -> bytes:
    """The answer's bytes; with ``raw`` (the request body it was validated from), also held for
    the next read of the same bytes (storefront/answers.py) when every line is fresh."""
    limit = runtime.settings.storefront_max_items
    if len(body.items) > limit:
        raise _too_many("items", len(body.items), limit)
    storefront = storefront_of(runtime, instance)
    lines = [(line.item, line.quantity) for line in body.items]
    try:
        cuno, answers = await storefront.price_list(
            body.customer, lines, currency=body.currency, on=body.date
        )
        storefront.raise_if_unavailable(a for _, a in answers)
    except StorefrontUnavailable as exc:
        raise _unavailable(exc) from None
    template = template_of(_price_pieces(body, answers))
    if raw is not None:
        storefront.hold_prices(raw, body.customer, cuno, answers, template, dated=body.date is not None)
    return template % tuple(encode_age(answer.age) for _, answer in answers)


def _price_pieces(body: PriceRequest, answers: list[tuple[PriceKey, Answer]]) -> list[bytes]:
    """The PriceAnswer's JSON (as orjson encodes the whole dict, keys in this order) cut around
    each line's ``age_seconds``: the one part a held answer changes per read."""
    stale = any(answer.stale for _, answer in answers)
    head = b'{"customer":' + orjson.dumps(body.customer) + b',"stale":' + _BOOL[stale] + b',"prices":['
    pieces = [head]
    for (key, answer), line in zip(answers, body.items, strict=True):
        price: Price | None = answer.value
        static = {
            "item": key.itno,
            "quantity": line.quantity,
            **_values(price, PRICE_FIELDS),
            "discounts": price.discounts if price else [],
            "error": _item_error(answer),
        }
        pieces[-1] += orjson.dumps(static, default=_plain)[:-1] + b',"age_seconds":'
        as_of = datetime.fromtimestamp(answer.as_of, UTC) if answer.as_of else None
        pieces.append(b',"as_of":' + orjson.dumps(as_of) + b',"stale":' + _BOOL[answer.stale] + b"},")
    pieces[-1] = pieces[-1][:-1] + b"]}"
    return pieces


_BOOL = {True: b"true", False: b"false"}
FAST_PATH = "/api/v1/storefront/prices"


async def fast_prices(runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /api/v1/storefront/prices`` as a plain ASGI call (m3bng.app routes it here first,
    as it does webhooks): the same checks, handler and error shapes as the route, without
    FastAPI's routing and dependency machinery, which cost a warm price read more than its
    cache lookups (docs/benchmarks.md, storefront). A read whose body has a held answer still
    fresh (storefront/answers.py) is answered from it: no validation, no encoding."""
    try:
        headers = request_headers(scope)
        await check_authorization(
            runtime.authenticator, headers.get("authorization"), TokenScope.STOREFRONT_READ
        )
        raw = await receive_body(receive, runtime.settings.max_body_bytes, headers.get("content-length"))
        query = scope.get("query_string")
        instance = QueryParams(query).get("instance") if query else None
        body = _held_answer(runtime, instance, raw)
        if body is None:
            try:
                request = PriceRequest.model_validate_json(raw)
            except ValidationError as exc:
                raise validation_error(exc) from None
            if instance is not None and len(instance) > 64:
                raise ApiError(
                    422,
                    "invalid_request",
                    "instance: at most 64 characters",
                    fields=[{"field": "instance", "problem": "at most 64 characters"}],
                )
            body = await price_body(runtime, request, instance, raw)
    except (ApiError, Refused) as exc:
        response = error_response(exc)
    except Exception as exc:  # the store is down, a bug: the error shape FastAPI's handler gives
        log.error("storefront.failed", error=repr(exc)[:500])
        response = error_response(
            ApiError(500, "internal_error", "the prices could not be read; retry later")
        )
    else:
        await send_json(send, 200, body)
        return
    await response(scope, receive, send)


def _held_answer(runtime: Runtime, instance: str | None, raw: bytes) -> bytes | None:
    """The held answer to ``raw`` with its ages now, or None: the normal path decides (and holds
    what it answers). Only a body that once validated, for a known instance, has one."""
    instance_id = instance or DEFAULT
    if len(instance_id) > 64 or not runtime.known_instance(instance_id):
        return None
    found = runtime.storefront_for(instance_id).held_prices(raw)
    if found is None:
        return None
    held, now = found
    return held.body(now)


def _split(value: str, field: str, pattern: str, limit: int) -> list[str]:
    import re

    parts = list(dict.fromkeys(p.strip() for p in value.split(",") if p.strip()))
    if not parts:
        raise ApiError(
            422, "invalid_request", f"{field}: empty", fields=[{"field": field, "problem": "empty"}]
        )
    bad = [p for p in parts if not re.match(pattern, p)]
    if bad:
        raise ApiError(
            422,
            "invalid_request",
            f"{field}: {bad[0]!r} is not a valid M3 code",
            fields=[{"field": field, "problem": f"{bad[0]!r} is too long or malformed"}],
        )
    if len(parts) > limit:
        raise _too_many(field, len(parts), limit)
    return parts


@router.get("/availability", response_model=AvailabilityAnswer, responses=_UNAVAILABLE)
async def availability(
    caller: StorefrontCaller,
    runtime: RuntimeDep,
    items: Annotated[str, Query(max_length=20_000, description="item numbers, comma-separated")],
    warehouses: Annotated[str, Query(max_length=2_000, description="warehouses, comma-separated")],
    on: Annotated[
        date | None,
        Query(
            alias="date",
            description="delivery date: ATP on that date (OIS100MI GetATP) instead of the balance now",
        ),
    ] = None,
    instance: INSTANCE = None,
) -> Response:
    """Available quantity per item and warehouse: the allocatable balance now (MMS200MI
    GetItmWhsBal), or what can be promised on a delivery date (OIS100MI GetATP); cached per item
    and warehouse (and date)."""
    limit = runtime.settings.storefront_max_items
    wanted = _split(items, "items", ITEM, limit)
    stores = _split(warehouses, "warehouses", WAREHOUSE, limit)
    if len(wanted) * len(stores) > limit:
        raise _too_many("items × warehouses", len(wanted) * len(stores), limit)
    storefront = storefront_of(runtime, instance)
    try:
        answers = await storefront.availability(wanted, stores, on=on)
        storefront.raise_if_unavailable(a for _, a in answers)
    except StorefrontUnavailable as exc:
        raise _unavailable(exc) from None
    out = []
    for key, answer in answers:
        balance: Balance | None = answer.value
        out.append(
            {
                "item": key.itno,
                "warehouse": key.whlo,
                **_values(balance, ("available", "on_hand", "allocated")),
                "available_date": (balance.available_date or None) if balance else None,
                "error": _item_error(answer),
                **_freshness(answer),
            }
        )
    return _json({"stale": any(a["stale"] for a in out), "date": on, "availability": out})


@router.get("/customers/{customer}/orders", response_model=OrdersAnswer, responses=_UNAVAILABLE)
async def orders(
    customer: CUSTOMER,
    caller: StorefrontCaller,
    runtime: RuntimeDep,
    status_from: Annotated[str | None, Query(pattern=r"^\d{2}$", description="lowest ORSL, e.g. 22")] = None,
    status_to: Annotated[str | None, Query(pattern=r"^\d{2}$", description="highest ORST, e.g. 77")] = None,
    instance: INSTANCE = None,
) -> OrdersAnswer:
    """The customer's orders with status, lines and delivery lines (OIS100MI LstHead, LstLine,
    LstDelLineByCO), read from M3 at each call (not cached)."""
    try:
        _cuno, found = await storefront_of(runtime, instance).orders(
            customer, status_from=status_from, status_to=status_to
        )
    except StorefrontUnavailable as exc:
        raise _unavailable(exc) from None
    except M3Error as exc:
        raise _m3_refused(exc) from None
    result = []
    for order in found:
        h = order.head
        lines = [
            OrderLineOut(
                line=line.get("PONR", ""),
                item=line.get("ITNO", ""),
                quantity=_decimal(line.get("ORQA") or line.get("ORQT")),
                net_price=_decimal(line.get("NEPR") or line.get("SAPR")),
                status=line.get("ORST", ""),
                deliveries=[
                    DeliveryOut(
                        delivery=d.get("DLIX", ""),
                        quantity=_decimal(d.get("TRQT")),
                        status=d.get("PGRS", ""),
                        fields={k: v for k, v in d.items() if v},
                    )
                    for d in order.deliveries.get(line.get("PONR", ""), [])
                ],
                fields={k: v for k, v in line.items() if v},
            )
            for line in order.lines
        ]
        result.append(
            OrderOut(
                order=h.get("ORNO", ""),
                customer_order=h.get("CUOR", ""),
                order_date=h.get("ORDT", ""),
                status_low=h.get("ORSL", ""),
                status_high=h.get("ORST", ""),
                lines=lines,
                fields={k: v for k, v in h.items() if v},
            )
        )
    return OrdersAnswer(customer=customer, orders=result)


@router.get("/customers/{customer}/invoices", response_model=InvoicesAnswer, responses=_UNAVAILABLE)
async def invoices(
    customer: CUSTOMER,
    caller: StorefrontCaller,
    runtime: RuntimeDep,
    year: Annotated[
        int | None, Query(ge=1900, le=9999, description="invoice year; default this year")
    ] = None,
    instance: INSTANCE = None,
) -> InvoicesAnswer:
    """The customer's invoices of a year (OIS350MI LstInvHeadByPay, paged by invoice number to
    the end), read from M3 at each call."""
    wanted = year or datetime.now(UTC).year
    try:
        _cuno, rows = await storefront_of(runtime, instance).invoices(customer, year=wanted)
    except StorefrontUnavailable as exc:
        raise _unavailable(exc) from None
    except M3Error as exc:
        raise _m3_refused(exc) from None
    return InvoicesAnswer(
        customer=customer,
        year=wanted,
        invoices=[
            InvoiceOut(
                invoice=r.get("IVNO", ""),
                year=wanted,
                invoice_date=r.get("IDAT", ""),
                due_date=r.get("DUDT", ""),
                amount=_decimal(r.get("AMT1")),
                open_amount=_decimal(r.get("RAFC")),
                currency=r.get("CUCD", ""),
                status=r.get("INST", ""),
                fields={k: v for k, v in r.items() if v},
            )
            for r in rows
        ],
    )
