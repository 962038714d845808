"""The OpenAPI document of the whole gateway: FastAPI's own, plus the proxied paths its router never sees.

The proxied routes are dispatched as plain ASGI before FastAPI (see app.py), so FastAPI cannot describe them: their
paths are written here from the models of api/openapi_models.py and merged into what FastAPI generates, once, when
the document is first asked for. FastAPI's 422 validation answers are rewritten as the 400 envelope the gateway
actually sends (app.py maps RequestValidationError to it).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.api import openapi_models as m

REF = "#/components/schemas/{model}"
JSON = "application/json"
SSE = "text/event-stream"

ERROR_STATUSES = {
    "400": "The request is invalid, or every target refused it (context length, content policy), or no target "
    "is eligible (the message names the rule that excluded each).",
    "401": "Missing or invalid API key.",
    "403": "The tenant may not use this model.",
    "404": "Unknown alias (model) or path.",
    "413": "The body is larger than POLYROUTE_MAX_BODY_BYTES.",
    "429": "A tenant limit or budget, or every target's rate limit, was hit; `retry-after` says when to retry.",
    "500": "The gateway hit an internal error.",
    "502": "Every target failed (the message lists each target's cause).",
    "503": "Every target is unavailable (open circuits, overload), the state store is unreachable in failure mode "
    "closed, or the gateway is shutting down.",
    "504": "Every target timed out.",
}
RETRY_AFTER = {"description": "Seconds until a retry may succeed.", "schema": {"type": "integer", "minimum": 1}}
ROUTE_HEADERS: dict[str, dict[str, Any]] = {
    "x-request-id": {"description": "The gateway's id of this request (in its logs and usage records)."},
    "x-polyroute-route": {"description": "The name of the policy rule (or alias) that routed the request."},
    "x-polyroute-deployment": {"description": "The deployment that answered."},
    "x-polyroute-attempts": {"description": "How many upstream attempts were made.", "schema": {"type": "integer"}},
    "x-polyroute-fallback-reason": {"description": "Why an earlier target was left (only after a fallback)."},
    "x-polyroute-cost-usd": {"description": "The request's cost in USD, when it is known when the headers are sent."},
}
HINT_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "x-polyroute-tags",
        "in": "header",
        "required": False,
        "description": "Routing hint: a comma list of tags (at most 16, each [A-Za-z0-9_.:-]{1,64}).",
        "schema": {"type": "string"},
    },
    {
        "name": "x-polyroute-data-class",
        "in": "header",
        "required": False,
        "description": "Routing hint: the request's data class (e.g. public, internal, pii), [A-Za-z0-9_.:-]{1,64}.",
        "schema": {"type": "string"},
    },
]
SECURITY_SCHEMES = {
    "ClientKey": {"type": "http", "scheme": "bearer", "description": "A tenant's API key (any, or none, if the "
                  "policy declares no tenants)."},
    "ClientApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key", "description": "The same key, as "
                     "Anthropic's clients send it."},
}
SSE_EVENT = {  # the schema of each event, as OpenAPI 3.2's itemSchema says it (and schemathesis reads it)
    "type": "object",
    "description": "One server-sent event, as the protocol sends it (`data: [DONE]` ends OpenAI's streams); an "
    "upstream failure after the first byte is one error event, in the protocol's error shape.",
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"}},
}
CLIENT_SECURITY: list[dict[str, list[str]]] = [{"ClientKey": []}, {"ClientApiKey": []}, {}]


class Proxied:
    """One proxied endpoint as the document shows it."""

    def __init__(
        self, path: str, summary: str, request: type[BaseModel], reply: type[BaseModel], *, streams: bool,
        error: type[BaseModel] = m.ErrorEnvelope, tag: str = "OpenAI",
    ) -> None:
        self.path, self.summary, self.request, self.reply = path, summary, request, reply
        self.streams, self.error, self.tag = streams, error, tag


PROXIED = (
    Proxied("/v1/chat/completions", "Chat completion (stream or not), routed by the policy",
            m.ChatCompletionRequest, m.ChatCompletion, streams=True),
    Proxied("/v1/completions", "Text completion (legacy), routed by the policy",
            m.CompletionRequest, m.Completion, streams=True),
    Proxied("/v1/embeddings", "Embeddings, routed by the policy", m.EmbeddingRequest, m.EmbeddingList, streams=False),
    Proxied("/v1/responses", "OpenAI Responses API, routed by the policy",
            m.ResponseRequest, m.ResponseObject, streams=True),
    Proxied("/v1/messages", "Anthropic Messages API, routed by the policy", m.MessagesRequest, m.MessageObject,
            streams=True, error=m.AnthropicErrorEnvelope, tag="Anthropic"),
)
EXTRA_MODELS: tuple[type[BaseModel], ...] = (m.CountTokensRequest, m.TokenCount)


def ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


Responses = dict[int | str, dict[str, Any]]


def error_responses(error: type[BaseModel], statuses: tuple[str, ...] = tuple(ERROR_STATUSES)) -> Responses:
    """The error answers of an operation, each with the envelope (and `retry-after` where it may come)."""
    out: Responses = {}
    for status in statuses:
        answer: dict[str, Any] = {"description": ERROR_STATUSES[status], "content": {JSON: {"schema": ref(error)}}}
        if status in ("429", "503"):
            answer["headers"] = {"retry-after": RETRY_AFTER}
        out[status] = answer
    return out


def proxied_operation(p: Proxied) -> dict[str, Any]:
    content: dict[str, Any] = {JSON: {"schema": ref(p.reply)}}
    if p.streams:
        content[SSE] = {"schema": SSE_EVENT}
    headers = {name: {"schema": {"type": "string"}, **spec} for name, spec in ROUTE_HEADERS.items()}
    return {
        "tags": [p.tag],
        "summary": p.summary,
        "operationId": "proxy" + p.path.replace("/", "_").replace("v1_", ""),
        "parameters": HINT_PARAMETERS,
        "security": CLIENT_SECURITY,
        "requestBody": {"required": True, "content": {JSON: {"schema": ref(p.request)}}},
        "responses": {"200": {"description": "The target's answer.", "headers": headers, "content": content},
                      **error_responses(p.error)},
    }


def merge_proxied(document: dict[str, Any]) -> dict[str, Any]:
    """Add the proxied paths, their schemas and the client key schemes to FastAPI's document; 422 becomes 400."""
    models: list[type[BaseModel]] = [p.request for p in PROXIED] + [p.reply for p in PROXIED]
    models += [m.ErrorEnvelope, m.AnthropicErrorEnvelope, *EXTRA_MODELS]
    _, defs = models_json_schema([(model, "validation") for model in models], ref_template=REF)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(defs.get("$defs", {}))
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    paths = document.setdefault("paths", {})
    for p in PROXIED:
        paths.setdefault(p.path, {})["post"] = proxied_operation(p)
    for path, operations in paths.items():
        error = m.AnthropicErrorEnvelope if path.startswith("/v1/messages") else m.ErrorEnvelope
        for operation in operations.values():
            responses = operation["responses"]
            if "HTTPValidationError" in str(responses.get("422", "")):  # FastAPI's, not one of ours
                del responses["422"]
                responses.setdefault("400", error_responses(error, ("400",))["400"])
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document
