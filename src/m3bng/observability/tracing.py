"""OpenTelemetry traces, off by default (``M3BNG_OTEL_ENABLED``): one trace per event.

Every span of an event (ingest, processing, each outbound call) lands in one trace whose id is
derived from the event's correlation id, so the ingest in the API process and the processing in
a worker process, minutes apart, still form one trace without passing context through the store.

When tracing is off, ``span`` is a no-op context manager and OpenTelemetry is never imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from m3bng.config import Settings

_tracer: Any = None


def configure_tracing(settings: Settings) -> None:
    """Filled in by the tracing work: sets ``_tracer`` when enabled."""
    global _tracer
    if not settings.otel_enabled:
        _tracer = None


@contextmanager
def span(name: str, *, correlation_id: str, **attributes: Any) -> Iterator[None]:
    if _tracer is None:
        yield
        return
    yield
