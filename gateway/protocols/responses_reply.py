"""A Chat Completions reply as a Responses API `response` object, streamed events, or error body."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.error_envelope import error_body as chat_error_body
from gateway.errors import PolyrouteError
from gateway.protocols import responses_objects as objects
from gateway.protocols.responses_stream import ResponsesStreamTranslator

__all__ = ["ResponsesStreamTranslator", "chat_to_response", "error_body"]


def chat_to_response(chat: dict[str, Any], *, request: dict[str, Any], response_id: str) -> dict[str, Any]:
    """The `response` object for a non-streamed chat completion answering `request` (the Responses body)."""
    choices = chat.get("choices")
    choice = objects.as_object(choices[0] if isinstance(choices, list) and choices else None)
    message = objects.as_object(choice.get("message"))
    output: list[dict[str, Any]] = []
    pending: list[tuple[str, Any]] = []
    # vLLM and Qwen's cloud return reasoning as `reasoning_content`; newer vLLM and OpenRouter as `reasoning`.
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        pending.append(("reasoning", reasoning))
    parts = [("output_text", text)] if (text := _text(message.get("content"))) else []
    if isinstance(message.get("refusal"), str) and message["refusal"]:
        parts.append(("refusal", message["refusal"]))
    if parts:
        pending.append(("message", parts))
    for call in message.get("tool_calls") or []:
        if isinstance(call, dict) and isinstance(call.get("function"), dict):
            pending.append(("function_call", call))
    status, reason = objects.outcome(choice.get("finish_reason"))
    for index, (kind, value) in enumerate(pending):
        # A cut-off response cut its last item short; the items before it were whole.
        item_status = "incomplete" if status == "incomplete" and index == len(pending) - 1 else "completed"
        output.append(_item(kind, value, response_id, index, item_status))
    model = chat.get("model") if isinstance(chat.get("model"), str) else request.get("model")
    created = chat.get("created")
    return objects.response_object(
        request=request,
        response_id=response_id,
        model=str(model),
        created_at=created if isinstance(created, int) else int(time.time()),
        status=status,
        output=output,
        usage=objects.usage(chat.get("usage")),
        incomplete_reason=reason,
    )


def error_body(err: PolyrouteError, prompt_tokens: int = 0) -> bytes:
    """The OpenAI error envelope, the same for the Responses API as for Chat Completions (whose message does not
    need `prompt_tokens`, unlike the Messages one)."""
    return orjson.dumps(chat_error_body(err))


def _item(kind: str, value: Any, response_id: str, index: int, status: str) -> dict[str, Any]:
    if kind == "reasoning":
        return objects.reasoning_item(objects.item_id("rs", response_id, index), value, status)
    if kind == "message":
        return objects.message_item(objects.item_id("msg", response_id, index), value, status)
    function = value["function"]
    call_id = value.get("id") if isinstance(value.get("id"), str) and value["id"] else None
    arguments = function.get("arguments")
    return objects.function_call_item(
        objects.item_id("fc", response_id, index),
        call_id or objects.item_id("call", response_id, index),
        str(function.get("name") or ""),
        arguments if isinstance(arguments, str) else orjson.dumps(arguments or {}).decode(),
        status,
    )


def _text(content: Any) -> str:
    """Chat message content as text; a few servers return a list of text parts instead of a string."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""
