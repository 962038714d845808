"""Tests of the usage estimate accounting falls back on when an upstream reports no usage."""

from __future__ import annotations

import orjson

from gateway.observability.accounting import output_tokens_in_body, output_tokens_in_stream


def chat_body(content: str | None, **message: object) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "qwen3.6-plus",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, **message}}],
        }
    )


def test_body_estimate_counts_generated_text_not_the_envelope() -> None:
    assert output_tokens_in_body(chat_body("x" * 40)) == 10
    assert output_tokens_in_body(chat_body("x" * 41)) == 11  # a started token is a token
    assert output_tokens_in_body(chat_body(None)) == 0


def test_body_estimate_includes_reasoning_and_tool_call_arguments() -> None:
    tool_call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"city": "Paris"}'}}
    body = chat_body(None, reasoning_content="r" * 8, tool_calls=[tool_call])

    assert output_tokens_in_body(body) == 8  # 8 bytes of reasoning + 21 bytes of JSON-escaped arguments, over 4


def test_body_estimate_reads_completions_and_spaced_json() -> None:
    completion = orjson.dumps({"object": "text_completion", "choices": [{"index": 0, "text": "y" * 12}]})
    spaced = b'{"choices": [{"message": {"role": "assistant", "content": "abcdefgh"}}]}'

    assert output_tokens_in_body(completion) == 3
    assert output_tokens_in_body(spaced) == 2


def test_body_estimate_is_zero_for_embeddings() -> None:
    body = orjson.dumps({"object": "list", "data": [{"object": "embedding", "embedding": [0.1] * 64}]})

    assert output_tokens_in_body(body) == 0


def test_body_estimate_counts_utf8_bytes_so_cjk_text_is_not_undercounted() -> None:
    assert output_tokens_in_body(chat_body("你好世界")) == 3  # 12 UTF-8 bytes


def test_stream_estimate_is_one_token_per_event_without_the_framing_events() -> None:
    # role event + 20 content events + finish event + [DONE]
    assert output_tokens_in_stream(23) == 20
    assert output_tokens_in_stream(2) == 0  # a stream cut short after its first event
