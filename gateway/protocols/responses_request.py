"""A Responses API request body translated to a Chat Completions body, or refused with a 400 naming the field."""

from __future__ import annotations

from typing import Any

from gateway.errors import BadRequestError
from gateway.protocols.responses_input import STATELESS, input_messages, require_string

# Same name and meaning in both APIs: copied as they are.
_SAME = (
    "temperature",
    "top_p",
    "user",
    "metadata",
    "parallel_tool_calls",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
    "prompt_cache_retention",
)

# Every documented Responses parameter: none of these is passed through blindly, each is translated below,
# copied (`_SAME`), refused, or accepted for a reason written next to it.
RESPONSES_PARAMS = frozenset(
    {
        *_SAME,
        "background",
        "context_management",
        "conversation",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "model",
        "moderation",
        "previous_response_id",
        "prompt",
        "prompt_cache_options",
        "reasoning",
        "store",
        "stream",
        "stream_options",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "truncation",
    }
)

# Chat Completions names the translation writes itself or whose result a Responses reply cannot carry. Any other
# field the Responses API does not define (`stop`, `seed`, vLLM's `top_k`, `chat_template_kwargs`, ...) is passed
# through to the chat body, as vLLM's own Responses server accepts such extras.
_CHAT_ONLY = {
    "messages": "'input' (and 'instructions')",
    "max_tokens": "'max_output_tokens'",
    "max_completion_tokens": "'max_output_tokens'",
    "response_format": "'text.format'",
    "reasoning_effort": "'reasoning.effort'",
    "verbosity": "'text.verbosity'",
    "functions": "'tools'",
    "function_call": "'tool_choice'",
    "n": None,
    "logprobs": None,
    "modalities": None,
    "audio": None,
    "prediction": None,
    "web_search_options": None,
}

# `include` asks for extra data in the reply. Only encrypted reasoning is accepted: agents such as Codex always ask
# for it with `store: false`, and polyroute, producing no encrypted reasoning, has nothing to leave out. The other
# values name data of built-in tools or stored inputs (refused elsewhere) or logprobs (not translated).
_INCLUDABLE = frozenset({"reasoning.encrypted_content"})

_FUNCTION_TOOL_KEYS = frozenset({"type", "name", "description", "parameters", "strict"})


