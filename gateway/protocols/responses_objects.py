"""The Responses API objects built from Chat Completions data: the `response` envelope, its usage, its items."""

from __future__ import annotations

from typing import Any

# Chat finish_reason -> (Responses status, incomplete_details.reason). Any other finish reason (vLLM's `abort`,
# a vendor's own) is reported as completed: the text produced so far is all there is.
_FINISH = {
    "length": ("incomplete", "max_output_tokens"),
    "content_filter": ("incomplete", "content_filter"),
}

# The codes `response.error.code` may take; polyroute's own codes are mapped to the closest one.
_RATE_LIMIT_CODES = frozenset({"rate_limit_exceeded", "insufficient_quota"})


def outcome(finish_reason: str | None) -> tuple[str, str | None]:
    """The response status and incomplete reason for a chat finish_reason."""
    return _FINISH.get(finish_reason or "", ("completed", None))


def failure(message: str, code: str) -> dict[str, str]:
    """The `error` of a failed response; its `code` is one of those the Responses API documents."""
    return {"code": "rate_limit_exceeded" if code in _RATE_LIMIT_CODES else "server_error", "message": message}


def item_id(prefix: str, response_id: str, output_index: int) -> str:
    """A stable id for an output item: the response's own id, suffixed with the item's place in `output`."""
    return f"{prefix}_{response_id.removeprefix('resp_')}_{output_index}"


def usage(chat_usage: Any) -> dict[str, Any] | None:
    """Chat `usage` in the Responses shape; None when there is none (the translators then report polyroute's
    estimate, given to them as a chat `usage` too)."""
    if not isinstance(chat_usage, dict):
        return None
    prompt = _count(chat_usage.get("prompt_tokens"))
    completion = _count(chat_usage.get("completion_tokens"))
    prompt_details = as_object(chat_usage.get("prompt_tokens_details"))
    completion_details = as_object(chat_usage.get("completion_tokens_details"))
    # Cache writes: OpenAI-style `cache_write_tokens`, or Anthropic's count as litellm reports it.
    cache_write = prompt_details.get("cache_write_tokens", chat_usage.get("cache_creation_input_tokens"))
    total = chat_usage.get("total_tokens")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": _count(prompt_details.get("cached_tokens")),
            "cache_write_tokens": _count(cache_write),
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": _count(completion_details.get("reasoning_tokens"))},
        "total_tokens": _count(total) if total is not None else prompt + completion,
    }


def message_item(item_id_: str, parts: list[tuple[str, str]], status: str) -> dict[str, Any]:
    """An assistant `message` item; `parts` are (kind, text) with kind `output_text` or `refusal`."""
    return {
        "id": item_id_,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": [content_part(kind, text) for kind, text in parts],
    }


def content_part(kind: str, text: str) -> dict[str, Any]:
    if kind == "refusal":
        return {"type": "refusal", "refusal": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(item_id_: str, text: str, status: str) -> dict[str, Any]:
    """A `reasoning` item. The backend's reasoning text (`reasoning_content`) is shown as its summary: that is
    where Responses clients look for reasoning to display, and the API has no other plain-text place for it."""
    summary = [{"type": "summary_text", "text": text}] if text else []
    return {"id": item_id_, "type": "reasoning", "summary": summary, "status": status}


def function_call_item(item_id_: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id_,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def response_object(
    *,
    request: dict[str, Any],
    response_id: str,
    model: str,
    created_at: int,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    incomplete_reason: str | None = None,
    error: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The `response` object, echoing the request's parameters as the Responses API does.

    `usage` is left out while it is unknown (the in-progress snapshots); `user` is echoed only when it was sent.
    """
    text = as_object(request.get("text"))
    reasoning = as_object(request.get("reasoning"))
    parallel = request.get("parallel_tool_calls")
    response: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": None if incomplete_reason is None else {"reason": incomplete_reason},
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True if parallel is None else parallel,
        "previous_response_id": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "service_tier": request.get("service_tier"),
        "store": False,
        "temperature": request.get("temperature"),
        "text": {"format": text.get("format") or {"type": "text"}, "verbosity": text.get("verbosity")},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": [function_tool(tool) for tool in request.get("tools") or [] if isinstance(tool, dict)],
        "top_p": request.get("top_p"),
        "truncation": request.get("truncation") or "disabled",
        "metadata": request.get("metadata") or {},
    }
    if usage is not None:
        response["usage"] = usage
    if isinstance(request.get("user"), str):
        response["user"] = request["user"]
    return response


def function_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A function tool as a response echoes it: `parameters` and `strict` always present (null when not sent,
    because polyroute passes on only what was sent: it does not turn strict mode on by itself)."""
    echoed = {"type": "function", "name": tool.get("name"), "parameters": tool.get("parameters"),
              "strict": tool.get("strict")}
    if tool.get("description") is not None:
        echoed["description"] = tool["description"]
    return echoed


def as_object(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else an empty one: upstream chunks are read leniently."""
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
