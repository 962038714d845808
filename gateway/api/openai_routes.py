"""OpenAI-compatible model routes: chat, completions, embeddings, models (thin, over the proxy service)."""

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
from gateway.errors import PolyrouteError
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
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "polyroute"}
            for name in table.aliases
            if tenant.models is None or name in tenant.models
        ]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")

    return [
        Route("/v1/chat/completions", proxy.route(Endpoint.CHAT), methods=["POST"]),
        Route("/v1/completions", proxy.route(Endpoint.COMPLETION), methods=["POST"]),
        Route("/v1/embeddings", proxy.route(Endpoint.EMBEDDING), methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        *agent_routes(runtime, proxy),
    ]
