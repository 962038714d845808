"""The OpenAPI document of the whole gateway: FastAPI's own, plus the proxied paths its router never sees.

The proxied routes are dispatched as plain ASGI before FastAPI (see app.py), so FastAPI cannot describe them: their
paths are written here from the models of api/openapi_models.py and merged into what FastAPI generates, once, when
the document is first asked for (so that neither module costs startup time). FastAPI's 422 validation answers are
rewritten as the 400 envelope the gateway actually sends (app.py maps RequestValidationError to it).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.api import openapi_models as m
from gateway.api.openapi import ANTHROPIC_ERROR, JSON, OPENAI_ERROR, REF, SSE, error_responses, ref

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
MULTIPART = "multipart/form-data"


class Proxied:
    """One proxied endpoint as the document shows it."""

    def __init__(
        self, path: str, summary: str, request: type[BaseModel], reply: type[BaseModel], *, streams: bool,
        error: str = OPENAI_ERROR, tag: str = "OpenAI", media: str = JSON,
    ) -> None:
        self.path, self.summary, self.request, self.reply = path, summary, request, reply
        self.streams, self.error, self.tag, self.media = streams, error, tag, media


PROXIED = (
    Proxied("/v1/chat/completions", "Chat completion (stream or not), routed by the policy",
            m.ChatCompletionRequest, m.ChatCompletion, streams=True),
    Proxied("/v1/completions", "Text completion (legacy), routed by the policy",
            m.CompletionRequest, m.Completion, streams=True),
    Proxied("/v1/embeddings", "Embeddings, routed by the policy", m.EmbeddingRequest, m.EmbeddingList, streams=False),
    Proxied("/v1/images/generations", "Image generation, routed by the policy (aliases of kind image)",
            m.ImageRequest, m.ImagesResponse, streams=False),
    Proxied("/v1/images/edits", "Image edit (multipart), routed by the policy (aliases of kind image)",
            m.ImageEditRequest, m.ImagesResponse, streams=False, media=MULTIPART),
    Proxied("/v1/responses", "OpenAI Responses API, routed by the policy",
            m.ResponseRequest, m.ResponseObject, streams=True),
    Proxied("/v1/messages", "Anthropic Messages API, routed by the policy", m.MessagesRequest, m.MessageObject,
            streams=True, error=ANTHROPIC_ERROR, tag="Anthropic"),
)
EXTRA_MODELS: tuple[type[BaseModel], ...] = (m.CountTokensRequest,)


def proxied_operation(p: Proxied) -> dict[str, Any]:
    content: dict[str, Any] = {JSON: {"schema": ref(p.reply.__name__)}}
    if p.streams:
        content[SSE] = {"schema": SSE_EVENT}
    headers = {name: {"schema": {"type": "string"}, **spec} for name, spec in ROUTE_HEADERS.items()}
    return {
        "tags": [p.tag],
        "summary": p.summary,
        "operationId": "proxy" + p.path.replace("/", "_").replace("v1_", ""),
        "parameters": HINT_PARAMETERS,
        "security": CLIENT_SECURITY,
        "requestBody": {"required": True, "content": {p.media: {"schema": ref(p.request.__name__)}}},
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
        error = ANTHROPIC_ERROR if path.startswith("/v1/messages") else OPENAI_ERROR
        for operation in operations.values():
            responses = operation["responses"]
            if "HTTPValidationError" in str(responses.get("422", "")):  # FastAPI's, not one of ours
                del responses["422"]
                responses.setdefault("400", error_responses(error, ("400",))["400"])
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document
