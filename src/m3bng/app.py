"""create_app(settings): the one place where routes, store and workers are wired together."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from m3bng import __version__
from m3bng.api import docs, health, ion, metrics, ops, storefront, webhooks
from m3bng.api.errors import install_error_handlers
from m3bng.config import Settings
from m3bng.flows.runtime import FlowRegistry
from m3bng.runtime import Runtime
from m3bng.ui import routes as ui


class M3bngApp(FastAPI):
    """FastAPI, with the webhook path served first as a plain ASGI call (api/webhooks.fast_path):
    BNG's events are the hot path, and FastAPI's routing, dependency injection and middleware
    stack cost more per request than storing the event."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            if scope["path"] == storefront.FAST_PATH:  # the storefront's hot read, likewise
                scope["app"] = self
                await storefront.fast_prices(self.state.runtime, scope, receive, send)
                return
            instance = webhooks.fast_path_instance(scope["path"])
            if instance is not None:
                scope["app"] = self
                await webhooks.fast_path(self.state.runtime, scope, receive, send, instance)
                return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings, *, registry: FlowRegistry | None = None, run_workers: bool | None = None
) -> FastAPI:
    """Build the ASGI app. Nothing touches the database until the lifespan starts."""
    runtime = Runtime.build(settings, registry)
    with_workers = settings.run_workers if run_workers is None else run_workers

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start(workers=with_workers)
        # Everything built so far (modules, mappings, the app) lives as long as the process:
        # out of the garbage collector's sight, its full collections stop walking it, and the
        # pauses that made the ingest's slowest requests slow shrink (docs/benchmarks.md).
        gc.freeze()
        try:
            yield
        finally:
            await runtime.stop()

    app = M3bngApp(
        title="m3bng",
        version=__version__,
        description="Integration service between Infor M3 and BNG.",
        lifespan=lifespan,
        docs_url=None,  # served by api/docs.py from local files, not from a CDN
        redoc_url=None,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(webhooks.router)
    # First among the rest: the storefront's reads are the hottest routed path, and FastAPI tries
    # routes in order (matching past every ops route cost a warm price read more than its lookup).
    app.include_router(storefront.router)
    app.include_router(ion.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(ops.include_routers())
    app.include_router(ui.router)
    docs.install(app)
    from m3bng.sandbox import BNG_SIM_MOUNT, M3_SIM_MOUNT

    for mount, name in ((M3_SIM_MOUNT, "m3_sim_app"), (BNG_SIM_MOUNT, "bng_sim_app")):
        sim_app = runtime.connectors.extras.get(name)
        if sim_app is not None:
            app.mount(mount, sim_app)
    return app
