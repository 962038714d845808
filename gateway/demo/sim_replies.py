"""Deterministic bodies of the simulated upstreams: what the model says, token counts, JSON and SSE bytes."""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

FINGERPRINT = "polyroute-simulated"
DONE_FRAME = b"data: [DONE]\n\n"
ECHO_LIMIT = 200
EMBEDDING_DIMENSIONS = 8
_MAX_DIMENSIONS = 4096

CHAT_KEYS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "n",
        "stop",
        "max_tokens",
        "max_completion_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "user",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "seed",
        "functions",
        "function_call",
        "modalities",
        "audio",
        "prediction",
        "store",
        "metadata",
        "service_tier",
        "reasoning_effort",
        "web_search_options",
        "verbosity",
        "prompt_cache_key",
        "safety_identifier",
    }
)
COMPLETION_KEYS = frozenset(
    {
        "model",
        "prompt",
        "suffix",
        "max_tokens",
        "temperature",
        "top_p",
        "n",
        "stream",
        "stream_options",
        "logprobs",
        "echo",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "best_of",
        "logit_bias",
        "user",
        "seed",
    }
)
EMBEDDING_KEYS = frozenset(
    {
        "model",
        "input",
        "encoding_format",
        "dimensions",
        "user",
    }
)


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON object, as OpenAI sends it


@dataclass(frozen=True, slots=True)
class Reply:
    """What the simulated model answers to one chat or completion request."""

    text: str
    reasoning: str
    tool_call: ToolCall | None
    prompt_tokens: int
    completion_tokens: int
    cache_written: int = 0  # tokens up to the last `cache_control` marker: an explicit cache created


@dataclass(frozen=True, slots=True)
class Envelope:
    """The fields every body and chunk of one response repeats."""

    id: str
    object: str
    created: int
    model: str
    extra: tuple[str, ...]  # top-level request keys outside the OpenAI spec, echoed as x_received_extra
    cached_tokens: bool  # Model Studio style usage details

    def fields(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
        }

    def usage(self, reply: Reply) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        }
        if self.cached_tokens and reply.cache_written:
            # Model Studio's explicit cache (exclusive with the implicit one) reports what it wrote; the field names
            # as its replies carry them (Model Studio's context-cache page; litellm's dashscope usage tests).
            usage["prompt_tokens_details"] = {
                "cached_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": reply.cache_written},
                "cache_creation_input_tokens": reply.cache_written,
                "cache_type": "ephemeral",
            }
        elif self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": reply.prompt_tokens // 2}
        if self.cached_tokens and reply.reasoning:
            usage["completion_tokens_details"] = {"reasoning_tokens": len(reply.reasoning.split())}
        return usage


def extra_keys(body: Mapping[str, Any], known: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(key for key in body if key not in known))


