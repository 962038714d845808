"""Deterministic native Anthropic Messages and OpenAI Responses bodies and SSE events of the simulated upstreams."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.demo.sim_replies import estimate_tokens, split_pieces, text_of


@dataclass(frozen=True, slots=True)
class NativeReply:
    """What the simulated model answers to one native request: text, or one tool call."""

    id: str
    model: str
    text: str
    tool: tuple[str, str, dict[str, Any]] | None  # (call id, tool name, input)
    input_tokens: int
    output_tokens: int


def native_reply(body: Mapping[str, Any], *, server: str, protocol: str, serial: int) -> NativeReply:
    """Echo the last user text; call the first tool when it asks to "call tool" (as the chat flavor does)."""
    items: Any = body.get("messages") if protocol == "messages" else body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    items = items if isinstance(items, list) else []
    chars = sum(len(text_of(i.get("content"))) for i in items if isinstance(i, dict))
    last = items[-1] if items and isinstance(items[-1], dict) else {}
    last_text = text_of(last.get("content")) if last.get("role") == "user" else ""
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("name"), str)]
    model = str(body.get("model"))
    prefix = "msg" if protocol == "messages" else "resp"
    reply_id = f"{prefix}_sim{serial:08x}"
    if tools and "call tool" in last_text.lower():
        schema = tools[0].get("input_schema" if protocol == "messages" else "parameters") or {}
        properties = schema.get("properties") if isinstance(schema, dict) else None
        arguments = {name: last_text[:100] for name in list(properties or {})[:1]}
        call_id = f"{'toolu' if protocol == 'messages' else 'call'}_sim{serial:08x}"
        tool = (call_id, str(tools[0]["name"]), arguments)
        return NativeReply(reply_id, model, "", tool, estimate_tokens(chars), len(arguments) + 5)
    text = f"[{server}] native {protocol} echo: {' '.join(last_text.split())[:200]}"
    return NativeReply(reply_id, model, text, None, estimate_tokens(chars), len(text.split()))


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# ---- Anthropic Messages ---------------------------------------------------------------------------------------


def _anthropic_usage(reply: NativeReply) -> dict[str, int]:
    return {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
            "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}


def _anthropic_block(reply: NativeReply) -> dict[str, Any]:
    if reply.tool is not None:
        call_id, name, arguments = reply.tool
        return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}
    return {"type": "text", "text": reply.text}


def message_body(reply: NativeReply) -> bytes:
    return orjson.dumps(
        {
            "id": reply.id,
            "type": "message",
            "role": "assistant",
            "model": reply.model,
            "content": [_anthropic_block(reply)],
            "stop_reason": "tool_use" if reply.tool else "end_turn",
            "stop_sequence": None,
            "usage": _anthropic_usage(reply),
        }
    )


def message_frames(reply: NativeReply, chunks: int) -> list[bytes]:
    start: dict[str, Any] = {
        "id": reply.id, "type": "message", "role": "assistant", "model": reply.model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {**_anthropic_usage(reply), "output_tokens": 1},
    }
    frames = [_event("message_start", {"type": "message_start", "message": start})]
    block = _anthropic_block(reply)
    opening = {**block, "input": {}} if reply.tool else {**block, "text": ""}
    frames.append(_event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": opening}))
    frames.append(_event("ping", {"type": "ping"}))
    if reply.tool is not None:
        deltas = [{"type": "input_json_delta", "partial_json": piece}
                  for piece in split_pieces(orjson.dumps(reply.tool[2]).decode(), chunks)]
    else:
        deltas = [{"type": "text_delta", "text": piece} for piece in split_pieces(reply.text, chunks)]
    frames += [_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas]
    frames.append(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    stop = {"stop_reason": "tool_use" if reply.tool else "end_turn", "stop_sequence": None}
    frames.append(_event("message_delta", {"type": "message_delta", "delta": stop,
                                           "usage": {"output_tokens": reply.output_tokens}}))
    frames.append(_event("message_stop", {"type": "message_stop"}))
    return frames


def message_error_frame(message: str) -> bytes:
    return _event("error", {"type": "error", "error": {"type": "api_error", "message": message}})


# ---- OpenAI Responses ---------------------------------------------------------------------------------------


def _responses_item(reply: NativeReply, done: bool) -> dict[str, Any]:
    status = "completed" if done else "in_progress"
    if reply.tool is not None:
        call_id, name, arguments = reply.tool
        return {"type": "function_call", "id": f"fc_{reply.id}", "call_id": call_id, "name": name,
                "arguments": orjson.dumps(arguments).decode() if done else "", "status": status}
    content = [{"type": "output_text", "text": reply.text, "annotations": []}] if done else []
    return {"type": "message", "id": f"msg_{reply.id}", "status": status, "role": "assistant", "content": content}


def _response(reply: NativeReply, done: bool) -> dict[str, Any]:
    return {
        "id": reply.id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed" if done else "in_progress",
        "model": reply.model,
        "output": [_responses_item(reply, True)] if done else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "error": None,
        "incomplete_details": None,
        "usage": {
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "total_tokens": reply.input_tokens + reply.output_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        } if done else None,
    }


def response_body(reply: NativeReply) -> bytes:
    return orjson.dumps(_response(reply, True))


def response_frames(reply: NativeReply, chunks: int) -> list[bytes]:
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": _response(reply, False)}),
        ("response.in_progress", {"response": _response(reply, False)}),
        ("response.output_item.added", {"output_index": 0, "item": _responses_item(reply, False)}),
    ]
    item_id = _responses_item(reply, False)["id"]
    if reply.tool is not None:
        arguments = orjson.dumps(reply.tool[2]).decode()
        events += [("response.function_call_arguments.delta", {"item_id": item_id, "output_index": 0, "delta": p})
                   for p in split_pieces(arguments, chunks)]
        events.append(("response.function_call_arguments.done",
                       {"item_id": item_id, "output_index": 0, "arguments": arguments}))
    else:
        where = {"item_id": item_id, "output_index": 0, "content_index": 0}
        part = {"type": "output_text", "text": "", "annotations": []}
        events.append(("response.content_part.added", {**where, "part": part}))
        events += [("response.output_text.delta", {**where, "delta": p}) for p in split_pieces(reply.text, chunks)]
        events.append(("response.output_text.done", {**where, "text": reply.text}))
        events.append(("response.content_part.done", {**where, "part": {**part, "text": reply.text}}))
    events.append(("response.output_item.done", {"output_index": 0, "item": _responses_item(reply, True)}))
    events.append(("response.completed", {"response": _response(reply, True)}))
    return [_event(name, {"type": name, **data, "sequence_number": n}) for n, (name, data) in enumerate(events)]


def response_error_frame(message: str, sequence_number: int) -> bytes:
    data = {"type": "error", "code": "server_error", "message": message, "param": None,
            "sequence_number": sequence_number}
    return _event("error", data)
