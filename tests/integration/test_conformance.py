"""One conformance suite for both provider types (openai fast path and litellm), through the official client."""

from __future__ import annotations

import pytest

from tests.support.stack import Stack

CHAT_ALIASES = ["conf-openai", "conf-litellm"]
HELLO = [{"role": "user", "content": "Say hello to the gateway"}]


@pytest.mark.parametrize("alias", CHAT_ALIASES)
def test_chat(stack: Stack, alias: str) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(model=alias, messages=HELLO)
    reply = raw.parse()
    assert reply.choices[0].message.content
    assert "sim-vllm" in reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert raw.headers["x-polyroute-route"] == f"alias:{alias}"
    assert raw.headers["x-polyroute-attempts"] == "1"
    assert raw.headers["x-request-id"]


@pytest.mark.parametrize("alias", CHAT_ALIASES)
def test_stream_without_usage_request_hides_usage_chunk(stack: Stack, alias: str) -> None:
    chunks = list(stack.client().chat.completions.create(model=alias, messages=HELLO, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "sim-vllm" in text
    assert all(c.choices for c in chunks), "the usage-only chunk must stay hidden when the client did not ask"
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("alias", CHAT_ALIASES)
def test_stream_with_include_usage(stack: Stack, alias: str) -> None:
    chunks = list(
        stack.client().chat.completions.create(
            model=alias, messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert not chunks[-1].choices


@pytest.mark.parametrize("alias", ["embed-openai", "embed-litellm"])
def test_embeddings(stack: Stack, alias: str) -> None:
    client = stack.client()
    result = client.embeddings.create(model=alias, input=["one", "two"])  # the client asks for base64
    assert len(result.data) == 2 and len(result.data[0].embedding) == 8
    floats = client.embeddings.create(model=alias, input="one", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(result.data[0].embedding, rel=1e-6)


@pytest.mark.parametrize("alias", CHAT_ALIASES)
def test_tool_calls_round_trip(stack: Stack, alias: str) -> None:
    tools = [{"type": "function", "function": {"name": "read_file", "description": "read a file",
              "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "please call tool read_file"}]
    reply = stack.client().chat.completions.create(model=alias, messages=messages, tools=tools)  # type: ignore[arg-type]
    call = reply.choices[0].message.tool_calls
    assert call and call[0].function.name
    assert reply.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("alias", CHAT_ALIASES)
def test_upstream_bad_request_is_relayed_as_400(stack: Stack, alias: str) -> None:
    import openai

    stack.vllm.inject([{"fault": "status", "status": 400, "message": "temperature must be <= 2", "count": 1}])
    with pytest.raises(openai.BadRequestError) as info:
        stack.client().chat.completions.create(model=alias, messages=HELLO, temperature=1.0)
    assert "temperature must be <= 2" in str(info.value)