def responses_to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The Chat Completions body equivalent to a `POST /v1/responses` body; BadRequestError if there is none."""
    _refuse_server_state(body)
    _refuse_untranslated(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("You must provide a model parameter (a non-empty string).", param="model")
    chat: dict[str, Any] = {"model": model, "messages": input_messages(body)}
    for key in _SAME:
        if body.get(key) is not None:
            chat[key] = body[key]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if "tools" not in chat:
        # Without tools these ask for nothing, and OpenAI's chat endpoint refuses them there (the Responses API
        # accepts them); a tool_choice that demands a call is left for the backend to refuse.
        chat.pop("parallel_tool_calls", None)
        if chat.get("tool_choice") in ("auto", "none"):
            del chat["tool_choice"]
    if body.get("max_output_tokens") is not None:
        # max_completion_tokens, not the deprecated max_tokens: like max_output_tokens it bounds reasoning and
        # visible tokens together, and OpenAI's reasoning models refuse max_tokens.
        chat["max_completion_tokens"] = body["max_output_tokens"]
    if body.get("text") is not None:
        chat.update(_text(body["text"]))
    if body.get("reasoning") is not None:
        chat.update(_reasoning(body["reasoning"]))
    if body.get("stream"):
        # Usage is reported only by the final chunk of a chat stream, and a Responses stream must end with it.
        # `stream_options.include_obfuscation` is not forwarded: it asks for random padding on delta events,
        # which polyroute does not add, and no content depends on it.
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    for key, value in body.items():
        if key not in RESPONSES_PARAMS:
            chat[key] = value
    return chat


def _refuse_server_state(body: dict[str, Any]) -> None:
    for key in ("previous_response_id", "conversation", "prompt"):
        if body.get(key) is not None:
            raise BadRequestError(f"'{key}' needs state stored on the server. {STATELESS}", param=key)
    if body.get("store") is True:
        raise BadRequestError(f"'store': true asks to keep the response. {STATELESS}", param="store")
    if body.get("background") is True:
        raise BadRequestError(
            "'background': true needs the response stored and polled on the server; polyroute answers each "
            "request on its own connection. Send the request without 'background' (optionally with 'stream').",
            param="background",
        )
    include = body.get("include")
    if include is not None:
        if not isinstance(include, list):
            raise BadRequestError("'include' must be an array of strings.", param="include")
        for index, value in enumerate(include):
            if not isinstance(value, str) or value not in _INCLUDABLE:
                raise BadRequestError(
                    f"'include' value {value!r} cannot be produced when translating to Chat Completions; "
                    f"polyroute accepts only {sorted(_INCLUDABLE)}.",
                    param=f"include[{index}]",
                )


def _refuse_untranslated(body: dict[str, Any]) -> None:
    refused = {
        "context_management": "server-side compaction has no Chat Completions equivalent",
        "max_tool_calls": "Chat Completions cannot cap the number of tool calls",
        "moderation": "moderation runs on OpenAI's servers",
        "prompt_cache_options": "Chat Completions has no prompt cache options",
    }
    for key, why in refused.items():
        if body.get(key):
            raise BadRequestError(f"'{key}' cannot be translated: {why}.", param=key)
    if body.get("top_logprobs"):
        raise BadRequestError(
            "'top_logprobs' is not translated; logprobs are not available here.", param="top_logprobs"
        )
    if body.get("truncation") not in (None, "disabled"):
        raise BadRequestError(
            "'truncation' other than 'disabled' cannot be translated: Chat Completions never drops input items.",
            param="truncation",
        )
    for key, instead in _CHAT_ONLY.items():
        if key in body:
            hint = f" The Responses API calls it {instead}." if instead else ""
            raise BadRequestError(f"'{key}' is not a Responses API parameter.{hint}", param=key)


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise BadRequestError("'tools' must be an array.", param="tools")
    chat_tools: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        path = f"tools[{index}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function" or not isinstance(tool, dict):
            raise BadRequestError(
                f"{path}.type {kind!r} cannot be translated: built-in and custom tools run on OpenAI's servers or "
                "need its grammar support; polyroute translates only 'function' tools to Chat Completions.",
                param=f"{path}.type",
            )
        for key, value in tool.items():
            if key not in _FUNCTION_TOOL_KEYS and value is not None:
                raise BadRequestError(f"{path}.{key} has no Chat Completions equivalent.", param=f"{path}.{key}")
        function: dict[str, Any] = {"name": require_string(tool, "name", path)}
        # `strict` is copied only when sent. The Responses API documents it as true by default, but forcing it on
        # would make OpenAI's chat endpoint refuse every schema that is not strict-compatible.
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        chat_tools.append({"type": "function", "function": function})
    return chat_tools


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "function" and isinstance(choice, dict):
        return {"type": "function", "function": {"name": require_string(choice, "name", "tool_choice")}}
    if kind == "allowed_tools" and isinstance(choice, dict):
        names = []
        for index, tool in enumerate(choice.get("tools") or []):
            path = f"tool_choice.tools[{index}]"
            if not isinstance(tool, dict) or tool.get("type") != "function":
                raise BadRequestError(f"{path}: only function tools can be allowed here.", param=path)
            names.append({"type": "function", "function": {"name": require_string(tool, "name", path)}})
        return {"type": "allowed_tools", "allowed_tools": {"mode": choice.get("mode", "auto"), "tools": names}}
    raise BadRequestError(
        f"'tool_choice' {choice!r} cannot be translated; use auto, none, required, a function or allowed_tools.",
        param="tool_choice",
    )


def _text(text: Any) -> dict[str, Any]:
    if not isinstance(text, dict):
        raise BadRequestError("'text' must be an object.", param="text")
    chat: dict[str, Any] = {}
    for key, value in text.items():
        if key == "verbosity" and value is not None:
            chat["verbosity"] = value
        elif key == "format" and value is not None:
            chat.update(_text_format(value))
        elif key not in ("verbosity", "format"):
            raise BadRequestError(f"'text.{key}' cannot be translated.", param=f"text.{key}")
    return chat


def _text_format(fmt: Any) -> dict[str, Any]:
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"response_format": {"type": "json_object"}}
    if kind == "json_schema" and isinstance(fmt, dict):
        schema: dict[str, Any] = {"name": require_string(fmt, "name", "text.format")}
        if not isinstance(fmt.get("schema"), dict):
            raise BadRequestError("'text.format.schema' must be a JSON Schema object.", param="text.format.schema")
        schema["schema"] = fmt["schema"]
        for key in ("description", "strict"):
            if fmt.get(key) is not None:
                schema[key] = fmt[key]
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    raise BadRequestError(f"'text.format.type' {kind!r} cannot be translated.", param="text.format.type")


def _reasoning(reasoning: Any) -> dict[str, Any]:
    if not isinstance(reasoning, dict):
        raise BadRequestError("'reasoning' must be an object.", param="reasoning")
    for key in ("mode", "context"):
        if reasoning.get(key) is not None:
            raise BadRequestError(f"'reasoning.{key}' has no Chat Completions equivalent.", param=f"reasoning.{key}")
    # `summary` / `generate_summary` only shape how reasoning is shown; Chat Completions has no such control.
    # They are accepted (Codex always sends them): whatever reasoning the backend returns is shown as a
    # reasoning item, and the values are echoed in the response.
    effort = reasoning.get("effort")
    return {} if effort is None else {"reasoning_effort": effort}
