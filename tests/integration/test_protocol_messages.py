"""Anthropic Messages through polyroute, driven with the official `anthropic` client as a coding agent drives it:
translated for a Chat-only target (simulated vLLM, and a litellm provider), relayed to a native one (simulated
Model Studio), with fallback between them, errors in Anthropic's shape, count_tokens, usage and metrics."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.protocol_stack import AGENT_KEY, CLOUD_KEY, LIMITED_KEY, TIGHT_KEY, ProtocolStack, protocol_stack

SYSTEM: list[Any] = [
    {"type": "text", "text": "You are a coding agent working in /repo.", "cache_control": {"type": "ephemeral"}},
    {"type": "text", "text": "Prefer small, reviewed edits."},
]
TOOLS: list[Any] = [
    {
        "name": "Read",
        "description": "Read a file from the repository.",
        "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]},
    },
    {
        "name": "Edit",
        "description": "Replace a string in a file.",
        "input_schema": {
            "type": "object",
            "properties": {"file_path": {"type": "string"}, "old": {"type": "string"}, "new": {"type": "string"}},
        },
    },
    {
        "name": "Bash",
        "description": "Run a shell command.",
        "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}},
        "cache_control": {"type": "ephemeral"},
    },
]
ASK = "please call tool Read on gateway/app.py"
FILE_TEXT = "def create_app(settings): ..."
PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProtocolStack]:
    with protocol_stack(tmp_path_factory.mktemp("agents")) as started:
        yield started


_OPENED: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _no_faults_left(stack: ProtocolStack) -> Iterator[None]:
    yield
    stack.cloud.clear()
    stack.vllm.clear()
    while _OPENED:  # each test's clients are closed with it, so no connection outlives its test
        _OPENED.pop().close()


def client(stack: ProtocolStack, **options: Any) -> anthropic.Anthropic:
    options.setdefault("api_key", AGENT_KEY)
    opened = anthropic.Anthropic(base_url=stack.anthropic_url, max_retries=0, **options)
    _OPENED.append(opened)
    return opened


def first_turn() -> list[Any]:
    return [{"role": "user", "content": [{"type": "text", "text": ASK}]}]


def second_turn(call_id: str, tool_input: dict[str, Any], *, is_error: bool = False) -> list[Any]:
    """The agent ran the tool and sends its result back, as Claude Code does."""
    result: dict[str, Any] = {
        "type": "tool_result", "tool_use_id": call_id, "content": [{"type": "text", "text": FILE_TEXT}]
    }
    if is_error:
        result["is_error"] = True
    return [
        *first_turn(),
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Reading the file."},
                {"type": "tool_use", "id": call_id, "name": "Read", "input": tool_input},
            ],
        },
        {"role": "user", "content": [result]},
    ]


# --- translation for a Chat-only target -------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["translated", "litellm"])
def test_tool_use_conversation_is_translated(stack: ProtocolStack, alias: str) -> None:
    api = client(stack)
    first = api.messages.create(model=alias, max_tokens=512, system=SYSTEM, tools=TOOLS, messages=first_turn())
    assert first.stop_reason == "tool_use"
    call = next(block for block in first.content if block.type == "tool_use")
    assert call.name == "Read" and call.input == {"file_path": ASK}
    assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0

    seen = stack.vllm.stats()["last_body"]
    assert seen["model"] == "Qwen/Qwen3-Coder-30B-A3B-Instruct" and seen["max_tokens"] == 512
    assert seen["messages"][0] == {
        "role": "system",
        "content": [
            {"type": "text", "text": SYSTEM[0]["text"], "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": SYSTEM[1]["text"]},
        ],
    }
    assert [t["function"]["name"] for t in seen["tools"]] == ["Read", "Edit", "Bash"]
    assert seen["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]

    second = api.messages.create(
        model=alias, max_tokens=512, system=SYSTEM, tools=TOOLS, messages=second_turn(call.id, call.input)
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text" and FILE_TEXT in second.content[0].text
    history = stack.vllm.stats()["last_body"]["messages"]
    assistant, tool = history[-2], history[-1]
    assert assistant["content"] == "Reading the file."
    assert assistant["tool_calls"][0]["id"] == call.id
    assert assistant["tool_calls"][0]["function"]["name"] == "Read"
    assert tool == {"role": "tool", "tool_call_id": call.id, "content": FILE_TEXT}


def test_failed_tool_result_says_so_to_a_chat_target(stack: ProtocolStack) -> None:
    messages = second_turn("toolu_1", {"file_path": "x"}, is_error=True)
    reply = client(stack).messages.create(model="translated", max_tokens=64, tools=TOOLS, messages=messages)
    assert reply.content[0].type == "text" and "[tool error] " + FILE_TEXT in reply.content[0].text


def test_streamed_tool_call_arrives_as_anthropic_events(stack: ProtocolStack) -> None:
    api = client(stack)
    with api.messages.stream(model="translated", max_tokens=512, system=SYSTEM, tools=TOOLS,
                             messages=first_turn()) as stream:
        events = list(stream)
        final = stream.get_final_message()
    kinds = [e.type for e in events if not e.type.startswith(("text", "input_json"))]  # skip the SDK's helpers
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    starts = [e for e in events if e.type == "content_block_start"]
    assert [s.content_block.type for s in starts] == ["tool_use"]
    partial = [e.delta.partial_json for e in events if e.type == "content_block_delta"]
    assert len(partial) > 1  # the arguments arrived in pieces, as they were generated
    tool = final.content[0]
    assert tool.type == "tool_use" and tool.name == "Read" and tool.input == {"file_path": ASK}
    assert final.stop_reason == "tool_use"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0

    with api.messages.stream(model="translated", max_tokens=512, tools=TOOLS,
                             messages=second_turn(tool.id, tool.input)) as stream:
        text = "".join(stream.text_stream)
        assert stream.get_final_message().stop_reason == "end_turn"
    assert FILE_TEXT in text


def test_images_and_options_are_translated(stack: ProtocolStack) -> None:
    content: list[Any] = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}},
        {"type": "image", "source": {"type": "url", "url": "https://example.invalid/diagram.png"}},
        {"type": "text", "text": "what is in these?"},
    ]
    client(stack).messages.create(
        model="translated", max_tokens=99, stop_sequences=["END"], output_config={"effort": "high"},
        tool_choice={"type": "tool", "name": "Bash"}, tools=TOOLS, metadata={"user_id": "dev-42"},
        thinking={"type": "enabled", "budget_tokens": 2048}, messages=[{"role": "user", "content": content}],
        extra_body={"temperature": 0.2, "top_k": 20},
    )
    seen = stack.vllm.stats()["last_body"]
    parts = seen["messages"][0]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1PX}"}}
    assert parts[1] == {"type": "image_url", "image_url": {"url": "https://example.invalid/diagram.png"}}
    assert (seen["temperature"], seen["top_k"], seen["stop"], seen["user"]) == (0.2, 20, ["END"], "dev-42")
    assert seen["tool_choice"] == {"type": "function", "function": {"name": "Bash"}}
    assert (seen["enable_thinking"], seen["thinking_budget"]) == (True, 2048)
    assert seen["reasoning_effort"] == "high"


@pytest.mark.parametrize(
    ("content", "tools", "named"),
    [
        ([{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}], None,
         "messages[0].content[0]"),
        ("hi", [{"type": "web_search_20250305", "name": "web_search"}], "tools[0]"),
    ],
)
def test_what_cannot_be_translated_is_a_400_naming_it(
    stack: ProtocolStack, content: Any, tools: Any, named: str
) -> None:
    extra = {"tools": tools} if tools else {}
    with client(stack) as api, pytest.raises(anthropic.BadRequestError) as caught:
        api.messages.create(model="translated", max_tokens=64, messages=[{"role": "user", "content": content}], **extra)
    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert named in caught.value.message
    # A target that speaks Messages natively takes the same request as it is.
    reply = client(stack).messages.create(
        model="native", max_tokens=64, messages=[{"role": "user", "content": content}], **extra
    )
    assert reply.content


def test_what_cannot_be_translated_uses_no_rate_limit_slot(stack: ProtocolStack) -> None:
    document = [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]
    untranslatable = [{"role": "user", "content": document}]
    with client(stack, api_key=TIGHT_KEY) as tight:  # one request a minute
        for _ in range(2):  # refused as a 400 both times, never as the 429 of a used-up minute
            with pytest.raises(anthropic.BadRequestError):
                tight.messages.create(model="translated", max_tokens=16, messages=untranslatable)  # type: ignore[arg-type]


# --- relay to a target that speaks Messages natively -------------------------------------------------------------


def test_native_target_gets_the_request_unchanged(stack: ProtocolStack) -> None:
    messages = second_turn("toolu_native", {"file_path": "gateway/app.py"})
    raw = client(stack).messages.with_raw_response.create(
        model="native", max_tokens=256, system=SYSTEM, tools=TOOLS, messages=messages,
        extra_headers={"anthropic-beta": "fine-grained-tool-streaming-2025-05-14"},
    )
    assert raw.headers["x-polyroute-deployment"] == "qwen-cloud"
    reply = raw.parse()
    assert reply.id.startswith("msg_sim") and "native messages echo" in reply.content[0].text  # type: ignore[union-attr]
    stats = stack.cloud.stats()
    assert stats["last_path"] == "/apps/anthropic/v1/messages"
    assert stats["last_body"] == {"model": "qwen3.6-plus", "max_tokens": 256, "system": SYSTEM, "tools": TOOLS,
                                  "messages": messages}
    assert stats["last_headers"]["X-Api-Key"] == CLOUD_KEY
    assert stats["last_headers"]["Anthropic-Version"] == raw.http_request.headers["anthropic-version"]
    assert stats["last_headers"]["Anthropic-Beta"] == "fine-grained-tool-streaming-2025-05-14"


def test_native_stream_is_relayed_event_by_event(stack: ProtocolStack) -> None:
    with client(stack).messages.stream(model="native", max_tokens=256, tools=TOOLS, messages=first_turn()) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_message()
    protocol_events = [k for k in kinds if k.startswith(("message", "content_block"))]
    assert protocol_events[:2] == ["message_start", "content_block_start"]
    assert protocol_events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert final.id.startswith("msg_sim") and final.stop_reason == "tool_use"
    assert final.content[0].type == "tool_use" and final.content[0].input == {"file_path": ASK}
    assert stack.cloud.stats()["last_body"]["stream"] is True


def test_fallback_moves_from_native_target_to_translated_one(stack: ProtocolStack) -> None:
    stack.cloud.inject([{"fault": "status", "status": 503, "count": 2, "model": "qwen3.6-plus"}])
    raw = client(stack).messages.with_raw_response.create(model="native-first", max_tokens=64, messages=first_turn())
    assert raw.headers["x-polyroute-deployment"] == "qwen-coder"
    assert raw.headers["x-polyroute-fallback-reason"] == "server_error"
    assert "[sim-vllm] echo" in raw.parse().content[0].text  # type: ignore[union-attr]
    with client(stack).messages.stream(model="native-first", max_tokens=64, messages=first_turn()) as stream:
        text = "".join(stream.text_stream)
    assert "[sim-vllm] echo" in text


# --- errors in Anthropic's shape -----------------------------------------------------------------------------------


def test_auth_by_x_api_key_or_bearer_and_errors_in_anthropic_shape(stack: ProtocolStack) -> None:
    ask: Any = {"max_tokens": 16, "messages": first_turn()}
    # Clients are closed as soon as used: an error keeps its response (and so its connection) referenced.
    with client(stack) as api:
        assert api.messages.create(model="translated", **ask).content  # x-api-key, as the SDK sends it
        with pytest.raises(anthropic.NotFoundError) as unknown:
            api.messages.create(model="no-such-alias", **ask)
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with anthropic.Anthropic(base_url=stack.anthropic_url, auth_token=AGENT_KEY, api_key=None, max_retries=0) as api:
        assert api.messages.create(model="translated", **ask).content
    with client(stack, api_key="sk-wrong") as api, pytest.raises(anthropic.AuthenticationError) as bad_key:
        api.messages.create(model="translated", **ask)
    assert bad_key.value.body == {"type": "error", "error": {"type": "authentication_error",
                                                             "message": "Incorrect API key provided."}}
    with client(stack, api_key=LIMITED_KEY) as api, pytest.raises(anthropic.PermissionDeniedError) as denied:
        api.messages.create(model="native", **ask)
    assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]


def test_rate_limit_is_an_anthropic_rate_limit_error(stack: ProtocolStack) -> None:
    with client(stack, api_key=TIGHT_KEY) as tight:
        tight.messages.create(model="translated", max_tokens=16, messages=first_turn())
        with pytest.raises(anthropic.RateLimitError) as limited:
            tight.messages.create(model="translated", max_tokens=16, messages=first_turn())
    assert limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(limited.value.response.headers["retry-after"]) >= 1


def test_all_targets_failing_is_an_anthropic_error(stack: ProtocolStack) -> None:
    stack.vllm.inject([{"fault": "internal", "count": 1}])
    with client(stack) as api, pytest.raises(anthropic.APIStatusError) as failed:
        api.messages.create(model="translated", max_tokens=16, messages=first_turn())
    assert failed.value.status_code == 502
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert "qwen-coder" in failed.value.body["error"]["message"]  # type: ignore[index]


@pytest.mark.parametrize(("alias", "upstream"), [("translated", "vllm"), ("native", "cloud")])
def test_failure_mid_stream_ends_with_an_anthropic_error_event(stack: ProtocolStack, alias: str, upstream: str) -> None:
    getattr(stack, upstream).inject([{"fault": "inband_error", "after": 3, "count": 1, "message": "GPU fell over"}])
    received: list[str] = []
    with client(stack) as api, pytest.raises(anthropic.APIStatusError) as failed, api.messages.stream(
        model=alias, max_tokens=64, messages=first_turn()
    ) as stream:
        received.extend(event.type for event in stream)
    assert received and received[0] == "message_start"  # the stream had begun: no fallback, an error event
    assert failed.value.body["type"] == "error"  # type: ignore[index]
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert "GPU fell over" in failed.value.body["error"]["message"]  # type: ignore[index]


# --- count_tokens, usage and metrics -----------------------------------------------------------------------------


def test_count_tokens_is_the_gateway_estimate(stack: ProtocolStack) -> None:
    with client(stack) as api:
        short = api.messages.count_tokens(model="translated", messages=first_turn())
        longer = api.messages.count_tokens(model="native", system=SYSTEM, tools=TOOLS, messages=first_turn())
        with pytest.raises(anthropic.NotFoundError):
            api.messages.count_tokens(model="no-such-alias", messages=first_turn())
    assert 0 < short.input_tokens < longer.input_tokens


def tokens(stack: ProtocolStack, alias: str, kind: str) -> float:
    with urllib.request.urlopen(stack.gateway.url("/metrics"), timeout=10) as response:
        text = response.read().decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "polyroute_tokens_total" and s.labels.get("alias") == alias and s.labels.get("type") == kind
    )


def wait_for_tokens(stack: ProtocolStack, alias: str, kind: str, at_least: float) -> float:
    deadline = time.monotonic() + 10
    while (value := tokens(stack, alias, kind)) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


@pytest.mark.parametrize("alias", ["translated", "native"])
def test_usage_reaches_metrics_whatever_the_path(stack: ProtocolStack, alias: str) -> None:
    before_in, before_out = tokens(stack, alias, "input"), tokens(stack, alias, "output")
    reply = client(stack).messages.create(model=alias, max_tokens=64, messages=first_turn())
    with client(stack).messages.stream(model=alias, max_tokens=64, messages=first_turn()) as stream:
        streamed = stream.get_final_message()
    expected_in = before_in + reply.usage.input_tokens + streamed.usage.input_tokens
    expected_out = before_out + reply.usage.output_tokens + streamed.usage.output_tokens
    assert wait_for_tokens(stack, alias, "input", expected_in) == expected_in
    assert wait_for_tokens(stack, alias, "output", expected_out) == expected_out



def test_unknown_path_or_method_under_messages_is_an_anthropic_error(stack: ProtocolStack) -> None:
    def fetch(path: str, method: str) -> tuple[int, Any]:
        url = f"{stack.anthropic_url}{path}"
        request = urllib.request.Request(url, method=method, headers={"x-api-key": AGENT_KEY})
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(request, timeout=10)
        return failed.value.code, json.loads(failed.value.read())

    assert fetch("/v1/messages/batches", "POST") == (
        404, {"type": "error", "error": {"type": "not_found_error", "message": "Unknown path."}}
    )
    status, body = fetch("/v1/messages", "GET")
    assert status == 405 and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    status, body = fetch("/v1/chat/completions", "GET")  # OpenAI paths keep OpenAI's envelope
    assert status == 405 and body["error"]["type"] == "invalid_request_error" and "type" not in body
