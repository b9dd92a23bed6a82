"""OpenTelemetry traces on the real app: one trace per event (ingest → process → mapping and one
span per MI call), tied together by the correlation id alone; nothing at all while tracing is off,
not even an import of OpenTelemetry."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select

from m3bng.config import Settings
from m3bng.observability import tracing
from m3bng.store.models import Step
from tests.conftest import LiveServer
from tests.integration.m3.conftest import SimHandle
from tests.integration.ops.conftest import Ops, ops_settings
from tests.support.ops import ADMIN, bearer

SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # tracing is store-agnostic


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    tracing.install_test_exporter(memory)
    try:
        yield memory
    finally:
        tracing.install_test_exporter(None)
        tracing.configure_tracing(Settings(otel_enabled=False))


async def serve(
    live_server: Callable[..., LiveServer], settings: Settings, m3_sim: SimHandle, sessions: Any
) -> AsyncIterator[Ops]:
    async with live_server(settings, run_workers=True) as server:
        plain, admin = server.client(), server.client()
        admin.headers.update(bearer(ADMIN))
        try:
            yield Ops(server, plain, admin, admin, admin, sim=m3_sim, sessions=sessions)
        finally:
            await plain.aclose()
            await admin.aclose()


async def wait_for_span(exporter: InMemorySpanExporter, name: str, trace_id: int) -> list[ReadableSpan]:
    """The process span ends just after the outcome is committed: wait for it to be exported."""
    deadline = time.monotonic() + 10
    while True:
        spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
        if any(s.name == name for s in spans):
            return spans
        assert time.monotonic() < deadline, f"no {name!r} span in {[s.name for s in spans]}"
        await asyncio.sleep(0.05)


@SQLITE_ONLY
async def test_one_trace_per_event_from_ingest_to_each_mi_call(
    exporter: InMemorySpanExporter,
    m3_sim: SimHandle,
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: Any,
) -> None:
    settings = ops_settings(make_settings, m3_sim, otel_enabled=True, otel_service_name="m3bng-test")
    async for ops in serve(live_server, settings, m3_sim, sessions):
        event = await ops.settle(await ops.send("order.created"))
        assert event.status == "done", event.last_error
        trace_id = tracing.trace_id_for(event.correlation_id)
        spans = await wait_for_span(exporter, "process", trace_id)
        async with ops.sessions() as session:
            steps = (await session.execute(select(Step).where(Step.event_id == event.id))).scalars().all()

    assert trace_id == int(event.correlation_id, 16)  # a uuid4 hex is the trace id itself
    assert {s.context.trace_id for s in exporter.get_finished_spans()} == {trace_id}  # one event, one trace
    by_name: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    [ingest] = by_name["ingest"]
    [process] = by_name["process"]
    assert ingest.parent is None  # the trace's root
    assert process.parent is not None and process.parent.span_id == ingest.context.span_id
    assert ingest.attributes is not None and ingest.attributes["m3bng.event_type"] == "order.created"
    assert process.attributes is not None and process.attributes["m3bng.attempt"] == 1
    assert ingest.resource.attributes["service.name"] == "m3bng-test"

    calls = [s for s in spans if s.name.startswith("m3 ")]
    assert sorted(s.name for s in calls) == sorted(f"m3 {step.operation}" for step in steps)
    assert any(s.name == "m3 OIS100MI/Confirm" for s in calls)
    assert all(s.parent is not None and s.parent.span_id == process.context.span_id for s in calls)
    mapping = by_name["mapping"]
    assert {s.attributes["m3bng.call"] for s in mapping if s.attributes} >= {"head", "line", "confirm"}
    assert all(s.parent is not None and s.parent.span_id == process.context.span_id for s in mapping)


@SQLITE_ONLY
async def test_tracing_off_records_nothing(
    exporter: InMemorySpanExporter,
    m3_sim: SimHandle,
    make_settings: Callable[..., Settings],
    live_server: Callable[..., LiveServer],
    sessions: Any,
) -> None:
    settings = ops_settings(make_settings, m3_sim)  # otel_enabled defaults to False
    async for ops in serve(live_server, settings, m3_sim, sessions):
        event = await ops.settle(await ops.send("order.created"))
        assert event.status == "done", event.last_error
    assert not tracing.enabled()
    assert exporter.get_finished_spans() == ()


def test_tracing_off_never_imports_opentelemetry(tmp_path: Path) -> None:
    """In a fresh interpreter (this one has imported OpenTelemetry for the tests above): build
    the app, ingest and run spans with tracing off, and look at what got imported.

    FastAPI itself depends on and imports the OpenTelemetry *API* (its own opt-in telemetry),
    so the check is that m3bng never pulls in the SDK or an exporter: that is what tracing
    switched off must not cost."""
    script = f"""
import asyncio, sys
from m3bng.app import create_app
from m3bng.config import Settings
from m3bng.inbox.ingest import ingest_event
from m3bng.observability import tracing
from m3bng.store import migrate

settings = Settings(database_url="sqlite+aiosqlite:///{tmp_path / "store.db"}", run_workers=False)
app = create_app(settings)
runtime = app.state.runtime

async def main():
    await migrate.upgrade(runtime.engine)
    await ingest_event(runtime.sessions, source="bng", external_id="x", event_type="order.created",
                       payload={{}}, business_key=None)
    with tracing.span("process", correlation_id="abc", attempt=1):
        pass
    await runtime.engine.dispose()

asyncio.run(main())
print(sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))))
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
