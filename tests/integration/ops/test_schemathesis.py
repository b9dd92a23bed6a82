"""Property-based fuzzing of the ops API from its own OpenAPI schema (schemathesis).

Two claims, over every operation under /api/v1 (plus /health and /metrics): whatever a client
sends, the server never answers 5xx; and without a token, /api/v1 answers nothing but 401 (no
data, no validation detail, no 404 telling which ids exist). The server is the real app behind
uvicorn with workers and a few stored events, so lists and details have rows to return.

Afterwards the service must still work: whatever odd filters, rates or pauses the fuzzer stored
must not stall the workers or the bulk-replay runner.

Hypothesis runs in a worker thread because the server runs in the test's event loop. Failures
are collected with a curl command each rather than raised, so one bad endpoint does not hide
the others and nothing is spent on shrinking.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Err

from tests.integration.ops.conftest import Ops
from tests.support.ops import ADMIN

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

ADMIN_EXAMPLES = 15  # per operation and generation mode (valid and invalid input)
ANONYMOUS_EXAMPLES = 8  # per operation, valid input only: auth is checked before anything else


def fuzz(
    schema: schemathesis.BaseSchema,
    base_url: str,
    *,
    token: str | None,
    modes: list[GenerationMode],
    max_examples: int,
) -> list[str]:
    """Run every operation of ``schema``; return one line per unexpected answer."""
    problems: list[str] = []
    session = requests.Session()
    auth = {"Authorization": f"Bearer {token}"} if token else {}

    def check(case: schemathesis.Case[Any]) -> None:
        case.headers.pop("Authorization", None)  # case-insensitive: whatever the generator sent
        case.headers.update(auth)
        response = case.call(base_url=base_url, session=session, timeout=30)
        status = response.status_code
        anonymous_api = token is None and case.operation.path.startswith("/api/v1")
        if status >= 500 or (anonymous_api and status != 401):
            problems.append(f"{status} {case.as_curl_command(base_url=base_url)}\n    {response.text[:300]}")

    for result in schema.get_all_operations():
        if isinstance(result, Err):
            problems.append(f"schema error: {result.err()}")
            continue
        operation = result.ok()
        for mode in modes:
            strategy = operation.as_strategy(generation_mode=mode)

            @settings(
                max_examples=max_examples,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: schemathesis.Case[Any]) -> None:
                check(case)

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label  # nothing to get wrong
    session.close()
    return problems


async def seed(ops: Ops) -> None:
    """Something to list: done orders and customers, one dead letter, a replay, a bulk replay."""
    await ops.add_customer("C-FUZZ-1")
    dead = await ops.dead_order("SO-FUZZ-1", customer="C-NOPE")
    await ops.dead_order("SO-FUZZ-2", customer="C-NOPE")
    response = await ops.replay.post(f"/api/v1/transactions/{dead}/replay", json={"mode": "from_failed_step"})
    assert response.status_code == 202, response.text
    await ops.settle(dead)


async def test_no_server_errors_and_anonymous_gets_only_401(ops: Ops) -> None:
    await seed(ops)
    raw: dict[str, Any] = (await ops.client.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(raw)
    api = schema.include(path_regex=r"^/api/v1/")
    everything = schema.include(path_regex=r"^(/api/v1/|/health/|/metrics$)")
    base_url = ops.server.base_url

    assert any(True for _ in api.get_all_operations()), "no /api/v1 operations in the schema"
    problems = await asyncio.to_thread(
        fuzz,
        everything,
        base_url,
        token=ADMIN,
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=ADMIN_EXAMPLES,
    )
    problems += await asyncio.to_thread(
        fuzz, api, base_url, token=None, modes=[GenerationMode.POSITIVE], max_examples=ANONYMOUS_EXAMPLES
    )
    assert not problems, "\n".join(problems)
    await still_works(ops)


async def still_works(ops: Ops) -> None:
    """Whatever the fuzzer stored (odd filters, rates, pauses) must not break the service: a new
    event is processed, and a new bulk replay runs to the end."""
    dead = await ops.dead_order("SO-FUZZ-3", customer="C-NOPE")
    started = await ops.replay.post(
        "/api/v1/replays/bulk", json={"filter": {"q": "SO-FUZZ-3"}, "rate": 100, "reason": "after fuzzing"}
    )
    assert started.status_code == 202, started.text
    bulk_id = started.json()["id"]
    deadline = time.monotonic() + 20
    while (status := (await ops.read.get(f"/api/v1/replays/bulk/{bulk_id}")).json())["status"] == "running":
        assert time.monotonic() < deadline, f"bulk replay {bulk_id} made no progress after fuzzing: {status}"
        await asyncio.sleep(0.1)
    assert status["status"] == "done", status
    assert status["replayed"] == 1, status
    assert (
        await ops.settle(dead)
    ).status == "dead"  # replayed, and dead again: the customer is still missing
