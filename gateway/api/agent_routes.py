"""Routes of the coding-agent protocols: Anthropic Messages (and count_tokens) and OpenAI Responses."""

# No `from __future__ import annotations`: FastAPI reads the dependency of a route from its annotation, which
# names a closure.
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from gateway.api.asgi_io import read_body
from gateway.api.openapi import ANTHROPIC_ERROR, error_responses, ref
from gateway.api.openapi_security import tenant_of
from gateway.api.parsing import estimate_prompt, json_object
from gateway.api.proxy import ProxyService
from gateway.errors import NotFoundError, PermissionDeniedError
from gateway.policy.table import Tenant
from gateway.protocols.messages_request import messages_to_chat
from gateway.providers.base import Endpoint
from gateway.runtime import Runtime

COUNT_TOKENS_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": ref(
    "CountTokensRequest"  # api/openapi_models.py
)}}}}


class TokenCount(BaseModel):
    """polyroute's own estimate of the prompt, as routing uses it; no upstream is asked."""

    input_tokens: int


def agent_routes(runtime: Runtime, proxy: ProxyService) -> list[BaseRoute]:
    router = APIRouter(tags=["Anthropic"])
    caller = tenant_of(runtime)

    # The body is read as the proxied routes read it (errors in Anthropic's shape); the document shows its model.
    @router.post("/v1/messages/count_tokens", response_model=TokenCount, openapi_extra=COUNT_TOKENS_BODY,
                 responses=error_responses(ANTHROPIC_ERROR, ("400", "401", "403", "404", "413")))
    async def count_tokens(request: Request, tenant: Annotated[Tenant, Depends(caller)]) -> TokenCount:
        """polyroute's own estimate (as routing uses it); no upstream is asked and no limit is charged."""
        table = runtime.active.table
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
        return TokenCount(input_tokens=tokens)

    return [
        Route("/v1/messages", proxy.route(Endpoint.MESSAGES), methods=["POST"]),
        *router.routes,
        Route("/v1/responses", proxy.route(Endpoint.RESPONSES), methods=["POST"]),
    ]
