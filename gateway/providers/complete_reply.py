"""Whether an upstream's 200 non-stream answer is complete in its protocol; one that is not fails the attempt.

A 200 whose body is an error object, or an answer cut short, must never reach a client as a success: a chat
completion needs choices, each with a message (or text) and a finish reason; a Messages message its content, stop
reason and usage; a Responses `response` its status and output; an embeddings list or an images response its
data. An error object in the
body is classified as an in-band error (so a throttled upstream still counts as a rate limit); anything else
incomplete is a server error, which falls back like a 5xx.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.error_classes import ErrorClass
from gateway.errors import UpstreamError
from gateway.providers.base import Endpoint
from gateway.providers.failures import inband_error
from gateway.providers.native_sse import native_error

_WHAT = {
    Endpoint.CHAT: "chat completion",
    Endpoint.COMPLETION: "completion",
    Endpoint.EMBEDDING: "embeddings list",
    Endpoint.MESSAGES: "Messages message",
    Endpoint.RESPONSES: "Responses response",
    Endpoint.IMAGE: "images response",
    Endpoint.IMAGE_EDIT: "images response",
}


def incomplete_reply(endpoint: Endpoint, data: Any) -> UpstreamError | None:
    """The failure a 200 body (parsed JSON) stands for, or None when it is a complete answer for `endpoint`."""
    if not isinstance(data, dict):
        return _incomplete(endpoint, "is not a JSON object")
    if endpoint is _CHAT:  # the fast path's usual answer: identity tests only (an enum's hash is Python code)
        missing = _choices_missing(data, "message")
    else:
        if endpoint is _MESSAGES or endpoint is _RESPONSES:
            failed = native_error(data)  # an error event's shape, or a response whose status is `failed`
            if failed is not None:
                return failed
        missing = _MISSING[endpoint](data)
    if missing is None:
        return None
    failure = inband_error(data)  # `{"error": {...}}` with a 200, as Model Studio's compatible mode may send
    if failure is None:
        return _incomplete(endpoint, missing)
    failure.message = failure.message.replace("in-stream error", "upstream answered 200 with an error", 1)
    return failure


def _choices_missing(data: dict[str, Any], content: str) -> str | None:
    """What a chat completion (`content` = "message") or a completion ("text") lacks; None when nothing."""
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return "has no choices"
    for choice in choices:
        if not isinstance(choice, dict) or content not in choice:
            return f"has a choice without a {content}"
        if not isinstance(choice.get("finish_reason"), str):
            return "has a choice without a finish_reason"
    return None


def _message_missing(data: dict[str, Any]) -> str | None:
    if data.get("type") != "message":
        return "is not a message"
    if not isinstance(data.get("content"), list):
        return "has no content"
    if not isinstance(data.get("stop_reason"), str):
        return "has no stop_reason"
    return None if isinstance(data.get("usage"), dict) else "has no usage"


def _response_missing(data: dict[str, Any]) -> str | None:
    if data.get("object") != "response":
        return "is not a response"
    if not isinstance(data.get("status"), str):
        return "has no status"
    return None if isinstance(data.get("output"), list) else "has no output"


def _data_missing(data: dict[str, Any]) -> str | None:
    """An embeddings list or an images response: its `data` list."""
    return None if isinstance(data.get("data"), list) else "has no data"


_CHAT, _MESSAGES, _RESPONSES = Endpoint.CHAT, Endpoint.MESSAGES, Endpoint.RESPONSES
# What each endpoint's answer lacks, in the upstream's field names.
_MISSING: dict[Endpoint, Callable[[dict[str, Any]], str | None]] = {
    Endpoint.CHAT: lambda data: _choices_missing(data, "message"),
    Endpoint.COMPLETION: lambda data: _choices_missing(data, "text"),
    Endpoint.EMBEDDING: _data_missing,
    Endpoint.IMAGE: _data_missing,
    Endpoint.IMAGE_EDIT: _data_missing,
    Endpoint.MESSAGES: _message_missing,
    Endpoint.RESPONSES: _response_missing,
}


def _incomplete(endpoint: Endpoint, missing: str) -> UpstreamError:
    return UpstreamError(
        f"upstream answered 200 with a {_WHAT[endpoint]} that {missing}", error_class=ErrorClass.SERVER_ERROR
    )
