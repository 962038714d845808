"""Anthropic Messages request -> Chat Completions request; whatever has no Chat equivalent is a 400 naming it."""

from __future__ import annotations

from typing import Any

import orjson

from gateway.errors import BadRequestError
from gateway.policy.table import Thinking

# Every top-level key of a Messages request that is translated below.
KNOWN_KEYS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
    }
)
# Messages parameters that only Anthropic's own servers can honour: refused by name, never dropped. Any key the
# Messages API does not define (`enable_thinking`, vLLM's `chat_template_kwargs`, ...) is a Chat extra for the
# target and is passed through, as on /v1/chat/completions.
UNTRANSLATABLE_KEYS = {
    "cache_control": "automatic prompt caching is configured per block on Chat targets (send it on blocks)",
    "container": "code-execution containers run on Anthropic's servers",
    "context_management": "server-side context editing has no Chat Completions equivalent",
    "mcp_servers": "MCP connectors run on Anthropic's servers",
    "service_tier": "service tiers are Anthropic's",
    "inference_geo": "inference geography is Anthropic's (use a policy rule on jurisdiction instead)",
    "speed": "speed modes are Anthropic's",
    "diagnostics": "diagnostics are Anthropic's",
    "workspace_id": "workspaces are Anthropic's",
    "user_profile_id": "user profiles are Anthropic's",
    "modalities": "a Messages reply cannot carry audio output (ask /v1/chat/completions for it)",
    "audio": "a Messages reply cannot carry audio output (ask /v1/chat/completions for it)",
}
_CHAT_NAMES = {"messages", "max_tokens", "stop", "tool_choice", "tools", "user", "response_format"}
TOOL_ERROR_PREFIX = "[tool error] "  # Chat has no `is_error`: a failed tool's result says so in its text
_CUSTOM_TOOL_KEYS = frozenset({"name", "description", "input_schema", "type", "cache_control"})

# The keys each kind of block may have (a block with any other cannot be translated).
_TEXT_KEYS = frozenset({"type", "text", "cache_control"})
_IMAGE_KEYS = frozenset({"type", "source", "cache_control"})
_MESSAGE_KEYS = frozenset({"role", "content"})
_TOOL_RESULT_KEYS = frozenset({"type", "tool_use_id", "content", "is_error", "cache_control"})
_THINKING_KEYS = frozenset({"type", "thinking", "signature"})
_TOOL_USE_KEYS = frozenset({"type", "id", "name", "input", "cache_control"})


def messages_to_chat(body: dict[str, Any], *, require_max_tokens: bool = True) -> dict[str, Any]:
    """The Chat Completions body that asks the same of a Chat-only target (`count_tokens` has no max_tokens)."""
    for key in body:
        if key in UNTRANSLATABLE_KEYS:
            raise BadRequestError(
                f"'{key}' cannot be translated for a target that speaks only Chat Completions: "
                f"{UNTRANSLATABLE_KEYS[key]}.",
                param=key,
            )
    chat: dict[str, Any] = {
        key: value for key, value in body.items() if key not in KNOWN_KEYS and key not in _CHAT_NAMES
    }
    clashing = sorted((body.keys() - KNOWN_KEYS) & _CHAT_NAMES)
    if clashing:
        raise BadRequestError(
            f"'{clashing[0]}' is a Chat Completions parameter; Messages has its own.", param=clashing[0]
        )
    chat["model"] = body.get("model")
    max_tokens = body.get("max_tokens")
    if max_tokens is None and require_max_tokens:
        raise BadRequestError("max_tokens: Field required", param="max_tokens")
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise BadRequestError("max_tokens: must be a positive integer.", param="max_tokens")
        chat["max_tokens"] = max_tokens
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise BadRequestError("messages: must be a non-empty array.", param="messages")
    messages = _system(body.get("system"))
    for index, message in enumerate(raw_messages):
        messages += _message(message, f"messages[{index}]")
    chat["messages"] = messages
    for key in ("temperature", "top_p", "top_k", "stream"):
        if key in body:
            chat[key] = body[key]
    if "stop_sequences" in body:
        stops = body["stop_sequences"]
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise BadRequestError("stop_sequences: must be an array of strings.", param="stop_sequences")
        chat["stop"] = stops
    if body.get("metadata") is not None:
        _metadata(body["metadata"], chat)
    if body.get("tools") is not None:
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], chat)
    if body.get("thinking") is not None:
        _thinking(body["thinking"], chat)
    if body.get("output_config") is not None:
        _output_config(body["output_config"], chat)
    return chat


