"""create_app(settings): builds the whole gateway in its lifespan and hands it down explicitly."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import __version__
from gateway.api.admin import admin_routes
from gateway.api.health import health_routes
from gateway.api.openai_routes import model_routes
from gateway.api.protocol_request import protocol_error_response
from gateway.api.responses import error_response
from gateway.errors import BadRequestError, NotFoundError, PolicyError, PolyrouteError
from gateway.observability.metrics import Metrics
from gateway.policy.table import PolicyTable
from gateway.protocols.adapters import MESSAGES
from gateway.runtime import Runtime, load_table
from gateway.settings import Settings
from gateway.state.factory import create_state_store

log = logging.getLogger("polyroute")


def create_app(settings: Settings, *, table: PolicyTable | None = None) -> Starlette:
    """The ASGI app. The policy comes from `table` or is loaded from `settings.policy` at startup.

    Plain Starlette, not FastAPI: every route is a Starlette route, and FastAPI's per-request layers (its telemetry
    and body-limit middlewares, the exit stack) would only add latency to every proxied request.
    """
    if table is None:
        if settings.policy is None:
            raise PolicyError(["no policy given: pass --policy FILE or set POLYROUTE_POLICY"], "settings")
        table = load_table(settings, settings.policy)
    metrics = Metrics(multiprocess_dir=settings.multiproc_dir)
    store = create_state_store(settings, on_error=lambda op: metrics.state_store_error(op=op))
    runtime = Runtime(settings, table, store, metrics)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        log.info("polyroute %s serving policy %s", __version__, runtime.active.table.source)
        try:
            yield
        finally:
            await runtime.close()

    routes = [
        *model_routes(runtime),
        *health_routes(runtime, with_metrics=settings.metrics_port is None),
        *admin_routes(runtime),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.runtime = runtime

    def shaped(request: Request, err: PolyrouteError) -> Response:
        # An Anthropic client reads errors in Anthropic's shape, even for a path or method polyroute doesn't serve.
        if request.url.path.startswith("/v1/messages"):
            return protocol_error_response(MESSAGES, err, {})
        return error_response(err)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return shaped(request, NotFoundError("Unknown path.", code="unknown_url"))
        err = BadRequestError(str(exc.detail))
        err.status = exc.status_code
        return shaped(request, err)

    async def unexpected(request: Request, exc: Exception) -> Response:
        # The one place that turns anything unexpected into a 500 envelope (and logs it).
        log.exception("unhandled error", exc_info=exc)
        return shaped(request, PolyrouteError("The gateway hit an internal error."))

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
    return app


def app_from_environment() -> Starlette:
    """The factory each worker process calls (settings come from the POLYROUTE_* environment)."""
    return create_app(Settings())


def create_metrics_app(app: Starlette) -> Starlette:
    """A second, tiny app that serves only /metrics (for POLYROUTE_METRICS_PORT)."""
    runtime: Runtime = app.state.runtime

    async def metrics(_: Request) -> Response:
        payload, content_type = runtime.metrics.render()
        return Response(payload, media_type=content_type)

    return Starlette(routes=[Route("/metrics", metrics)])
