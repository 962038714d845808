"""Chat Completions replies and streams as Anthropic Messages replies and events; errors in Anthropic's shape."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import (
    AllTargetsFailedError,
    AttemptFailure,
    AuthenticationError,
    ErrorClass,
    LimitExceededError,
    UpstreamError,
)
from gateway.protocols.messages_reply import MessagesStreamTranslator, chat_to_message, error_body

REQUEST: dict[str, Any] = {"model": "coder", "max_tokens": 10, "stop_sequences": ["END"], "messages": []}
USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "prompt_tokens_details": {"cached_tokens": 100}}


def test_reply_with_reasoning_text_and_tool_calls() -> None:
    chat = {
        "model": "qwen3.6-plus",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Let me look.", "reasoning_content": "need the file",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "Read", "arguments": '{"p":"a"}'}}],
        }}],
        "usage": USAGE,
    }
    message = chat_to_message(chat, request=REQUEST, message_id="msg_1")
    assert message["content"] == [
        {"type": "thinking", "thinking": "need the file", "signature": ""},
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "c1", "name": "Read", "input": {"p": "a"}},
    ]
    assert (message["id"], message["model"], message["stop_reason"]) == ("msg_1", "qwen3.6-plus", "tool_use")
    # Anthropic counts cache reads apart from input tokens; Chat counts them inside prompt_tokens.
    assert message["usage"] == {"input_tokens": 20, "output_tokens": 30, "cache_read_input_tokens": 100,
                                "cache_creation_input_tokens": 0}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"finish_reason": "stop"}, ("end_turn", None)),
        ({"finish_reason": "length"}, ("max_tokens", None)),
        ({"finish_reason": "stop", "stop_reason": "END"}, ("stop_sequence", "END")),  # vLLM names the match
        ({"finish_reason": "content_filter"}, ("refusal", None)),
    ],
)
def test_stop_reasons(choice: dict[str, Any], expected: tuple[str, str | None]) -> None:
    chat = {"choices": [{"index": 0, "message": {"content": "x"}, **choice}]}
    message = chat_to_message(chat, request=REQUEST, message_id="m")
    assert (message["stop_reason"], message["stop_sequence"]) == expected


def test_tool_arguments_that_are_not_json_fail_the_attempt() -> None:
    chat = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "tool_calls": [{"id": "c", "function": {"name": "Read", "arguments": "{not json"}}]}}]}
    with pytest.raises(UpstreamError):
        chat_to_message(chat, request=REQUEST, message_id="m")


def events(wire: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for raw in wire:
        name, data = raw.decode().strip().split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        out.append((name[7:], orjson.loads(data[6:])))
    return out


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_stream_event_sequence_with_thinking_text_and_two_tool_calls() -> None:
    translator = MessagesStreamTranslator(request=REQUEST, message_id="msg_s", model="qwen3.6-plus")
    wire = translator.start()
    for piece in (
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "think"}),
        chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "Read", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"p":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"a"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "Bash", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
        {"choices": [], "usage": USAGE},
    ):
        wire += translator.feed(piece)
    wire += translator.finish()
    seen = events(wire)
    assert [name for name, _ in seen] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_stop",  # thinking
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",  # text
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",  # Read
        "content_block_start", "content_block_delta", "content_block_stop",  # Bash
        "message_delta", "message_stop",
    ]
    starts = [data for name, data in seen if name == "content_block_start"]
    assert [s["index"] for s in starts] == [0, 1, 2, 3]
    assert starts[2]["content_block"] == {"type": "tool_use", "id": "c1", "name": "Read", "input": {}}
    partial = [d["delta"]["partial_json"] for n, d in seen if n == "content_block_delta" and d["index"] == 2]
    assert "".join(partial) == '{"p":"a"}'
    delta = seen[-2][1]
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"]["input_tokens"] == 20 and delta["usage"]["cache_read_input_tokens"] == 100


def test_stream_failure_is_an_error_event() -> None:
    translator = MessagesStreamTranslator(request=REQUEST, message_id="m", model="x")
    [(name, data)] = events(translator.fail("upstream broke", "api_error"))
    assert (name, data) == ("error", {"type": "error", "error": {"type": "api_error", "message": "upstream broke"}})


@pytest.mark.parametrize(
    ("err", "kind"),
    [
        (AuthenticationError("bad key"), "authentication_error"),
        (LimitExceededError("slow down", retry_after=3), "rate_limit_error"),
        (AllTargetsFailedError([AttemptFailure("a", ErrorClass.SERVER_ERROR, "boom", 500)]), "api_error"),
        (AllTargetsFailedError([]), "overloaded_error"),  # nothing could be tried: 503
    ],
)
def test_error_bodies(err: Exception, kind: str) -> None:
    assert isinstance(err, AuthenticationError | LimitExceededError | AllTargetsFailedError)
    assert orjson.loads(error_body(err)) == {"type": "error", "error": {"type": kind, "message": err.message}}
