"""The official `openai` client's Responses API through polyroute: translated for a Chat-only vLLM, relayed to a
target that speaks Responses natively, multi-turn tool use, streamed and not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.responses import Response, ResponseInputParam

from tests.support.protocol_stack import AGENT_KEY, ProtocolStack, protocol_stack

SHELL = {
    "type": "function",
    "name": "shell",
    "description": "Run a shell command in the repository.",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
}
INSTRUCTIONS = "You are a coding agent. Use the shell tool to inspect the repository."


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProtocolStack]:
    directory: Path = tmp_path_factory.mktemp("responses")
    with protocol_stack(directory) as running:
        yield running


@pytest.fixture
def client(agents: ProtocolStack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=AGENT_KEY, base_url=agents.openai_url, max_retries=0) as client:
        yield client


def _only_call(response: Response) -> Any:
    calls = [item for item in response.output if item.type == "function_call"]
    assert len(calls) == 1, response.output
    return calls[0]


def _second_turn(first_input: str, response: Response, output: str) -> ResponseInputParam:
    """What an agent sends next: the history, the model's items as they came, and the tool's result."""
    call = _only_call(response)
    return [
        {"role": "user", "content": first_input},
        *[item.model_dump(exclude_none=True) for item in response.output],  # type: ignore[misc]
        {"type": "function_call_output", "call_id": call.call_id, "output": output},
    ]


def test_multi_turn_tool_use_is_translated_for_a_chat_only_target(client: openai.OpenAI, agents: ProtocolStack) -> None:
    ask = "Please call tool to list the files."
    raw = client.responses.with_raw_response.create(
        model="translated", instructions=INSTRUCTIONS, input=ask, tools=[SHELL], extra_body={"top_k": 20}
    )
    first = raw.parse()

    assert raw.headers["x-polyroute-deployment"] == "qwen-coder"
    assert first.status == "completed"
    assert first.id.startswith("resp_")
    call = _only_call(first)
    assert call.name == "shell"
    assert json.loads(call.arguments) == {"cmd": ask}
    assert first.usage is not None and first.usage.input_tokens > 0 and first.usage.output_tokens > 0
    upstream = agents.vllm.stats()
    assert upstream["last_path"] == "/v1/chat/completions"
    sent = upstream["last_body"]
    assert sent["messages"] == [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": ask}]
    assert sent["tools"][0] == {
        "type": "function",
        "function": {k: SHELL[k] for k in ("name", "description", "parameters")},
    }
    assert sent["top_k"] == 20  # not a Responses parameter: passed through to the chat body

    second = client.responses.create(
        model="translated",
        instructions=INSTRUCTIONS,
        input=_second_turn(ask, first, "README.md\nsetup.py"),
        tools=[SHELL],
    )

    assert second.status == "completed"
    assert second.output_text == f"[sim-vllm] echo: tool {call.call_id} said: README.md setup.py"
    sent = agents.vllm.stats()["last_body"]
    assert [message["role"] for message in sent["messages"]] == ["system", "user", "assistant", "tool"]
    assert sent["messages"][2]["tool_calls"][0]["id"] == call.call_id
    assert sent["messages"][3] == {"role": "tool", "tool_call_id": call.call_id, "content": "README.md\nsetup.py"}


def test_streamed_tool_use_is_translated_into_responses_events(client: openai.OpenAI) -> None:
    ask = "Please call tool to show the failing test."
    with client.responses.stream(model="translated", input=ask, tools=[SHELL]) as stream:  # type: ignore[list-item]
        events = list(stream)
        first = stream.get_final_response()

    assert [event.sequence_number for event in events] == list(range(len(events)))
    kinds = [event.type for event in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    call = _only_call(first)
    deltas = "".join(event.delta for event in events if event.type == "response.function_call_arguments.delta")
    assert deltas == call.arguments
    assert json.loads(call.arguments) == {"cmd": ask}
    assert first.usage is not None and first.usage.total_tokens > 0

    with client.responses.stream(
        model="translated",
        input=_second_turn(ask, first, "1 failed"),
        tools=[SHELL],  # type: ignore[list-item]
    ) as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        second = stream.get_final_response()

    assert text == second.output_text == f"[sim-vllm] echo: tool {call.call_id} said: 1 failed"
    assert second.output[0].type == "message"
    assert second.output[0].status == "completed"


def test_a_target_that_speaks_responses_gets_the_request_relayed(client: openai.OpenAI, agents: ProtocolStack) -> None:
    ask = "Please call tool to list the files."
    first = client.responses.create(model="native", instructions=INSTRUCTIONS, input=ask, tools=[SHELL])

    assert agents.cloud.stats()["last_path"].endswith("/responses")
    assert agents.cloud.stats()["last_body"]["instructions"] == INSTRUCTIONS
    call = _only_call(first)
    assert call.name == "shell"

    with client.responses.stream(
        model="native",
        input=_second_turn(ask, first, "README.md"),
        tools=[SHELL],  # type: ignore[list-item]
    ) as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        second = stream.get_final_response()

    relayed = agents.cloud.stats()["last_body"]["input"]
    assert relayed[-1] == {"type": "function_call_output", "call_id": call.call_id, "output": "README.md"}
    assert text == second.output_text
    assert second.output_text.startswith("[sim-cloud] native responses echo")


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_earlier"}, "previous_response_id"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"store": True}, "store"),
    ],
)
def test_what_cannot_be_translated_is_a_400_for_a_chat_only_target_and_relayed_to_a_native_one(
    client: openai.OpenAI, agents: ProtocolStack, extra: dict[str, Any], param: str
) -> None:
    before = agents.vllm.stats()["total_requests"]
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="translated", input="hello", extra_body=extra)

    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert param.split("[")[0] in caught.value.message
    assert agents.vllm.stats()["total_requests"] == before  # refused before any upstream was asked

    relayed = client.responses.create(model="native", input="hello", extra_body=extra)
    assert relayed.output_text.startswith("[sim-cloud] native responses echo")


def test_a_translated_stream_whose_upstream_fails_ends_with_response_failed(
    client: openai.OpenAI, agents: ProtocolStack
) -> None:
    agents.vllm.inject([{"fault": "inband_error", "after": 3, "count": 1, "message": "GPU fell over"}])
    stream = client.responses.create(model="translated", input="Tell me about the repository.", stream=True)
    with stream:
        events = list(stream)

    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_text.delta" in kinds  # the stream had begun: no fallback, the failure is reported
    assert kinds[-2:] == ["error", "response.failed"]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    error, failed = events[-2], events[-1]
    assert error.type == "error" and "GPU fell over" in error.message
    assert failed.type == "response.failed"
    assert failed.response.status == "failed"
    assert failed.response.error is not None and "GPU fell over" in failed.response.error.message
