"""create_app(settings): builds the whole gateway in its lifespan and hands it down explicitly."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__
from gateway.api.admin import admin_routes
from gateway.api.cors import BrowserCORS
from gateway.api.health import health_routes
from gateway.api.openai_routes import model_routes
from gateway.api.portability_routes import portability_routes
from gateway.api.protocol_request import protocol_error_response
from gateway.api.responses import error_response
from gateway.errors import BadRequestError, NotFoundError, PolicyError, PolyrouteError
from gateway.observability.metrics import Metrics
from gateway.policy.table import PolicyTable
from gateway.protocols.adapters import MESSAGES
from gateway.providers.registry import ProviderFactory
from gateway.runtime import Runtime, load_table
from gateway.settings import Settings
from gateway.state.factory import create_state_store

log = logging.getLogger("polyroute")


def create_app(
    settings: Settings, *, table: PolicyTable | None = None, provider_factory: ProviderFactory | None = None
) -> Starlette:
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
    runtime = Runtime(settings, table, store, metrics, provider_factory=provider_factory)

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
        *portability_routes(runtime),
    ]
    hot = {r.path: r.app for r in routes if isinstance(r, Route) and r.methods == {"POST"} and r.path in HOT_PATHS}
    origins = settings.cors_origin_list
    if origins:
        app: Gateway = BrowserGateway(hot, origins, routes=routes, lifespan=lifespan)
    else:
        app = Gateway(hot, routes=routes, lifespan=lifespan)
    app.state.runtime = runtime

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return shaped(request.url.path, NotFoundError("Unknown path.", code="unknown_url"))
        err = BadRequestError(str(exc.detail))
        err.status = exc.status_code
        return shaped(request.url.path, err)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
    return app


def shaped(path: str, err: PolyrouteError) -> Response:
    """An error envelope; an Anthropic client reads it in Anthropic's shape, even for a path polyroute lacks."""
    if path.startswith("/v1/messages"):
        return protocol_error_response(MESSAGES, err, {})
    return error_response(err)


def internal_error(path: str, exc: Exception) -> Response:
    """The one place that turns anything unexpected into a 500 envelope (and logs it)."""
    log.exception("unhandled error", exc_info=exc)
    return shaped(path, PolyrouteError("The gateway hit an internal error."))


async def unexpected(request: Request, exc: Exception) -> Response:
    return internal_error(request.url.path, exc)


# The proxied routes: served before Starlette's middleware stack and router, see `Gateway`.
HOT_PATHS = frozenset(
    ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/responses")
)


class Gateway(Starlette):
    """Starlette, with the proxied routes dispatched by one dict lookup before its middleware stack.

    Each request through the stack pays for two middlewares (each wrapping `send`, one building a `Request`) and
    the router's walk over every route; the proxied routes need none of it. Every other request (another method,
    another path, a root path) goes through Starlette as usual, and an unexpected error on a proxied route gets the
    same 500 envelope as anywhere else.
    """

    def __init__(self, hot: dict[str, ASGIApp], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hot = hot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._hot.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None or scope.get("root_path"):
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        started = False

        async def sent(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await route(scope, receive, sent)
        except Exception as exc:
            if not started:  # past the first byte, only the server can end the response (as Starlette does)
                response = internal_error(scope["path"], exc)
                await response(scope, receive, send)
            raise


class BrowserGateway(Gateway):
    """The Gateway behind CORS (api/cors.py), for POLYROUTE_CORS_ORIGINS: its own class, so that without the
    setting no request pays for it. Outermost, so errors, streams and the proxied routes get the headers too."""

    def __init__(self, hot: dict[str, ASGIApp], origins: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(hot, **kwargs)
        self._cors = BrowserCORS(super().__call__, origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._cors(scope, receive, send)


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