def _system(system: Any) -> list[dict[str, Any]]:
    if system is None:
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if not isinstance(system, list):
        raise BadRequestError("system: must be a string or an array of text blocks.", param="system")
    parts = []
    for index, block in enumerate(system):
        where = f"system[{index}]"
        if not isinstance(block, dict) or block.get("type") != "text":
            raise BadRequestError(f"{where}: only text blocks can be translated in a system prompt.", param=where)
        parts.append(_text_part(block, where))
    return [{"role": "system", "content": parts}]


def _text_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    text = block.get("text")
    if not isinstance(text, str):
        raise BadRequestError(f"{where}.text: must be a string.", param=f"{where}.text")
    _only(block, _TEXT_KEYS, where)
    part: dict[str, Any] = {"type": "text", "text": text}
    if "cache_control" in block:
        part["cache_control"] = block["cache_control"]  # Model Studio's explicit cache reads the same marker
    return part


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    _only(block, _IMAGE_KEYS, where)
    source = block.get("source")
    if not isinstance(source, dict):
        raise BadRequestError(f"{where}.source: must be an object.", param=f"{where}.source")
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise BadRequestError(
            f"{where}.source: only base64 and url images can be translated.", param=f"{where}.source.type"
        )
    part: dict[str, Any] = {"type": "image_url", "image_url": {"url": url}}
    if "cache_control" in block:
        part["cache_control"] = block["cache_control"]
    return part


def _only(block: dict[str, Any], allowed: set[str] | frozenset[str], where: str) -> None:
    if block.keys() <= allowed:  # the usual case, checked in C; the message below is built only for a refusal
        return
    extra = sorted(key for key in block if key not in allowed)
    if extra:
        raise BadRequestError(
            f"{where}.{extra[0]}: cannot be translated for a Chat Completions target.", param=f"{where}.{extra[0]}"
        )


def _blocks(content: Any, where: str) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise BadRequestError(f"{where}.content: must be a string or an array of blocks.", param=f"{where}.content")
    return content


