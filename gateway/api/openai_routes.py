"""OpenAI-compatible model routes: chat, completions, embeddings, one model or all (thin, over the proxy)."""

from __future__ import annotations

import time

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.agent_routes import agent_routes
from gateway.api.auth import authenticate
from gateway.api.proxy import ProxyService
from gateway.api.responses import error_response
from gateway.errors import NotFoundError, PolyrouteError
from gateway.policy.table import Tenant
from gateway.providers.base import Endpoint
from gateway.runtime import Runtime


def model_routes(runtime: Runtime) -> list[Route]:
    proxy = ProxyService(runtime)

    async def models(request: Request) -> Response:
        table = runtime.active.table
        try:
            tenant = authenticate(request.headers, table)
        except PolyrouteError as err:
            return error_response(err)
        created = int(time.time())
        data = [_model(name, created) for name in table.aliases if _allowed(tenant, name)]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

    async def model(request: Request) -> Response:
        """One alias the caller may use; any other name is the same 404, so that it shows no more than the list."""
        table = runtime.active.table
        name: str = request.path_params["model"]
        try:
            tenant = authenticate(request.headers, table)
            if name not in table.aliases or not _allowed(tenant, name):
                raise NotFoundError(
                    f"The model '{name[:200]}' does not exist or you do not have access to it.", param="model"
                )
        except PolyrouteError as err:
            return error_response(err)
        return Response(orjson.dumps(_model(name, int(time.time()))), media_type="application/json")

    return [
        Route("/v1/chat/completions", proxy.route(Endpoint.CHAT), methods=["POST"]),
        Route("/v1/completions", proxy.route(Endpoint.COMPLETION), methods=["POST"]),
        Route("/v1/embeddings", proxy.route(Endpoint.EMBEDDING), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        *agent_routes(runtime, proxy),
    ]


def _model(alias: str, created: int) -> dict[str, object]:
    """OpenAI's Model object for an alias."""
    return {"id": alias, "object": "model", "created": created, "owned_by": "polyroute"}


def _allowed(tenant: Tenant, alias: str) -> bool:
    return tenant.models is None or alias in tenant.models
