"""Messages and Responses clients get errors they can act on and usage even when the upstream reports none;
what polyroute builds for them matches OpenAI's published schema (Responses) and Anthropic's shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.support.openai_schema import schema_errors
from tests.support.protocol_stack import AGENT_KEY, ProtocolStack, protocol_stack

ASK: list[Any] = [{"role": "user", "content": "Summarise the repository in one line."}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProtocolStack]:
    with protocol_stack(tmp_path_factory.mktemp("protocol-errors")) as started:
        yield started


@pytest.fixture(autouse=True)
def _no_faults_left(stack: ProtocolStack) -> Iterator[None]:
    yield
    stack.cloud.clear()
    stack.vllm.clear()


@pytest.fixture
def claude(stack: ProtocolStack) -> Iterator[anthropic.Anthropic]:
    """The anthropic client with its default retries, as Claude Code's SDK runs."""
    with anthropic.Anthropic(base_url=stack.anthropic_url, api_key=AGENT_KEY) as client:
        yield client


@pytest.fixture
def sdk(stack: ProtocolStack) -> Iterator[openai.OpenAI]:
    """The openai client with its default retries."""
    with openai.OpenAI(base_url=stack.openai_url, api_key=AGENT_KEY) as client:
        yield client


def _vllm_requests(stack: ProtocolStack) -> int:
    count: int = stack.vllm.stats()["total_requests"]
    return count


def test_a_prompt_too_long_is_the_400_claude_code_compacts_on(
    stack: ProtocolStack, claude: anthropic.Anthropic
) -> None:
    stack.vllm.inject([{"fault": "context_overflow", "count": 1}])
    before = _vllm_requests(stack)
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="translated", max_tokens=64, messages=ASK)
    assert _vllm_requests(stack) == before + 1  # not retried
    error = info.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("prompt is too long: ")
    assert " tokens > 262144 maximum (" in error["message"]  # qwen-coder's context window
    assert "qwen-coder: context_window (upstream status 400)" in error["message"]


def test_a_prompt_polyroute_knows_is_too_long_is_the_same_400_without_an_upstream_request(
    stack: ProtocolStack, claude: anthropic.Anthropic, sdk: openai.OpenAI
) -> None:
    """polyroute's own estimate already rules out every target: no upstream request, the same words and codes."""
    history: list[Any] = [{"role": "user", "content": "lorem ipsum dolor sit amet " * 50_000}]  # ~300k tokens
    before = _vllm_requests(stack)
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="translated", max_tokens=64, messages=history)
    error = info.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("prompt is too long: ")
    assert " tokens > 262144 maximum (" in error["message"]
    with pytest.raises(openai.BadRequestError) as chat_info:
        sdk.chat.completions.create(model="translated", messages=history)
    assert (chat_info.value.code, chat_info.value.type) == ("context_length_exceeded", "invalid_request_error")
    assert _vllm_requests(stack) == before


def test_a_prompt_too_long_over_responses_is_context_length_exceeded(
    stack: ProtocolStack, sdk: openai.OpenAI
) -> None:
    stack.vllm.inject([{"fault": "context_overflow", "count": 1}])
    before = _vllm_requests(stack)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.responses.create(model="translated", input="Summarise the repository in one line.")
    assert _vllm_requests(stack) == before + 1
    assert (info.value.code, info.value.type) == ("context_length_exceeded", "invalid_request_error")
    assert schema_errors("ErrorResponse", info.value.response.json()) == []


def test_content_refused_over_messages_is_an_invalid_request(stack: ProtocolStack, claude: anthropic.Anthropic) -> None:
    stack.vllm.inject([{"fault": "data_inspection", "count": 1}])
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="translated", max_tokens=64, messages=ASK)
    assert info.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_every_target_throttled_is_a_429_with_retry_after_in_both_protocols(stack: ProtocolStack) -> None:
    stack.vllm.inject([{"fault": "throttling", "count": 2, "retry_after": "7"}])
    with (
        anthropic.Anthropic(base_url=stack.anthropic_url, api_key=AGENT_KEY, max_retries=0) as claude,
        pytest.raises(anthropic.RateLimitError) as limited,
    ):
        claude.messages.create(model="translated", max_tokens=64, messages=ASK)
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert limited.value.response.headers["retry-after"] == "7"
    with (
        openai.OpenAI(base_url=stack.openai_url, api_key=AGENT_KEY, max_retries=0) as client,
        pytest.raises(openai.RateLimitError) as throttled,
    ):
        client.responses.create(model="translated", input="hello")
    assert throttled.value.response.headers["retry-after"] == "7"
    assert throttled.value.code == "rate_limit_exceeded"
    assert schema_errors("ErrorResponse", throttled.value.response.json()) == []


def test_messages_carry_the_estimate_when_the_upstream_reports_no_usage(
    stack: ProtocolStack, claude: anthropic.Anthropic
) -> None:
    stack.vllm.inject([{"fault": "no_usage", "count": 2}])
    reply = claude.messages.create(model="translated", max_tokens=64, messages=ASK)
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0
    with claude.messages.stream(model="translated", max_tokens=64, messages=ASK) as stream:
        deltas = [event for event in stream if event.type == "message_delta"]
        final = stream.get_final_message()
    assert len(deltas) == 1
    assert deltas[0].usage.output_tokens > 0
    assert deltas[0].usage.input_tokens is not None and deltas[0].usage.input_tokens > 0
    assert final.usage.output_tokens == deltas[0].usage.output_tokens
    assert stack.vllm.stats()["faults_served"]["no_usage"] >= 2


def test_responses_carry_the_estimate_and_match_the_published_schema(
    stack: ProtocolStack, sdk: openai.OpenAI
) -> None:
    stack.vllm.inject([{"fault": "no_usage", "count": 2}])
    tools: list[Any] = [{"type": "function", "name": "shell", "parameters": {"type": "object"}, "strict": False}]
    raw = sdk.responses.with_raw_response.create(model="translated", input="hello", tools=tools)
    body = raw.http_response.json()
    assert schema_errors("Response", body) == []
    assert body["usage"]["input_tokens"] > 0 and body["usage"]["output_tokens"] > 0
    assert body["tools"][0]["strict"] is False and "user" not in body
    with sdk.responses.with_streaming_response.create(model="translated", input="hello", stream=True) as response:
        events = [json.loads(line[len("data: "):]) for line in response.iter_lines() if line.startswith("data: ")]
    for event in events:
        assert schema_errors("ResponseStreamEvent", event) == [], event["type"]
    completed = events[-1]
    assert completed["type"] == "response.completed"
    assert completed["response"]["usage"]["input_tokens"] > 0
    assert completed["response"]["usage"]["output_tokens"] > 0