def _message(message: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(message, dict):
        raise BadRequestError(f"{where}: must be an object.", param=where)
    _only(message, _MESSAGE_KEYS, where)
    role = message.get("role")
    content = message.get("content")
    if isinstance(content, str):  # the usual turn of a long history: one text, nothing to check block by block
        if role == "user":
            return [{"role": "user", "content": content}]
        if role == "assistant":
            return [{"role": "assistant", "content": content}]
    if role == "user":
        return _user(_blocks(message.get("content"), where), where)
    if role == "assistant":
        return [_assistant(_blocks(message.get("content"), where), where)]
    raise BadRequestError(f"{where}.role: must be 'user' or 'assistant'.", param=f"{where}.role")


def _user(blocks: list[Any], where: str) -> list[dict[str, Any]]:
    """Tool results become `tool` messages (first, as Chat wants them right after the calls); the rest one user turn."""
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(blocks):
        at = f"{where}.content[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(_text_part(block, at))
        elif kind == "image":
            parts.append(_image_part(block, at))
        elif kind == "tool_result":
            tool_messages.append(_tool_result(block, at))
        else:
            raise BadRequestError(
                f"{at}: a '{kind}' block cannot be translated for a Chat Completions target.", param=f"{at}.type"
            )
    out = tool_messages
    if parts:
        simple = all(p["type"] == "text" and "cache_control" not in p for p in parts)
        content: Any = "\n".join(p["text"] for p in parts) if simple and len(parts) == 1 else parts
        out.append({"role": "user", "content": content})
    return out


def _tool_result(block: dict[str, Any], where: str) -> dict[str, Any]:
    _only(block, _TOOL_RESULT_KEYS, where)
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise BadRequestError(f"{where}.tool_use_id: required.", param=f"{where}.tool_use_id")
    content = block.get("content", "")
    texts: list[str] = []
    for index, part in enumerate(_blocks(content, where)):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise BadRequestError(
                f"{where}.content[{index}]: only text can be translated in a tool result "
                "(Chat Completions tool messages carry no images or documents).",
                param=f"{where}.content[{index}]",
            )
        texts.append(part["text"])
    text = "\n".join(texts)
    if block.get("is_error") is True:
        text = TOOL_ERROR_PREFIX + text
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _assistant(blocks: list[Any], where: str) -> dict[str, Any]:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(blocks):
        at = f"{where}.content[{index}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(_text_part(block, at)["text"])
        elif kind == "thinking":
            # The signature only Anthropic can check; the reasoning itself is what a Chat target reads back.
            _only(block, _THINKING_KEYS, at)
            reasoning.append(str(block.get("thinking", "")))
        elif kind == "tool_use":
            _only(block, _TOOL_USE_KEYS, at)
            if not isinstance(block.get("input"), dict):
                raise BadRequestError(f"{at}.input: must be an object.", param=f"{at}.input")
            arguments = orjson.dumps(block["input"]).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        else:
            raise BadRequestError(
                f"{at}: a '{kind}' block cannot be translated for a Chat Completions target.", param=f"{at}.type"
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise BadRequestError("tools: must be an array.", param="tools")
    out = []
    for index, tool in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise BadRequestError(f"{where}: must be an object.", param=where)
        kind = tool.get("type", "custom")
        if kind != "custom":
            raise BadRequestError(
                f"{where}: the server tool '{kind}' runs only on Anthropic's servers and cannot be translated "
                "for a Chat Completions target.",
                param=f"{where}.type",
            )
        _only(tool, _CUSTOM_TOOL_KEYS, where)
        if not isinstance(tool.get("name"), str) or not isinstance(tool.get("input_schema"), dict):
            raise BadRequestError(f"{where}: needs a name and an input_schema object.", param=where)
        function: dict[str, Any] = {"name": tool["name"], "parameters": tool["input_schema"]}
        if "description" in tool:
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _tool_choice(choice: Any, chat: dict[str, Any]) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool" and isinstance(choice.get("name"), str):
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise BadRequestError("tool_choice: must be auto, any, tool (with a name) or none.", param="tool_choice")
    assert isinstance(choice, dict)
    _only(choice, {"type", "name", "disable_parallel_tool_use"}, "tool_choice")
    if choice.get("disable_parallel_tool_use") is True:
        chat["parallel_tool_calls"] = False


def _metadata(metadata: Any, chat: dict[str, Any]) -> None:
    """`user_id` is Chat's `user`; other keys (polyroute's routing hints) stay in `metadata`."""
    if not isinstance(metadata, dict):
        raise BadRequestError("metadata: must be an object.", param="metadata")
    rest = {key: value for key, value in metadata.items() if key != "user_id"}
    if metadata.get("user_id") is not None:
        chat["user"] = metadata["user_id"]
    if rest:
        chat["metadata"] = rest


def _thinking(thinking: Any, chat: dict[str, Any]) -> None:
    """Extended thinking is Qwen's `enable_thinking` (with `thinking_budget`), as Model Studio and Qwen servers read."""
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        chat["enable_thinking"] = False
    elif kind in ("enabled", "adaptive"):
        chat["enable_thinking"] = True
        budget = thinking.get("budget_tokens")
        if isinstance(budget, int) and not isinstance(budget, bool):
            chat["thinking_budget"] = budget
    else:
        raise BadRequestError("thinking.type: must be enabled, adaptive or disabled.", param="thinking.type")


def fit_thinking(chat: dict[str, Any], rules: Thinking, *, stream: bool) -> dict[str, Any]:
    """The translated body adjusted to what one deployment's model accepts (its `thinking:` policy block).

    Model Studio answers 400 to `enable_thinking: true` on a non-stream call of a model that thinks only when
    streamed, and to a `thinking_budget` above the model's maximum; hybrid Qwen 3.5/3.6 models think unless sent
    `enable_thinking: false`, while a Messages request without `thinking` asks for none; and qwen3.6 reads earlier
    turns' `reasoning_content` only with `preserve_thinking: true`. Sources: the deep-thinking page
    https://www.alibabacloud.com/help/en/model-studio/deep-thinking and the error codes
    https://help.aliyun.com/en/model-studio/error-code ("parameter.enable_thinking must be set to false for
    non-streaming calls", "The thinking_budget parameter must be a positive integer and not greater than xxx").
    """
    out = dict(chat)
    thinking = out.get("enable_thinking")
    if thinking is None and rules.default_on:
        thinking = out["enable_thinking"] = False
    if thinking is True and rules.stream_only and not stream:
        # Answered without thinking rather than refused: the service would refuse the call outright.
        thinking = out["enable_thinking"] = False
    if thinking is False:
        out.pop("thinking_budget", None)
    budget = out.get("thinking_budget")
    if rules.max_budget is not None and isinstance(budget, int) and budget > rules.max_budget:
        out["thinking_budget"] = rules.max_budget
    if rules.preserve and thinking is True and any(
        isinstance(m, dict) and m.get("reasoning_content") for m in out.get("messages") or ()
    ):
        out["preserve_thinking"] = True
    return out


def _output_config(config: Any, chat: dict[str, Any]) -> None:
    """`effort` is Chat's `reasoning_effort`; a JSON-schema `format` is Chat's `response_format`."""
    if not isinstance(config, dict):
        raise BadRequestError("output_config: must be an object.", param="output_config")
    _only(config, {"effort", "format"}, "output_config")
    if config.get("effort") is not None:
        chat["reasoning_effort"] = config["effort"]
    fmt = config.get("format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
            raise BadRequestError(
                "output_config.format: only a json_schema format can be translated.", param="output_config.format"
            )
        _only(fmt, {"type", "schema"}, "output_config.format")
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": fmt["schema"], "strict": True},
        }
