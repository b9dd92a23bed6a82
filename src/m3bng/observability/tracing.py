"""OpenTelemetry traces, off by default (``M3BNG_OTEL_ENABLED``): one trace per event.

Every span of an event (ingest, each processing attempt, mapping, each outbound call) lands in
one trace whose id is derived from the event's correlation id, so the ingest in the API process
and the processing in a worker process, minutes apart, still form one trace without passing a
context through the store:

* the trace id is the correlation id itself when it is a UUID (a uuid4 hex is 128 bits), or the
  first 128 bits of its SHA-256 otherwise;
* the ``ingest`` span is the trace's root, and its span id is derived from the correlation id
  too; a span started with no span of its event around it (``process`` in a worker) takes that
  derived root as its remote parent. The tree is ingest → process (one per attempt) → mapping /
  each outbound call, whichever process ran which part. A replay adds its attempts to the same
  trace, which is the event's whole history.

When tracing is off, ``span`` is a no-op context manager and OpenTelemetry is never imported
(it is an optional dependency: the ``otel`` extra). The provider is this module's own, not the
OpenTelemetry global one, so configuring again (a test, a second app in one process) replaces
it cleanly instead of being refused.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from m3bng.config import Settings
from m3bng.errors import M3bngError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

ROOT_SPAN = "ingest"
EXPORT_TIMEOUT_SECONDS = 10.0

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
_test_exporter: SpanExporter | None = None
# The ids the next span must take: set only while the root span of an event is being started.
_root_ids: ContextVar[tuple[int, int] | None] = ContextVar("m3bng_trace_root_ids", default=None)


class TracingUnavailable(M3bngError):
    """Tracing is switched on but the OpenTelemetry packages are not installed."""


def trace_id_for(correlation_id: str) -> int:
    """The 128-bit trace id of an event: its UUID correlation id as is, anything else hashed."""
    try:
        value = uuid.UUID(correlation_id).int
    except ValueError:
        value = 0
    if value == 0:  # not a UUID (or the nil one, which is not a valid trace id)
        value = int.from_bytes(hashlib.sha256(correlation_id.encode()).digest()[:16], "big") or 1
    return value


def root_span_id_for(correlation_id: str) -> int:
    """The 64-bit span id of an event's ingest span, so later spans can name it as parent."""
    digest = hashlib.sha256(b"m3bng-root:" + correlation_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


class _EventIds:
    """The SDK's id generator, except while an event's root span starts: then its derived ids.

    Duck-typed to ``opentelemetry.sdk.trace.id_generator.IdGenerator`` so that importing this
    module never imports OpenTelemetry.
    """

    def generate_trace_id(self) -> int:
        ids = _root_ids.get()
        return ids[0] if ids else random.getrandbits(128) or 1

    def generate_span_id(self) -> int:
        ids = _root_ids.get()
        return ids[1] if ids else random.getrandbits(64) or 1

    def is_trace_id_random(self) -> bool:
        return False  # derived from the correlation id: do not claim W3C randomness


def install_test_exporter(exporter: SpanExporter | None) -> None:
    """Tests: export spans synchronously to ``exporter`` (an ``InMemorySpanExporter``) instead
    of batching them to OTLP, from the next ``configure_tracing`` on. ``None`` undoes it."""
    global _test_exporter
    _test_exporter = exporter


def configure_tracing(settings: Settings) -> None:
    """Build the tracer when ``otel_enabled``; otherwise make ``span`` a no-op again.

    Called once per process at start (Runtime.build). Spans go through a batching processor to
    the OTLP/HTTP endpoint, each export bounded by a timeout, so a slow or absent collector
    costs a dropped batch, never a stalled event.
    """
    global _tracer, _provider
    previous, _provider, _tracer = _provider, None, None
    if previous is not None:
        previous.shutdown()
    if not settings.otel_enabled:
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise TracingUnavailable(
            "M3BNG_OTEL_ENABLED is set but opentelemetry-sdk is not installed: pip install 'm3bng[otel]'"
        ) from exc
    processor: SpanProcessor
    if _test_exporter is not None:
        processor = SimpleSpanProcessor(_test_exporter)
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise TracingUnavailable(
                "M3BNG_OTEL_ENABLED is set but the OTLP exporter is not installed: pip install 'm3bng[otel]'"
            ) from exc
        # endpoint None: the exporter's own default (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
        # http://localhost:4318/v1/traces).
        exporter = OTLPSpanExporter(endpoint=settings.otel_endpoint, timeout=EXPORT_TIMEOUT_SECONDS)
        processor = BatchSpanProcessor(exporter, export_timeout_millis=EXPORT_TIMEOUT_SECONDS * 1000)
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name}),
        id_generator=_EventIds(),  # type: ignore[arg-type]  # duck-typed IdGenerator, see above
    )
    provider.add_span_processor(processor)
    _provider = provider
    _tracer = provider.get_tracer("m3bng")


def enabled() -> bool:
    return _tracer is not None


def force_flush(timeout_seconds: float = EXPORT_TIMEOUT_SECONDS) -> bool:
    """Export what is batched now (before a process exits, or in a test); True when done."""
    return _provider.force_flush(int(timeout_seconds * 1000)) if _provider is not None else True


def span(name: str, *, correlation_id: str, **attributes: Any) -> AbstractContextManager[None]:
    """A span of the event ``correlation_id``; a no-op while tracing is off (one shared
    ``nullcontext``: every webhook passes here, and a generator per call was a per cent of one).

    Attribute values that are not str/bool/int/float are shown as text; ``None`` is left out.
    An exception leaving the block is recorded on the span and re-raised.
    """
    if _tracer is None:
        return _NO_SPAN
    return _span(_tracer, name, correlation_id, attributes)


_NO_SPAN: AbstractContextManager[None] = nullcontext()


@contextmanager
def _span(tracer: Tracer, name: str, correlation_id: str, attributes: dict[str, Any]) -> Iterator[None]:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    trace_id = trace_id_for(correlation_id)
    attrs = {"m3bng.correlation_id": correlation_id, **_attributes(attributes)}
    current = trace.get_current_span().get_span_context()
    if current.is_valid and current.trace_id == trace_id:
        with tracer.start_as_current_span(name, attributes=attrs):
            yield
        return
    root_span_id = root_span_id_for(correlation_id)
    if name == ROOT_SPAN:
        # No parent at all (not even an unrelated request's span): the event's trace starts here.
        token = _root_ids.set((trace_id, root_span_id))
        try:
            root = tracer.start_span(
                name, context=trace.set_span_in_context(trace.INVALID_SPAN), attributes=attrs
            )
        finally:
            _root_ids.reset(token)
        with trace.use_span(root, end_on_exit=True):
            yield
        return
    parent = NonRecordingSpan(
        SpanContext(trace_id, root_span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    )
    with tracer.start_as_current_span(name, context=trace.set_span_in_context(parent), attributes=attrs):
        yield


def _attributes(values: dict[str, Any]) -> dict[str, str | bool | int | float]:
    out: dict[str, str | bool | int | float] = {}
    for key, value in values.items():
        if value is None:
            continue
        out[f"m3bng.{key}"] = value if isinstance(value, str | bool | int | float) else str(value)
    return out
