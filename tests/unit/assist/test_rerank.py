"""The optional model re-ranking, against a fake OpenAI-compatible server on 127.0.0.1: it may
reorder candidates and explain, never invent a path; the sample it gets is masked; a slow,
failing or confused model leaves the offline ranking."""

from __future__ import annotations

import json

from m3bng.assist.rerank import LlmEndpoint, endpoint_of, rerank
from m3bng.assist.suggest import Suggestions, suggest
from m3bng.config import Settings
from m3bng.connectors.bng.samples import sample
from m3bng.connectors.m3.metadata import FieldSpec
from tests.unit.assist.fake_model import fake_model

CUSTOMER = sample("customer.created")
SPECS = {
    "CUNM": FieldSpec("CUNM", 36, "A", True, "Customer name"),
    "MAIL": FieldSpec("MAIL", 50, "A", False, "E-mail address"),
}


def offline() -> Suggestions:
    return suggest("CRS610MI", "Add", SPECS, CUSTOMER)


def order(found: Suggestions, name: str) -> list[str]:
    return [c.path for s in found.fields if s.field.name == name for c in s.candidates]


async def test_the_model_reorders_and_explains_and_sees_only_a_masked_sample() -> None:
    found = offline()
    assert order(found, "CUNM")[:2] == ["CompanyName", "FirstName"]
    with fake_model() as model:
        model.answer = {
            "fields": {
                "CUNM": {"order": ["Invented.Path", "FirstName", "CompanyName"], "why": "a person's name"},
                "MAIL": {"order": ["Email"]},
            }
        }
        note = await rerank(found, CUSTOMER, LlmEndpoint(model.url, "m1", api_key="k-1", timeout=5))
    assert note == "re-ranked by m1: 1 fields moved"
    assert order(found, "CUNM")[:2] == ["FirstName", "CompanyName"]  # the invented path is ignored
    first = found.fields[0].candidates[0]
    assert first.reasons[-1] == "model: a person's name"
    [request] = model.requests
    assert request["model"] == "m1" and request["temperature"] == 0
    assert model.headers[0]["Authorization"] == "Bearer k-1"
    question = json.loads(request["messages"][1]["content"])
    assert question["transaction"] == "CRS610MI/Add"
    assert {f["field"] for f in question["fields"]} == {"CUNM", "MAIL"}
    sent = request["messages"][1]["content"]
    for personal in (CUSTOMER["Email"], CUSTOMER["Phone"], CUSTOMER["BillingAddress"]["Line1"]):
        assert personal not in sent
    assert question["sample"]["CompanyName"] == "Velo Sport AB"  # names stay, as in the logs


async def test_a_slow_model_times_out_and_the_offline_ranking_stands() -> None:
    found = offline()
    before = order(found, "CUNM")
    with fake_model() as model:
        model.delay = 1.0
        model.answer = {"fields": {"CUNM": {"order": ["FirstName"]}}}
        note = await rerank(found, CUSTOMER, LlmEndpoint(model.url, "m1", timeout=0.2))
    assert note == "the model did not answer within 0.2 s: offline ranking"
    assert order(found, "CUNM") == before


async def test_a_refusal_or_an_answer_that_is_not_json_changes_nothing() -> None:
    with fake_model() as model:
        model.status = 500
        found = offline()
        note = await rerank(found, CUSTOMER, LlmEndpoint(model.url, "m1", timeout=5))
        assert note == "the model could not be asked (HTTPStatusError): offline ranking"
        model.status, model.answer = 200, "Sure! CompanyName is the best."
        note = await rerank(found, CUSTOMER, LlmEndpoint(model.url, "m1", timeout=5))
        assert note.startswith("the model's answer was not the JSON asked for")
    assert order(found, "CUNM") == order(offline(), "CUNM")


def test_off_by_default() -> None:
    assert endpoint_of(Settings(_env_file=None)) is None
    on = endpoint_of(Settings(_env_file=None, assist_llm_url="http://127.0.0.1:9/v1", assist_llm_timeout=3))
    assert on is not None and on.timeout == 3 and on.api_key is None
