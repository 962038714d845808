"""Responses `instructions` and `input` items translated to Chat Completions messages."""

from __future__ import annotations

from typing import Any

from gateway.errors import BadRequestError

STATELESS = (
    "polyroute does not store responses or conversations: it translates each Responses request to Chat "
    "Completions on its own, so send the whole conversation in 'input' (with 'store' false or omitted)."
)

_IMAGE_DETAILS = ("auto", "low", "high")


def input_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise BadRequestError("'instructions' must be a string.", param="instructions")
        if instructions:
            messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    elif isinstance(items, list):
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise BadRequestError("Each input item must be an object.", param=f"input[{index}]")
            _add_item(messages, item, f"input[{index}]")
    elif items is None:
        raise BadRequestError(f"Missing required parameter: 'input'. {STATELESS}", param="input")
    else:
        raise BadRequestError("'input' must be a string or an array of items.", param="input")
    if not messages:
        raise BadRequestError("'input' has no message to send.", param="input")
    return messages


def _add_item(messages: list[dict[str, Any]], item: dict[str, Any], path: str) -> None:
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        messages.append(_message(item, path))
    elif kind == "function_call":
        call = _tool_call(item, path)
        last = messages[-1] if messages else None
        # One chat assistant turn carries its text and all its tool calls; the Responses API lists them as
        # separate items, so they are merged back into the assistant message they follow.
        if last is not None and last["role"] == "assistant":
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        messages.append(
            {"role": "tool", "tool_call_id": require_string(item, "call_id", path), "content": _tool_output(item, path)}
        )
    elif kind == "reasoning":
        # Skipped on purpose. Chat Completions has no portable field to send earlier reasoning back (OpenAI's
        # chat endpoint refuses unknown message fields), open-weight chat templates (Qwen3, DeepSeek-R1) drop
        # earlier turns' reasoning anyway, and `encrypted_content` can be read only by OpenAI. Codex sends these
        # items back on every turn, so refusing them would make the endpoint unusable for it. The model still
        # sees every message, tool call and tool result of the conversation.
        return
    elif kind == "item_reference":
        raise BadRequestError(f"{path}: 'item_reference' points to a stored item. {STATELESS}", param=path)
    else:
        raise BadRequestError(
            f"{path}.type {kind!r} cannot be translated to Chat Completions; polyroute translates 'message', "
            "'function_call', 'function_call_output' and 'reasoning' items.",
            param=f"{path}.type",
        )


def _message(item: dict[str, Any], path: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise BadRequestError(
            f"{path}.role {role!r} is not one of user, assistant, system, developer.", param=f"{path}.role"
        )
    # `developer` becomes `system`: OpenAI treats the two alike on Chat Completions, while vLLM, SGLang, Ollama
    # and most chat templates know only `system`.
    chat_role = "system" if role == "developer" else role
    content = item.get("content")
    if isinstance(content, str):
        return {"role": chat_role, "content": content}
    if not isinstance(content, list):
        raise BadRequestError(f"{path}.content must be a string or an array of parts.", param=f"{path}.content")
    parts: list[dict[str, Any]] = []
    refusal: str | None = None
    for index, part in enumerate(content):
        part_path = f"{path}.content[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": require_string(part, "text", part_path)})
        elif kind == "refusal" and chat_role == "assistant":
            refusal = require_string(part, "refusal", part_path)
        elif kind in ("input_image", "input_file") and chat_role == "user":
            parts.append(_image_part(part, part_path) if kind == "input_image" else _file_part(part, part_path))
        elif kind in ("input_image", "input_file"):
            raise BadRequestError(
                f"{part_path}: Chat Completions accepts {kind} only in user messages, not {role}.", param=part_path
            )
        else:
            raise BadRequestError(f"{part_path}.type {kind!r} cannot be translated.", param=f"{part_path}.type")
    message: dict[str, Any] = {"role": chat_role, "content": _collapse(parts)}
    if refusal is not None:
        message["refusal"] = refusal
    return message


def _collapse(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    """A lone text part as a plain string: several servers accept only strings for system and assistant."""
    if not parts:
        return None
    if len(parts) == 1 and parts[0]["type"] == "text":
        text: str = parts[0]["text"]
        return text
    return parts


def _image_part(part: dict[str, Any], path: str) -> dict[str, Any]:
    if part.get("file_id") is not None:
        raise BadRequestError(
            f"{path}.file_id refers to a file uploaded to OpenAI, which polyroute cannot read; send the image as "
            "'image_url' (an https URL or a base64 data URL).",
            param=f"{path}.file_id",
        )
    url = require_string(part, "image_url", path)
    image: dict[str, Any] = {"url": url}
    detail = part.get("detail")
    if detail is not None:
        if detail not in _IMAGE_DETAILS:
            raise BadRequestError(
                f"{path}.detail {detail!r} has no Chat Completions equivalent (auto, low, high).",
                param=f"{path}.detail",
            )
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _file_part(part: dict[str, Any], path: str) -> dict[str, Any]:
    for key in ("file_id", "file_url"):
        if part.get(key) is not None:
            raise BadRequestError(
                f"{path}.{key} cannot be translated: Chat Completions takes a file only inline; send 'file_data' "
                "(a base64 data URL) with 'filename'.",
                param=f"{path}.{key}",
            )
    file: dict[str, Any] = {"file_data": require_string(part, "file_data", path)}
    if part.get("filename") is not None:
        file["filename"] = part["filename"]
    return {"type": "file", "file": file}


def _tool_call(item: dict[str, Any], path: str) -> dict[str, Any]:
    if item.get("namespace") is not None:
        raise BadRequestError(f"{path}.namespace: namespaced tools cannot be translated.", param=f"{path}.namespace")
    return {
        "id": require_string(item, "call_id", path),
        "type": "function",
        "function": {"name": require_string(item, "name", path), "arguments": require_string(item, "arguments", path)},
    }


def _tool_output(item: dict[str, Any], path: str) -> str | list[dict[str, Any]]:
    output = item.get("output")
    if isinstance(output, str):
        return output
    if not isinstance(output, list):
        raise BadRequestError(f"{path}.output must be a string or an array of parts.", param=f"{path}.output")
    texts: list[dict[str, Any]] = []
    for index, part in enumerate(output):
        part_path = f"{path}.output[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text"):
            raise BadRequestError(
                f"{part_path}.type {kind!r} cannot be translated: a Chat Completions tool message carries text only.",
                param=f"{part_path}.type",
            )
        texts.append({"type": "text", "text": require_string(part, "text", part_path)})
    collapsed = _collapse(texts)
    return "" if collapsed is None else collapsed


def require_string(obj: dict[str, Any], key: str, path: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise BadRequestError(f"{path}.{key} must be a string.", param=f"{path}.{key}")
    return value
