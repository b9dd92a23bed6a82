"""Held price answers (storefront/answers.py): the same bytes as the answer built line by line,
and served only while every cache entry they rest on is still the fresh one."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from decimal import Decimal

import orjson

from m3bng.api.storefront import PRICE_FIELDS, PriceRequest, _item_error, _plain, _price_pieces
from m3bng.config import Settings
from m3bng.connectors.m3.errors import M3NotFound
from m3bng.storefront.answers import AnswerCache, HeldAnswer, encode_age, picker, template_of
from m3bng.storefront.service import Answer, Discount, Price, PriceKey, Storefront

DAY = datetime.now(UTC).strftime("%Y%m%d")
RAW = b'{"customer": "BNG-NORDIC", "items": [{"item": "BIKE-100"}, {"item": "HELMET-1"}]}'


def price(net: str, text: str = "Dealer") -> Price:
    discount = Discount(1, Decimal(10), Decimal("499"), Decimal("499"), text)
    return Price(
        Decimal("4990"), Decimal(net), Decimal(net), "SEK", "B2B-SE", "D1", "PCS", "", "", "", (discount,)
    )


def as_the_dict_encodes(body: PriceRequest, answers: list[tuple[PriceKey, Answer]]) -> bytes:
    """The answer as api/storefront.py encoded it before answers were held: one orjson dict."""
    lines = []
    for (key, answer), line in zip(answers, body.items, strict=True):
        value: Price | None = answer.value
        lines.append(
            {
                "item": key.itno,
                "quantity": line.quantity,
                **{name: getattr(value, name) if value else None for name in PRICE_FIELDS},
                "discounts": value.discounts if value else [],
                "error": _item_error(answer),
                "age_seconds": round(answer.age, 3),
                "as_of": datetime.fromtimestamp(answer.as_of, UTC) if answer.as_of else None,
                "stale": answer.stale,
            }
        )
    content = {"customer": body.customer, "stale": any(a.stale for _, a in answers), "prices": lines}
    return orjson.dumps(content, default=_plain)


def test_the_pieces_with_their_ages_are_the_dict_encoding_byte_for_byte() -> None:
    body = PriceRequest.model_validate_json(
        b'{"customer": "C-1 \\"x\\"", "items": [{"item": "A%d", "quantity": "2.50"}, {"item": "B"},'
        b' {"item": "NONE"}, {"item": "C", "quantity": 1e2}]}'
    )
    now = time.time()
    answers = [
        (PriceKey("1", "A%d", "2.5", "", DAY), Answer(price("4491", "5 % off"), 12.3456, now, False, None)),
        (PriceKey("1", "B", "1", "", DAY), Answer(price("10.000100"), 0.0004, now - 1.5, True, None)),
        (PriceKey("1", "NONE", "1", "", DAY), Answer(None, 0.0, 0.0, False, M3NotFound("no such item"))),
        (PriceKey("1", "C", "100", "", DAY), Answer(price("1E+2"), 299.9996, now, False, None)),
    ]
    template = template_of(_price_pieces(body, answers))
    ages = tuple(encode_age(a.age) for _, a in answers)
    assert template % ages == as_the_dict_encodes(body, answers)


def test_a_held_answer_places_each_fetchs_age_on_its_lines() -> None:
    fetched, pick = picker([5.0, 7.0, 5.0])
    assert fetched == (5.0, 7.0)
    held = HeldAnswer("C", "1", None, (), (), b"[%s,%s,%s,100%%]", fetched, pick)
    assert held.body(9.5) == b"[4.5,2.5,4.5,100%]"
    _, one = picker([5.0])
    assert dataclasses.replace(held, template=b"[%s]", fetched=(5.0,), pick=one).body(6.0) == b"[1.0]"


def test_the_answer_cache_keeps_the_most_recently_used_within_its_bytes_and_zero_keeps_none() -> None:
    held = HeldAnswer("C", "1", None, (), (), b"x" * 743, (), tuple)  # 1,000 bytes with its key
    answers = AnswerCache(2_500)
    answers.put(b"a", held)
    answers.put(b"b", held)
    assert answers.get(b"a") is held and answers.size == 2_000
    answers.put(b"c", held)
    assert answers.get(b"b") is None and answers.get(b"a") is held and len(answers) == 2
    answers.put(b"a", held)  # again: counted once
    answers.drop(b"c")
    assert answers.size == 1_000 and len(answers) == 1
    answers.put(b"big", dataclasses.replace(held, template=b"x" * 3_000))  # more than it all
    assert answers.get(b"big") is None and answers.size == 1_000
    off = AnswerCache(0)
    off.put(b"a", held)
    assert off.get(b"a") is None and off.size == 0


async def warm(storefront: Storefront, values: dict[str, Price]) -> list[tuple[PriceKey, Answer]]:
    for itno, value in values.items():
        storefront.prices.put(PriceKey("10001", itno, "1", "", DAY), value)
    _cuno, answers = await storefront.price_list("BNG-NORDIC", [(i, Decimal(1)) for i in values])
    return answers


async def test_a_held_answer_goes_when_any_entry_is_invalidated_replaced_or_past_its_ttl() -> None:
    settings = Settings(database_url="sqlite+aiosqlite:///:memory:", storefront_price_ttl_seconds=60)
    storefront = Storefront(settings, None, None)  # type: ignore[arg-type]
    storefront._customers["BNG-NORDIC"] = ("10001", time.monotonic())  # linked: no store read
    values = {"BIKE-100": price("4491"), "HELMET-1": price("899")}

    def hold(answers: list[tuple[PriceKey, Answer]]) -> bool:
        return storefront.hold_prices(RAW, "BNG-NORDIC", "10001", answers, b"%s%s", dated=False)

    assert hold(await warm(storefront, values)) and storefront.held_prices(RAW) is not None
    storefront.invalidate(prices=["HELMET-1"])  # a BOD
    assert storefront.held_prices(RAW) is None and len(storefront.answers) == 0

    answers = await warm(storefront, values)
    assert hold(answers)
    storefront.prices.put(answers[0][0], price("4500"))  # a newer value of one line
    assert storefront.held_prices(RAW) is None

    assert hold(await warm(storefront, values))
    clock = storefront.prices._clock
    storefront.prices._clock = lambda: clock() + 60  # the TTL has passed
    assert storefront.held_prices(RAW) is None
    storefront.prices._clock = clock

    assert hold(await warm(storefront, values))
    held = storefront.answers.get(RAW)
    assert held is not None and held.day is not None
    storefront.answers.put(RAW, dataclasses.replace(held, day=held.day - 1))  # held yesterday
    assert storefront.held_prices(RAW) is None

    assert hold(await warm(storefront, values))
    storefront._customers["BNG-NORDIC"] = ("10002", time.monotonic())  # linked to another CUNO
    assert storefront.held_prices(RAW) is None


async def test_answers_with_an_error_or_a_stale_line_are_not_held() -> None:
    settings = Settings(database_url="sqlite+aiosqlite:///:memory:")
    storefront = Storefront(settings, None, None)  # type: ignore[arg-type]
    storefront._customers["BNG-NORDIC"] = ("10001", time.monotonic())
    answers = await warm(storefront, {"BIKE-100": price("4491")})
    key, fresh = answers[0]
    stale = dataclasses.replace(fresh, stale=True)
    failed = Answer(None, 0.0, 0.0, False, M3NotFound("no such item"))
    for answer in (stale, failed):
        assert not storefront.hold_prices(RAW, "BNG-NORDIC", "10001", [(key, answer)], b"%s", dated=True)
    assert storefront.held_prices(RAW) is None
