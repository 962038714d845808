"""Chat Completions reply or stream -> Anthropic Messages reply or SSE events; errors in Anthropic's shape."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.error_classes import CONTEXT_LENGTH_EXCEEDED, ErrorClass
from gateway.errors import PolyrouteError, UpstreamError

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def error_type(err: PolyrouteError) -> str:
    """Anthropic's error type for an error polyroute answers with (by its HTTP status)."""
    return _ERROR_TYPES.get(err.status, "invalid_request_error" if 400 <= err.status < 500 else "api_error")


def error_object(err: PolyrouteError, prompt_tokens: int = 0) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type(err), "message": error_message(err, prompt_tokens)}}


def error_body(err: PolyrouteError, prompt_tokens: int = 0) -> bytes:
    return orjson.dumps(error_object(err, prompt_tokens))


def error_message(err: PolyrouteError, prompt_tokens: int) -> str:
    """The message as Anthropic words it where clients read it: a prompt too long for every target says
    "prompt is too long: N tokens > M maximum" (Claude Code compacts its conversation on these words).

    N is polyroute's estimate of the prompt, at least M + 1 (the target counted more than M); M is the largest
    context window that refused it. polyroute's own account of each target follows.
    """
    if err.code != CONTEXT_LENGTH_EXCEEDED:
        return err.message
    window = err.context_window
    if window is None:
        return f"prompt is too long: {err.message}"
    return f"prompt is too long: {max(prompt_tokens, window + 1)} tokens > {window} maximum ({err.message})"


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_event(err: PolyrouteError) -> bytes:
    return event("error", error_object(err))


def usage_of(chat_usage: Any) -> dict[str, int]:
    """Chat's prompt_tokens include cached tokens; Anthropic's input_tokens do not."""
    usage = chat_usage if isinstance(chat_usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    cached = cached if isinstance(cached, int) else 0
    prompt = usage.get("prompt_tokens")
    output = usage.get("completion_tokens")
    return {
        "input_tokens": max(0, (prompt if isinstance(prompt, int) else 0) - cached),
        "output_tokens": output if isinstance(output, int) else 0,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def stop_of(choice: dict[str, Any], request: dict[str, Any]) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence); the sequence is known when the server names it (vLLM's `stop_reason`)."""
    finish = choice.get("finish_reason")
    matched = choice.get("stop_reason")
    stops = request.get("stop_sequences") or []
    if finish == "stop" and isinstance(matched, str) and matched in stops:
        return "stop_sequence", matched
    return STOP_REASONS.get(str(finish), "end_turn"), None


def _tool_input(arguments: Any, name: Any) -> dict[str, Any]:
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamError(
            f"the upstream's call of tool {name!r} has arguments that are not a JSON object",
            error_class=ErrorClass.SERVER_ERROR,
        )
    return value


def chat_to_message(chat: dict[str, Any], *, request: dict[str, Any], message_id: str) -> dict[str, Any]:
    """A Chat Completions reply as the Messages reply a Messages client expects."""
    choices = chat.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamError("the upstream's reply has no choices", error_class=ErrorClass.SERVER_ERROR)
    choice = choices[0]
    found = choice.get("message")
    message: dict[str, Any] = found if isinstance(found, dict) else {}
    content: list[dict[str, Any]] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = message.get("content")
    if isinstance(text, str) and text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        content.append({"type": "text", "text": refusal})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _tool_input(function.get("arguments"), function.get("name")),
            }
        )
    stop_reason, stop_sequence = stop_of(choice, request)
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": chat.get("model") or request.get("model"),
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_of(chat.get("usage")),
    }


class MessagesStreamTranslator:
    """Chat Completions stream chunks in, Anthropic's event sequence out: message_start, ping, then per content
    block content_block_start / content_block_delta... / content_block_stop, then message_delta, message_stop."""

    def __init__(self, *, request: dict[str, Any], message_id: str, model: str) -> None:
        self._request = request
        self._id = message_id
        self._model = model
        self._index = -1  # the block open now (Anthropic's `index`)
        self._open: str | None = None  # "thinking" | "text" | "tool:<chat tool index>"
        self._tool_blocks: dict[int, int] = {}  # chat tool-call index -> block index
        self._choice: dict[str, Any] = {}
        self._usage: Any = None

    def start(self) -> list[bytes]:
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            # Known only at the end, in message_delta (which the SDKs fold into the final message).
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [event("message_start", {"type": "message_start", "message": message}), event("ping", {"type": "ping"})]

    def _begin(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self._index += 1
        self._open = kind
        out.append(event("content_block_start", {"type": "content_block_start", "index": self._index,
                                                 "content_block": block}))
        return out

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [event("content_block_stop", {"type": "content_block_stop", "index": self._index})]

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        return event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                if self._open != "thinking":
                    out += self._begin("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                out.append(self._delta(self._index, {"type": "thinking_delta", "thinking": reasoning}))
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._open != "text":
                    out += self._begin("text", {"type": "text", "text": ""})
                out.append(self._delta(self._index, {"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self._choice = choice
        return out

    def _tool_delta(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        position = call.get("index", 0)
        function = call.get("function") or {}
        if position not in self._tool_blocks:
            name = function.get("name")
            block: dict[str, Any] = {"type": "tool_use", "id": call.get("id"), "name": name, "input": {}}
            out += self._begin(f"tool:{position}", block)
            self._tool_blocks[position] = self._index
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            out.append(self._delta(self._tool_blocks[position], delta))
        return out

    def finish(self, estimate: dict[str, Any] | None = None) -> list[bytes]:
        """Close the open block, then message_delta (its usage: the upstream's, else `estimate`, a chat `usage`)
        and message_stop."""
        out = self._close()
        stop_reason, stop_sequence = stop_of(self._choice, self._request) if self._choice else ("end_turn", None)
        delta = {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                 "usage": usage_of(self._usage or estimate)}
        out.append(event("message_delta", delta))
        out.append(event("message_stop", {"type": "message_stop"}))
        return out

    def fail(self, message: str, code: str, estimate: dict[str, Any] | None = None) -> list[bytes]:
        """The `error` event that ends a stream whose upstream failed after its first event (`code`: error type);
        Anthropic's error event carries no usage, so `estimate` is not needed."""
        return [event("error", {"type": "error", "error": {"type": code, "message": message}})]
