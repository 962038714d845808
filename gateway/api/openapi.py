"""What the routes declare for the OpenAPI document when they are built: error answers, by status and envelope.

The document itself (the proxied paths and their models) is api/openapi_document.py, loaded only when asked for.
"""

from __future__ import annotations

from typing import Any

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
OPENAI_ERROR = "ErrorEnvelope"
ANTHROPIC_ERROR = "AnthropicErrorEnvelope"


def ref(name: str) -> dict[str, str]:
    """A reference to a schema of the document's components, by its name."""
    return {"$ref": REF.format(model=name)}


Responses = dict[int | str, dict[str, Any]]


def error_responses(error: str, statuses: tuple[str, ...] = tuple(ERROR_STATUSES)) -> Responses:
    """The error answers of an operation, each with the envelope (and `retry-after` where it may come)."""
    out: Responses = {}
    for status in statuses:
        answer: dict[str, Any] = {"description": ERROR_STATUSES[status], "content": {JSON: {"schema": ref(error)}}}
        if status in ("429", "503"):
            answer["headers"] = {"retry-after": RETRY_AFTER}
        out[status] = answer
    return out
