"""Chat Completions replies and streams as Anthropic Messages replies and events; errors in Anthropic's shape."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.error_classes import AttemptFailure, ErrorClass
from gateway.errors import (
    AllTargetsFailedError,
    AuthenticationError,
    LimitExceededError,
    PolyrouteError,
    RequestTooLargeError,
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


def test_stream_usage_is_the_estimate_when_the_upstream_reports_none() -> None:
    estimate = {"prompt_tokens": 31, "completion_tokens": 5, "total_tokens": 36}
    translator = MessagesStreamTranslator(request=REQUEST, message_id="m", model="x")
    translator.feed({"choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": "stop"}]})
    delta = dict(events(translator.finish(estimate)))["message_delta"]
    assert delta["usage"] == {"input_tokens": 31, "output_tokens": 5, "cache_read_input_tokens": 0,
                              "cache_creation_input_tokens": 0}
    reported = MessagesStreamTranslator(request=REQUEST, message_id="m", model="x")
    reported.feed({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
    assert dict(events(reported.finish(estimate)))["message_delta"]["usage"]["output_tokens"] == 3  # upstream's wins


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
        (RequestTooLargeError("the body is over 10 MiB"), "request_too_large"),
        (PolyrouteError("unexpected"), "api_error"),
    ],
)
def test_error_bodies(err: Exception, kind: str) -> None:
    assert isinstance(err, PolyrouteError)
    assert orjson.loads(error_body(err)) == {"type": "error", "error": {"type": kind, "message": err.message}}


def test_a_prompt_too_long_for_every_target_is_worded_as_anthropic_words_it() -> None:
    err = AllTargetsFailedError([
        AttemptFailure("small", ErrorClass.CONTEXT_WINDOW, "skipped: context window is not larger", skipped=True,
                       context_window=4000),
        AttemptFailure("large", ErrorClass.CONTEXT_WINDOW, "Range of input length should be [1, 30720]", 400,
                       context_window=32768),
    ])
    body = orjson.loads(error_body(err, 50_000))
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("prompt is too long: 50000 tokens > 32768 maximum (")
    assert "large: context_window (upstream status 400)" in body["error"]["message"]
    # The target counted more than its window even where polyroute's estimate says less.
    assert orjson.loads(error_body(err, 100))["error"]["message"].startswith(
        "prompt is too long: 32769 tokens > 32768 maximum")
