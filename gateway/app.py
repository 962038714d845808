"""create_app(settings): builds the whole gateway in its lifespan and hands it down explicitly."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__
from gateway.api.admin import admin_routes
from gateway.api.body_writer import SEND_WRAPPED, STARTED_DIRECTLY
from gateway.api.cors import BrowserCORS
from gateway.api.health import health_routes
from gateway.api.openai_routes import model_routes
from gateway.api.portability_routes import portability_routes
from gateway.api.protocol_request import protocol_error_response
from gateway.api.responses import error_response
from gateway.errors import BadRequestError, MethodNotAllowedError, NotFoundError, PolicyError, PolyrouteError
from gateway.observability.metrics import Metrics
from gateway.policy.table import PolicyTable
from gateway.process_memory import tune_for_serving
from gateway.protocols.adapters import MESSAGES
from gateway.providers.registry import ProviderFactory
from gateway.runtime import Runtime, load_table
from gateway.settings import Settings
from gateway.state.factory import create_state_store

log = logging.getLogger("polyroute")


def create_app(
    settings: Settings, *, table: PolicyTable | None = None, provider_factory: ProviderFactory | None = None
) -> FastAPI:
    """The ASGI app. The policy comes from `table` or is loaded from `settings.policy` at startup.

    A FastAPI application, with the proxied routes dispatched in front of its middleware and router (`Gateway`):
    FastAPI's per-request layers (its telemetry and body-limit middlewares, the exit stack) would only add latency
    to every proxied request. Every other route is a FastAPI route, and GET /openapi.json documents them all.
    """
    if table is None:
        if settings.policy is None:
            raise PolicyError(["no policy given: pass --policy FILE or set POLYROUTE_POLICY"], "settings")
        table = load_table(settings, settings.policy)
    metrics = Metrics(multiprocess_dir=settings.multiproc_dir)
    store = create_state_store(settings, on_error=lambda op: metrics.state_store_error(op=op))
    runtime = Runtime(settings, table, store, metrics, provider_factory=provider_factory)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        tune_for_serving()
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
    options: dict[str, Any] = {
        "routes": routes,
        "lifespan": lifespan,
        "title": "polyroute",
        "version": __version__,
        "description": DESCRIPTION,
        "docs_url": "/docs" if settings.docs else None,
        "openapi_url": "/openapi.json" if settings.docs else None,
        "redoc_url": None,
        "swagger_ui_oauth2_redirect_url": None,
        # polyroute exports its own metrics (observability/); FastAPI's OpenTelemetry would only cost time.
        "telemetry": {"tracing": False, "metrics": False, "logs": False},
        "exception_handlers": {
            HTTPException: http_error,
            RequestValidationError: invalid_request,
            PolyrouteError: polyroute_error,
            Exception: unexpected,
        },
    }
    origins = settings.cors_origin_list
    app: Gateway = BrowserGateway(hot, origins, **options) if origins else Gateway(hot, **options)
    app.state.runtime = runtime
    return app


DESCRIPTION = (
    "An OpenAI-compatible gateway that routes each request by a declarative policy between cloud and self-hosted "
    "models. The proxied endpoints speak OpenAI's wire format (Anthropic's on /v1/messages); errors come in the "
    "envelope of the client's protocol."
)


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


async def polyroute_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PolyrouteError)
    return shaped(request.url.path, exc)


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's and FastAPI's own answers (unknown path, wrong method) in polyroute's envelope."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return shaped(request.url.path, NotFoundError("Unknown path.", code="unknown_url"))
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        return shaped(request.url.path, MethodNotAllowedError("Method not allowed.", allow=allow))
    return shaped(request.url.path, BadRequestError(str(exc.detail)))


async def invalid_request(request: Request, exc: Exception) -> Response:
    """FastAPI's validation failure (422 by its default) as the 400 every other bad request gets, naming the field."""
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path", "header")]
    param = ".".join(location) or None
    reason = str(first.get("msg", "is invalid"))
    message = f"Invalid '{param}': {reason}." if param else f"Invalid request: {reason}."
    return shaped(request.url.path, BadRequestError(message, param=param))


# The proxied routes: served before FastAPI's middleware stack and router, see `Gateway`.
HOT_PATHS = frozenset(
    ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/messages", "/v1/responses")
)


class Gateway(FastAPI):
    """FastAPI, with the proxied routes dispatched by one dict lookup before its middleware stack.

    Each request through the stack pays for FastAPI's middlewares (each wrapping `send`, some building a `Request`)
    and the router's walk over every route; the proxied routes need none of it. Every other request (another
    method, another path, a root path) goes through FastAPI as usual, and an unexpected error on a proxied route
    gets the same 500 envelope as anywhere else. The OpenAPI document describes the proxied routes too
    (api/openapi_document.py).
    """

    def __init__(self, hot: dict[str, ASGIApp], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hot = hot
        self._documented: dict[str, Any] | None = None

    def openapi(self) -> dict[str, Any]:
        # The proxied routes' models load only when the document is first asked for: no startup time for them.
        from gateway.api.openapi_document import merge_proxied

        document = super().openapi()
        if document is not self._documented:  # FastAPI made it anew: add the proxied routes, once
            self._documented = merge_proxied(document)
        return document

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
            # Past the first byte (sent, or written straight to the connection by api/body_writer.py), only the
            # server can end the response (as Starlette does).
            if not started and STARTED_DIRECTLY not in scope:
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
        scope[SEND_WRAPPED] = True  # every answer's start goes through `send`, where CORS adds its headers
        await self._cors(scope, receive, send)


def app_from_environment() -> FastAPI:
    """The factory each worker process calls (settings come from the POLYROUTE_* environment)."""
    return create_app(Settings())


def create_metrics_app(app: Starlette) -> Starlette:
    """A second, tiny app that serves only /metrics (for POLYROUTE_METRICS_PORT)."""
    runtime: Runtime = app.state.runtime

    async def metrics(_: Request) -> Response:
        payload, content_type = runtime.metrics.render()
        return Response(payload, media_type=content_type)

    return Starlette(routes=[Route("/metrics", metrics)])