def text_of(content: Any) -> str:
    """The text of a message `content`: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def estimate_tokens(chars: int) -> int:
    return max(1, chars // 4)


def split_pieces(text: str, n: int) -> list[str]:
    """`text` cut into `n` consecutive pieces (fewer if it is shorter), like a tokenizer would stream it."""
    n = max(1, min(n, len(text)))
    size = len(text)
    return [text[i * size // n : (i + 1) * size // n] for i in range(n)]


def _echo(server: str, text: str) -> str:
    text = " ".join(text.split())
    if len(text) > ECHO_LIMIT:
        text = text[:ECHO_LIMIT] + "..."
    return f"[{server}] echo: {text}"


def _tool_call(body: Mapping[str, Any], user_text: str, call_id: str) -> ToolCall | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none" or "call tool" not in user_text.lower():
        return None
    functions = [t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    if not functions:
        return None
    chosen = functions[0]
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        wanted = choice["function"].get("name")
        chosen = next((f for f in functions if f.get("name") == wanted), chosen)
    parameters = chosen.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    arguments: dict[str, Any] = {}
    if isinstance(properties, dict):
        for prop, schema in list(properties.items())[:8]:
            kind = schema.get("type") if isinstance(schema, dict) else None
            samples: dict[Any, Any] = {"integer": 1, "number": 1, "boolean": True, "array": [], "object": {}}
            arguments[prop] = samples.get(kind, user_text[:100])
    return ToolCall(id=call_id, name=str(chosen.get("name", "tool")), arguments=orjson.dumps(arguments).decode())


def chat_reply(body: Mapping[str, Any], *, server: str, thinking: bool, call_id: str) -> Reply:
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    chars = cached_chars = 0
    user_text = ""
    for message in messages:
        if isinstance(message, dict):
            text = text_of(message.get("content"))
            chars += len(text)
            if _marks_cache(message.get("content")):
                cached_chars = chars
            if message.get("role") == "user":
                user_text = text
    # A tool is called only on a user turn; after the tool's result (a `tool` turn) the model answers with it.
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    tool_call = _tool_call(body, user_text, call_id) if last.get("role") == "user" else None
    reasoning = ""
    if thinking:
        reasoning = f"The user asked {server} something; the simulated answer is an echo."
    answered = f"tool {last.get('tool_call_id')} said: {text_of(last.get('content'))}"
    text = "" if tool_call else _echo(server, answered if last.get("role") == "tool" else user_text)
    words = len(tool_call.arguments.split()) if tool_call else len(text.split())
    written = estimate_tokens(cached_chars) if cached_chars else 0
    return Reply(text, reasoning, tool_call, estimate_tokens(chars), words + len(reasoning.split()), written)


def _marks_cache(content: Any) -> bool:
    return isinstance(content, list) and any(isinstance(p, dict) and "cache_control" in p for p in content)


def completion_reply(body: Mapping[str, Any], *, server: str) -> Reply:
    prompt = body.get("prompt")
    items: list[Any] = prompt if isinstance(prompt, list) else [prompt]
    if items and all(isinstance(item, int) for item in items):
        items = [items]
    tokens = 0
    last = ""
    for item in items:
        if isinstance(item, list):
            tokens += len(item)
            last = " ".join(str(token) for token in item)
        elif isinstance(item, str):
            tokens += estimate_tokens(len(item))
            last = item
    text = _echo(server, last)
    return Reply(text, "", None, max(1, tokens), len(text.split()))


def chat_body(env: Envelope, reply: Reply, *, with_usage: bool) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    finish = "stop"
    if reply.tool_call is not None:
        call = reply.tool_call
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        ]
        finish = "tool_calls"
    body = env.fields()
    body["choices"] = [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}]
    if with_usage:
        body["usage"] = env.usage(reply)
    body["x_received_extra"] = env.extra
    return orjson.dumps(body)


def completion_body(env: Envelope, reply: Reply, *, with_usage: bool) -> bytes:
    body = env.fields()
    body["choices"] = [{"text": reply.text, "index": 0, "logprobs": None, "finish_reason": "stop"}]
    if with_usage:
        body["usage"] = env.usage(reply)
    body["x_received_extra"] = env.extra
    return orjson.dumps(body)


class FrameWriter:
    """SSE frames of one streamed response, built from pre-serialized head and tail bytes."""

    def __init__(self, env: Envelope) -> None:
        self._env = env
        self._head = b"data: " + orjson.dumps(env.fields())[:-1] + b',"choices":['

    def frame(self, choice: Mapping[str, Any], *, extra: bool = False) -> bytes:
        tail = b"]}\n\n"
        if extra:
            tail = b'],"x_received_extra":' + orjson.dumps(self._env.extra) + b"}\n\n"
        return self._head + orjson.dumps(choice) + tail

    def usage_frame(self, reply: Reply) -> bytes:
        return self.usage_chunk(self._env.usage(reply))

    def usage_chunk(self, usage: Mapping[str, Any]) -> bytes:
        """The final `choices: []` chunk carrying `usage`."""
        return self._head + b'],"usage":' + orjson.dumps(usage) + b"}\n\n"


def _delta(delta: Mapping[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def chat_frames(writer: FrameWriter, reply: Reply, chunks: int) -> list[bytes]:
    """Role frame, reasoning frames, content (or tool-call) frames, finish frame; no usage, no [DONE]."""
    frames = [writer.frame(_delta({"role": "assistant", "content": ""}), extra=True)]
    if reply.reasoning:
        frames += [
            writer.frame(_delta({"content": None, "reasoning_content": piece}))
            for piece in split_pieces(reply.reasoning, chunks)
        ]
    finish = "stop"
    if reply.tool_call is not None:
        call = reply.tool_call
        opening = {"index": 0, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        frames.append(writer.frame(_delta({"tool_calls": [opening]})))
        frames += [
            writer.frame(_delta({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
            for piece in split_pieces(call.arguments, chunks)
        ]
        finish = "tool_calls"
    else:
        frames += [writer.frame(_delta({"content": piece})) for piece in split_pieces(reply.text, chunks)]
    frames.append(writer.frame(_delta({}, finish)))
    return frames


def completion_frames(writer: FrameWriter, reply: Reply, chunks: int) -> list[bytes]:
    pieces = split_pieces(reply.text, chunks)
    frames = [
        writer.frame({"text": piece, "index": 0, "logprobs": None, "finish_reason": None}, extra=index == 0)
        for index, piece in enumerate(pieces)
    ]
    frames.append(writer.frame({"text": "", "index": 0, "logprobs": None, "finish_reason": "stop"}))
    return frames


def embedding_inputs(value: Any) -> list[tuple[bytes, int]]:
    """Each input as (bytes to hash, prompt tokens); accepts a string, strings, a token array or token arrays."""
    items: list[Any] = value if isinstance(value, list) else [value]
    if items and all(isinstance(item, int) for item in items):
        items = [items]
    inputs: list[tuple[bytes, int]] = []
    for item in items:
        if isinstance(item, list):
            inputs.append((orjson.dumps(item), max(1, len(item))))
        else:
            text = str(item)
            inputs.append((text.encode(), estimate_tokens(len(text))))
    return inputs


def embedding_vector(data: bytes, dimensions: int) -> bytes:
    """A unit vector of little-endian float32 derived from a hash of the input."""
    raw = hashlib.shake_256(data).digest(4 * dimensions)
    values = [word / 2**31 - 1.0 for word in struct.unpack(f"<{dimensions}I", raw)]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return struct.pack(f"<{dimensions}f", *(v / norm for v in values))


def embeddings_body(model: str, body: Mapping[str, Any], extra: Sequence[str]) -> bytes:
    dimensions = body.get("dimensions")
    if not isinstance(dimensions, int) or not 1 <= dimensions <= _MAX_DIMENSIONS:
        dimensions = EMBEDDING_DIMENSIONS
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    tokens = 0
    for index, (raw, count) in enumerate(embedding_inputs(body.get("input"))):
        tokens += count
        packed = embedding_vector(raw, dimensions)
        vector: Any = base64.b64encode(packed).decode() if as_base64 else struct.unpack(f"<{dimensions}f", packed)
        data.append({"object": "embedding", "index": index, "embedding": vector})
    return orjson.dumps(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "system_fingerprint": FINGERPRINT,
            "x_received_extra": extra,
        }
    )
