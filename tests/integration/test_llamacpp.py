"""polyroute in front of a real open-weight engine: llama.cpp's OpenAI-compatible server (llama-cpp-python) serving
SmolLM2-135M-Instruct on the CPU, driven with the official `openai` and `anthropic` clients. Chat, streams, tools,
JSON mode, legacy completions, Messages and Responses translated to Chat, a context overflow, a client that leaves
a stream, and embeddings. A model this small is not clever: the tests check the protocols, not the answers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.support.llamacpp import LlamaServer, start_llamacpp
from tests.support.processes import GatewayProcess, start_gateway
from tests.support.resilience import content_of, eventually

pytestmark = pytest.mark.engine

CHAT_CONTEXT = 512  # tokens: small, so that overflowing it is cheap
POLICY = """
version: 1
providers:
  llamacpp:
    type: openai
    base_url: {chat}
    hosting: self_hosted
    jurisdiction: onprem
    vendor: self
  llamacpp-embed:
    type: openai
    base_url: {embed}
    hosting: self_hosted
    jurisdiction: onprem
    vendor: self
deployments:
  smollm2:       {{provider: llamacpp, model: smollm2-135m-instruct}}
  smollm2-embed: {{provider: llamacpp-embed, model: smollm2-135m-instruct}}
aliases:
  smol:       {{targets: [smollm2]}}
  smol-embed: {{targets: [smollm2-embed]}}
fallback:
  retries: {{attempts: 0}}
  timeouts: {{connect: 2s, first_token: 60s, total: 120s}}
