"""Trace ids derived from correlation ids, and the production export path (batching processor
and OTLP/HTTP exporter) delivering to a collector on the loopback."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from m3bng.config import Settings
from m3bng.observability import tracing
from tests.conftest import AsgiServer


@pytest.fixture
def tracing_off_after() -> Iterator[None]:
    yield
    tracing.install_test_exporter(None)
    tracing.configure_tracing(Settings(otel_enabled=False))


def test_a_uuid_correlation_id_is_the_trace_id() -> None:
    cid = uuid.uuid4()
    assert tracing.trace_id_for(cid.hex) == cid.int
    assert tracing.trace_id_for(str(cid)) == cid.int  # with dashes too


def test_other_correlation_ids_hash_to_128_bits_the_same_everywhere() -> None:
    ids = {tracing.trace_id_for(cid) for cid in ("abc", "req-42", "", "00000000000000000000000000000000")}
    assert len(ids) == 4
    assert all(0 < value < 2**128 for value in ids)
    assert tracing.trace_id_for("req-42") == tracing.trace_id_for("req-42")
    root = tracing.root_span_id_for("req-42")
    assert 0 < root < 2**64 and root == tracing.root_span_id_for("req-42")
    assert root != tracing.root_span_id_for("req-43")


def test_spans_are_no_ops_while_tracing_is_off(tracing_off_after: None) -> None:
    tracing.configure_tracing(Settings(otel_enabled=False))
    assert not tracing.enabled()
    with tracing.span("process", correlation_id="abc", attempt=1):
        pass
    assert tracing.force_flush()


async def test_spans_reach_an_otlp_collector(tracing_off_after: None) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="the otel extra is not installed")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[ExportTraceServiceRequest] = []

    async def collect(request: Request) -> Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.body())
        received.append(message)
        return Response(b"", media_type="application/x-protobuf")

    collector = Starlette(routes=[Route("/v1/traces", collect, methods=["POST"])])
    async with AsgiServer(collector) as server:
        settings = Settings(
            otel_enabled=True, otel_endpoint=f"{server.base_url}/v1/traces", otel_service_name="m3bng-unit"
        )
        tracing.configure_tracing(settings)
        cid = uuid.uuid4().hex
        with tracing.span("ingest", correlation_id=cid, source="bng", event_type="order.created"):
            pass
        with (
            tracing.span("process", correlation_id=cid, attempt=1),
            tracing.span("m3 OIS100MI/Confirm", correlation_id=cid, target="m3"),
        ):
            pass
        # the exporter posts from its own thread, to this loop's server: let the loop serve it
        assert await asyncio.to_thread(tracing.force_flush, 5.0)

    spans = [
        span
        for message in received
        for resource_spans in message.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    assert sorted(span.name for span in spans) == ["ingest", "m3 OIS100MI/Confirm", "process"]
    assert {span.trace_id for span in spans} == {bytes.fromhex(cid)}
    service = {
        attribute.value.string_value
        for message in received
        for resource_spans in message.resource_spans
        for attribute in resource_spans.resource.attributes
        if attribute.key == "service.name"
    }
    assert service == {"m3bng-unit"}
