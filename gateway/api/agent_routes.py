"""Routes of the coding-agent protocols: Anthropic Messages (and count_tokens) and OpenAI Responses."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.api.asgi_io import read_body
from gateway.api.auth import authenticate
from gateway.api.parsing import estimate_prompt, json_object
from gateway.api.protocol_request import protocol_error_response
from gateway.api.proxy import ProxyService
from gateway.errors import NotFoundError, PermissionDeniedError, PolyrouteError
from gateway.protocols.adapters import MESSAGES
from gateway.protocols.messages_request import messages_to_chat
from gateway.providers.base import Endpoint
from gateway.runtime import Runtime


def agent_routes(runtime: Runtime, proxy: ProxyService) -> list[Route]:
    async def count_tokens(request: Request) -> Response:
        """polyroute's own estimate (as routing uses it); no upstream is asked and no limit is charged."""
        table = runtime.active.table
        try:
            tenant = authenticate(request.headers, table)
            raw = await read_body(request.receive, request.headers, runtime.settings.max_body_bytes)
            body = json_object(raw)
            model = body.get("model")
            if not isinstance(model, str) or model not in table.aliases:
                raise NotFoundError(
                    f"The model '{model}' does not exist: it is not an alias in this gateway's policy.", param="model"
                )
            if tenant.models is not None and model not in tenant.models:
                raise PermissionDeniedError(f"Tenant '{tenant.name}' may not use the model '{model}'.", param="model")
            tokens, _ = estimate_prompt(messages_to_chat(body, require_max_tokens=False), Endpoint.CHAT)
        except PolyrouteError as err:
            return protocol_error_response(MESSAGES, err, {})
        return Response(orjson.dumps({"input_tokens": tokens}), media_type="application/json")

    return [
        Route("/v1/messages", proxy.route(Endpoint.MESSAGES), methods=["POST"]),
        Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
        Route("/v1/responses", proxy.route(Endpoint.RESPONSES), methods=["POST"]),
    ]