"""
ASK: Any = [{"role": "user", "content": "What is the capital of France?"}]
ASK_WEATHER: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_SCHEMA: Any = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER: Any = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather in a city.", "parameters": WEATHER_SCHEMA},
}
FORCE_WEATHER: Any = {"type": "function", "function": {"name": "get_weather"}}
GREEDY = {"temperature": 0}  # the anthropic client has no `temperature` argument of its own: sent in the body
# SmolLM2's end-of-text and <|im_end|> tokens, banned so that a generation runs until max_tokens.
NEVER_STOP = {"0": -100, "2": -100}


@dataclass(frozen=True)
class Engines:
    """The chat engine (n_ctx 512), the embeddings engine, and one gateway in front of both."""

    chat: LlamaServer
    embed: LlamaServer
    gateway: GatewayProcess


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engines]:
    with start_llamacpp(n_ctx=CHAT_CONTEXT) as chat, start_llamacpp(n_ctx=CHAT_CONTEXT, embedding=True) as embed:
        policy: Path = tmp_path_factory.mktemp("llamacpp") / "policy.yaml"
        policy.write_text(POLICY.format(chat=chat.base_url, embed=embed.base_url))
        with start_gateway(policy) as gateway:
            yield Engines(chat, embed, gateway)


@pytest.fixture
def client(engines: Engines) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=engines.gateway.url("/v1"), api_key="any", max_retries=0) as made:
        yield made


@pytest.fixture
def claude(engines: Engines) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=engines.gateway.base_url, api_key="any", max_retries=0) as made:
        yield made


def sse_data(lines: Iterator[str]) -> list[str]:
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


def test_chat_answers_with_content_and_usage(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="smol", messages=ASK, temperature=0, max_tokens=16
    )
    answer = raw.parse()

    assert raw.headers["x-polyroute-deployment"] == "smollm2"
    assert answer.object == "chat.completion"
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_a_stream_sends_chunks_then_done(client: openai.OpenAI) -> None:
    with client.chat.completions.with_streaming_response.create(
        model="smol", messages=ASK, temperature=0, max_tokens=16, stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        data = sse_data(response.iter_lines())

    assert data[-1] == "[DONE]"
    chunks = [json.loads(line) for line in data[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert not any("error" in chunk for chunk in chunks)
    assert content_of(data).strip()
    finish = [choice["finish_reason"] for chunk in chunks for choice in chunk["choices"] if choice["finish_reason"]]
    assert finish in (["stop"], ["length"])
    # llama-cpp-python sends no usage in a stream (it ignores stream_options); whatever polyroute adds is well formed.
    for usage in (chunk["usage"] for chunk in chunks if chunk.get("usage")):
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_the_openai_client_reads_the_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smol", messages=ASK, temperature=0, max_tokens=16, stream=True
    )
    with stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text.strip()


def test_a_forced_tool_call_comes_back_with_arguments_that_fit_the_schema(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="smol", messages=ASK_WEATHER,
        tools=[WEATHER], tool_choice=FORCE_WEATHER, temperature=0, max_tokens=32,
    )

    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str)  # the engine's grammar follows the tool's JSON schema
    assert answer.usage is not None and answer.usage.prompt_tokens > 0


def test_a_streamed_tool_call_arrives_in_deltas_that_join_into_json(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smol", messages=ASK_WEATHER,
        tools=[WEATHER], tool_choice=FORCE_WEATHER, temperature=0, max_tokens=32,
        stream=True,
    )
    names, arguments, finish = [], "", []
    with stream:
        for chunk in stream:
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or []:
                    assert call.index == 0
                    if call.function and call.function.name:
                        names.append(call.function.name)
                    arguments += (call.function.arguments or "") if call.function else ""
                if choice.finish_reason:
                    finish.append(choice.finish_reason)
    # llama-cpp-python repeats the name in every delta (OpenAI sends it once); polyroute relays them as they come.
    assert names and set(names) == {"get_weather"}
    assert isinstance(json.loads(arguments)["city"], str)
    assert finish == ["tool_calls"]


def test_a_request_with_tools_the_model_may_use_is_answered(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="smol", messages=ASK_WEATHER,
        tools=[WEATHER], tool_choice="auto", temperature=0, max_tokens=32,
    )

    choice = answer.choices[0]
    if choice.message.tool_calls:  # the model chose the tool
        assert choice.finish_reason == "tool_calls"
        call = choice.message.tool_calls[0]
        assert call.type == "function" and call.function.name == "get_weather"
        json.loads(call.function.arguments)
    else:  # the model chose to answer in words
        assert choice.finish_reason in ("stop", "length")
        assert choice.message.content is not None


def test_json_mode_returns_content_that_parses_as_json(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Describe Paris as a JSON object with a name."}],
        response_format={"type": "json_object"}, temperature=0, max_tokens=128,
    )

    choice = answer.choices[0]
    assert choice.finish_reason == "stop", choice.message.content  # cut at max_tokens, JSON could be unfinished
    assert isinstance(json.loads(choice.message.content or ""), dict)


def test_a_legacy_completion(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(
        model="smol", prompt="The capital of France is", temperature=0, max_tokens=8
    )
    answer = raw.parse()

    assert raw.headers["x-polyroute-deployment"] == "smollm2"
    assert answer.object == "text_completion"
    assert answer.choices[0].text.strip()
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage is not None and answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0


def test_messages_are_translated_to_chat_and_back(claude: anthropic.Anthropic) -> None:
    raw = claude.messages.with_raw_response.create(
        model="smol", max_tokens=16, extra_body=GREEDY, messages=[{"role": "user", "content": "Say hello."}]
    )
    message = raw.parse()

    assert raw.headers["x-polyroute-deployment"] == "smollm2"
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0  # llama.cpp reports usage


def test_a_messages_stream_is_translated(claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="smol", max_tokens=16, extra_body=GREEDY, messages=[{"role": "user", "content": "Say hello."}]
    ) as stream:
        events = [event.type for event in stream]
        message = stream.get_final_message()

    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_delta" in events and "message_delta" in events
    assert message.content[0].type == "text" and message.content[0].text.strip()
    assert message.stop_reason in ("end_turn", "max_tokens")


def test_a_forced_tool_use_is_translated_for_messages(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="smol", max_tokens=32, extra_body=GREEDY, messages=ASK_WEATHER,
        tools=[{"name": "get_weather", "description": "The weather in a city.", "input_schema": WEATHER_SCHEMA}],
        tool_choice={"type": "tool", "name": "get_weather"},
    )

    assert message.stop_reason == "tool_use"
    uses = [block for block in message.content if block.type == "tool_use"]
    assert len(uses) == 1
    assert uses[0].name == "get_weather" and uses[0].id
    assert isinstance(uses[0].input, dict) and isinstance(uses[0].input["city"], str)


def test_a_streamed_tool_use_is_translated_for_messages_once_per_call(claude: anthropic.Anthropic) -> None:
    # llama-cpp-python repeats the call's id and name in every delta: the translation opens one tool_use block.
    with claude.messages.stream(
        model="smol", max_tokens=32, extra_body=GREEDY, messages=ASK_WEATHER,
        tools=[{"name": "get_weather", "description": "The weather in a city.", "input_schema": WEATHER_SCHEMA}],
        tool_choice={"type": "tool", "name": "get_weather"},
    ) as stream:
        starts = [event for event in stream if event.type == "content_block_start"]
        message = stream.get_final_message()

    assert [start.content_block.type for start in starts] == ["tool_use"]
    assert message.stop_reason == "tool_use"
    assert len(message.content) == 1 and message.content[0].type == "tool_use"
    assert message.content[0].name == "get_weather"
    assert isinstance(message.content[0].input, dict) and isinstance(message.content[0].input["city"], str)


def test_responses_are_translated_to_chat_and_back(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="smol", input="What is the capital of France?", temperature=0, max_output_tokens=16
    )

    assert response.status in ("completed", "incomplete")
    assert response.output_text.strip()
    assert response.usage is not None
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0  # llama.cpp reports usage


def test_a_responses_stream_is_translated(client: openai.OpenAI) -> None:
    stream = client.responses.create(
        model="smol", input="What is the capital of France?", temperature=0, max_output_tokens=16, stream=True
    )
    with stream:
        events = list(stream)

    types = [event.type for event in events]
    assert types[0] == "response.created"
    assert types[-1] in ("response.completed", "response.incomplete")
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text.strip()


def test_a_forced_function_call_is_translated_for_responses(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="smol", input="What is the weather in Paris?", temperature=0,
        tools=[{"type": "function", "name": "get_weather", "parameters": WEATHER_SCHEMA, "strict": False}],
        tool_choice={"type": "function", "name": "get_weather"},
    )

    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1
    assert calls[0].name == "get_weather" and calls[0].call_id
    assert isinstance(json.loads(calls[0].arguments)["city"], str)


LONG_PROMPT = "Please summarise the following words. " + "alpha beta gamma delta " * 200  # about 800 tokens


def test_a_prompt_longer_than_the_context_is_a_400_context_length_exceeded(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": LONG_PROMPT}], max_tokens=8
        )

    assert info.value.status_code == 400
    assert info.value.code == "context_length_exceeded"
    assert info.value.type == "invalid_request_error"


def test_a_messages_prompt_longer_than_the_context_is_a_400_prompt_is_too_long(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        claude.messages.create(model="smol", max_tokens=8, messages=[{"role": "user", "content": LONG_PROMPT}])

    assert info.value.status_code == 400
    error: Any = info.value.body
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert error["error"]["message"].startswith("prompt is too long")


def test_a_client_that_leaves_a_stream_frees_the_engine(engines: Engines, client: openai.OpenAI) -> None:
    left_before = engines.chat.logs().count("Disconnected from client")
    with client.chat.completions.with_streaming_response.create(
        model="smol", messages=[{"role": "user", "content": "Tell me a long story."}], stream=True,
        temperature=0, max_tokens=CHAT_CONTEXT, logit_bias=NEVER_STOP,
    ) as response:
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
        assert json.loads(first[len("data: "):])["object"] == "chat.completion.chunk"
    # Leaving closed the connection mid-generation; the engine, which serves one request at a time and is not
    # interrupted by the next one, must see its own client (polyroute) leave, rather than generate to the end.
    eventually(
        lambda: engines.chat.logs().count("Disconnected from client") > left_before,
        "llama.cpp to see polyroute abandon the upstream stream",
        timeout=60.0,
    )

    answer = client.chat.completions.create(model="smol", messages=ASK, temperature=0, max_tokens=8)
    assert answer.choices[0].message.content
    assert engines.gateway.process.running and engines.chat.process.running


def test_embeddings_from_an_engine_started_with_embeddings_on(client: openai.OpenAI) -> None:
    raw = client.embeddings.with_raw_response.create(model="smol-embed", input=["hello world", "bonjour le monde"])
    answer = raw.parse()

    assert raw.headers["x-polyroute-deployment"] == "smollm2-embed"
    assert [item.index for item in answer.data] == [0, 1]
    first, second = (item.embedding for item in answer.data)
    assert len(first) == len(second) > 0
    assert all(isinstance(value, float) for value in first)
    assert first != second
    assert answer.usage.prompt_tokens > 0
