"""``GET /metrics`` for Prometheus (the default registry of prometheus-client).

Counters and histograms live in the process that counts them. The backlog, dead-letter and
paused gauges are read from the store on each scrape, so any API process reports the same, true
numbers; that read is bounded by ``STORE_TIMEOUT_SECONDS``: a slow or unreachable database costs
those gauges (and sets ``m3bng_store_up 0``), never the scrape, and never hangs Prometheus.
"""

from __future__ import annotations

import asyncio
import time

import structlog
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from m3bng.api.deps import RuntimeDep
from m3bng.api.ops.instances import instance_ids
from m3bng.observability import metrics
from m3bng.observability.metrics import StoreGauges
from m3bng.ops import backlog
from m3bng.runtime import Runtime

router = APIRouter(tags=["health"])
log = structlog.get_logger(__name__)

# Well under Prometheus' default scrape_timeout (10 s).
STORE_TIMEOUT_SECONDS = 2.0


@router.get("/metrics", response_class=Response)
async def metrics_endpoint(runtime: RuntimeDep) -> Response:
    started = time.perf_counter()
    gauges = await read_store_gauges(runtime)
    # From here to generate_latest nothing awaits: a concurrent scrape never sees half a rewrite.
    metrics.set_store_gauges(gauges, time.perf_counter() - started, runtime.engine.dialect.name)
    metrics.refresh_circuits(
        {
            target: breaker.state.value
            for target, breaker in backlog.target_breakers(runtime.connectors).items()
        }
    )
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


async def read_store_gauges(runtime: Runtime) -> StoreGauges | None:
    try:
        async with asyncio.timeout(STORE_TIMEOUT_SECONDS):
            async with runtime.sessions() as session:
                return await backlog.store_gauges(session, runtime.registry, instances=instance_ids(runtime))
    except Exception as exc:  # TimeoutError, a database that is down: serve the rest
        log.warning("metrics.store_unavailable", error=repr(exc)[:300])
        return None
