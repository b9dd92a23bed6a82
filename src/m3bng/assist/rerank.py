"""Optional: a language model behind an OpenAI-compatible endpoint re-ranks the mapping
suggestions and explains its choice in a sentence.

Why only re-rank: the model sees the offline scorer's candidates and may reorder them and say
why; a path it names that is not a candidate is ignored, so it cannot invent a field or a path
the sample does not have, and the reasons of the offline scorer stay beside its sentence. Off
unless ``M3BNG_ASSIST_LLM_URL`` is set; the sample is masked with the logs' personal-data rules
(``ops/masking.py``) before it leaves the process; every request has a timeout, and any failure
(timeout, refusal, an answer that is not the JSON asked for) leaves the offline ranking as it
was, with a note saying why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from m3bng.assist.suggest import Candidate, Suggestions
from m3bng.ops.masking import mask

if TYPE_CHECKING:
    from m3bng.config import Settings

MAX_FIELDS = 40  # fields sent in one request: the ones with candidates, mandatory first
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")

_INSTRUCTIONS = (
    "You map eCommerce payloads to Infor M3 MI transaction fields. For each M3 field below, "
    "order its candidate source paths from most to least likely and explain the first choice "
    "in one short sentence. Use only the candidate paths given. Answer with JSON only: "
    '{"fields": {"<FIELD>": {"order": ["<path>", ...], "why": "<sentence>"}}}'
)


@dataclass(frozen=True)
class LlmEndpoint:
    """Where the model answers: ``url`` is the base (``http://host:port/v1``)."""

    url: str
    model: str
    api_key: str | None = None
    timeout: float = 20.0


def prompt(suggestions: Suggestions, data: Mapping[str, Any]) -> str:
    """The question: the transaction, each field with its candidates, and the masked sample."""
    fields = []
    for item in [s for s in suggestions.fields if s.candidates][:MAX_FIELDS]:
        spec = item.field
        fields.append(
            {
                "field": spec.name,
                "description": spec.description,
                "type": f"{spec.type}{spec.length or ''}",
                "mandatory": spec.mandatory,
                "candidates": [c.path for c in item.candidates],
            }
        )
    question = {
        "transaction": f"{suggestions.program}/{suggestions.transaction}",
        "fields": fields,
        "sample": mask(dict(data)),
    }
    return json.dumps(question, ensure_ascii=False, default=str)


def apply_answer(suggestions: Suggestions, answer: Mapping[str, Any]) -> int:
    """Reorder each field's candidates as the answer says and add its sentence to the first
    one's reasons; paths that are not candidates are ignored. Returns how many fields moved."""
    fields = answer.get("fields")
    if not isinstance(fields, Mapping):
        raise ValueError("the answer has no `fields` object")
    moved = 0
    for item in suggestions.fields:
        said = fields.get(item.field.name)
        if not isinstance(said, Mapping) or not isinstance(said.get("order"), list):
            continue
        by_path = {c.path: c for c in item.candidates}
        order = [p for p in dict.fromkeys(said["order"]) if isinstance(p, str) and p in by_path]
        if not order:
            continue
        ranked: list[Candidate] = [by_path[p] for p in order] + [
            c for c in item.candidates if c.path not in order
        ]
        if [c.path for c in ranked] != [c.path for c in item.candidates]:
            moved += 1
        why = said.get("why")
        if isinstance(why, str) and why.strip():
            ranked[0].reasons.append(f"model: {why.strip()[:300]}")
        item.candidates = ranked
    return moved


async def rerank(
    suggestions: Suggestions,
    data: Mapping[str, Any],
    endpoint: LlmEndpoint,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str:
    """Ask the model and apply its answer to ``suggestions`` in place; the note says what
    happened (``re-ranked by MODEL: N fields moved``, or why the offline ranking stands)."""
    if not any(s.candidates for s in suggestions.fields):
        return "nothing to re-rank"
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    body = {
        "model": endpoint.model,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": _INSTRUCTIONS},
            {"role": "user", "content": prompt(suggestions, data)},
        ],
    }
    url = endpoint.url.rstrip("/") + "/chat/completions"
    try:
        async with httpx.AsyncClient(timeout=endpoint.timeout, transport=transport) as client:
            response = await client.post(url, json=body, headers=headers)
        response.raise_for_status()
        content = response.json()["choices"][0]["message"]["content"]
        moved = apply_answer(suggestions, json.loads(_FENCE.sub("", str(content).strip())))
    except httpx.TimeoutException:
        return f"the model did not answer within {endpoint.timeout:g} s: offline ranking"
    except httpx.HTTPError as exc:
        return f"the model could not be asked ({type(exc).__name__}): offline ranking"
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"the model's answer was not the JSON asked for ({str(exc)[:120]}): offline ranking"
    return f"re-ranked by {endpoint.model}: {moved} fields moved"


def endpoint_of(settings: Settings) -> LlmEndpoint | None:
    """The configured endpoint, or None (off: the default)."""
    if not settings.assist_llm_url:
        return None
    key = settings.assist_llm_api_key.get_secret_value() if settings.assist_llm_api_key else None
    return LlmEndpoint(settings.assist_llm_url, settings.assist_llm_model, key, settings.assist_llm_timeout)
