"""A Responses request becomes the Chat Completions request that asks the same thing, or a 400 naming the field."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import openai
import pytest

from gateway.errors import BadRequestError
from gateway.protocols.responses_request import responses_to_chat

IMAGE = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
READ_FILE = {
    "type": "function",
    "name": "read_file",
    "description": "Read a file of the repository.",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
    "strict": False,
}
SHELL = {
    "type": "function",
    "name": "shell",
    "description": "Run a command.",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "array", "items": {"type": "string"}}}},
}

# A third turn of a coding agent, sent as Codex sends it: store false, full history, encrypted reasoning included.
AGENT_TURN: dict[str, Any] = {
    "model": "coder",
    "instructions": "You are a coding agent working in the user's repository.",
    "input": [
        {
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": "Sandbox: workspace-write"}],
        },
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "Why does this test fail? Screenshot attached."},
                {"type": "input_image", "image_url": IMAGE, "detail": "high"},
            ],
        },
        {
            "type": "reasoning",
            "id": "rs_1",
            "summary": [{"type": "summary_text", "text": "Read the test, then run it."}],
            "encrypted_content": "gAAAAABo-opaque",
        },
        {
            "type": "message",
            "role": "assistant",
            "id": "msg_1",
            "status": "completed",
            "content": [{"type": "output_text", "text": "Let me look at the test.", "annotations": []}],
        },
        {
            "type": "function_call",
            "id": "fc_1",
            "call_id": "call_a",
            "name": "read_file",
            "arguments": '{"path": "tests/test_x.py"}',
            "status": "completed",
        },
        {
            "type": "function_call",
            "id": "fc_2",
            "call_id": "call_b",
            "name": "shell",
            "arguments": '{"cmd": ["pytest", "-q"]}',
            "status": "completed",
        },
        {"type": "function_call_output", "call_id": "call_a", "output": "def test_x():\n    assert f() == 2\n"},
        {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "1 failed"}]},
        {"type": "function_call", "call_id": "call_c", "name": "read_file", "arguments": '{"path": "x.py"}'},
        {"type": "function_call_output", "call_id": "call_c", "output": "def f():\n    return 1\n"},
        {"role": "user", "content": "Fix it."},
    ],
    "tools": [READ_FILE, SHELL],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "session-42",
    "max_output_tokens": 4096,
    "temperature": 0.2,
    "metadata": {"data_class": "internal"},
}


def test_a_coding_agent_turn_becomes_the_same_conversation_in_chat_form() -> None:
    chat = responses_to_chat(copy.deepcopy(AGENT_TURN))

    assert chat == {
        "model": "coder",
        "messages": [
            {"role": "system", "content": "You are a coding agent working in the user's repository."},
            {"role": "system", "content": "Sandbox: workspace-write"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Why does this test fail? Screenshot attached."},
                    {"type": "image_url", "image_url": {"url": IMAGE, "detail": "high"}},
                ],
            },
            {
                "role": "assistant",
                "content": "Let me look at the test.",
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "tests/test_x.py"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "shell", "arguments": '{"cmd": ["pytest", "-q"]}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": "def test_x():\n    assert f() == 2\n"},
            {"role": "tool", "tool_call_id": "call_b", "content": "1 failed"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_c",
                        "type": "function",
                        "function": {"name": "read_file", "arguments": '{"path": "x.py"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_c", "content": "def f():\n    return 1\n"},
            {"role": "user", "content": "Fix it."},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "read_file",
                    "description": "Read a file of the repository.",
                    "parameters": READ_FILE["parameters"],
                    "strict": False,
                },
            },
            {
                "type": "function",
                "function": {"name": "shell", "description": "Run a command.", "parameters": SHELL["parameters"]},
            },
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "reasoning_effort": "medium",
        "stream": True,
        "stream_options": {"include_usage": True},
        "prompt_cache_key": "session-42",
        "max_completion_tokens": 4096,
        "temperature": 0.2,
        "metadata": {"data_class": "internal"},
    }


def test_the_body_the_official_client_sends_is_translated() -> None:
    sent: list[dict[str, Any]] = []

    def upstream(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        return httpx.Response(400, json={"error": {"message": "captured", "type": "invalid_request_error"}})

    client = openai.OpenAI(
        api_key="k",
        base_url="http://gateway.test/v1",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(upstream)),
    )
    with pytest.raises(openai.BadRequestError):
        client.responses.create(
            model="coder",
            instructions="Answer briefly.",
            input="What is 2+2?",
            text={"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
            tool_choice={"type": "function", "name": "read_file"},
            tools=[READ_FILE],  # type: ignore[list-item]
        )

    chat = responses_to_chat(sent[0])
    assert chat["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    }
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "read_file"}}
    assert "stream" not in chat


def test_parameters_with_a_direct_chat_equivalent() -> None:
    chat = responses_to_chat(
        {
            "model": "m",
            "input": "hi",
            "text": {"format": {"type": "json_object"}, "verbosity": "low"},
            "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "a"}]},
            "top_p": 0.9,
            "user": "u-1",
            "service_tier": "flex",
            "safety_identifier": "s-1",
            "truncation": "disabled",
            "stream_options": {"include_obfuscation": False},
            "stream": False,
        }
    )
    assert chat == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_object"},
        "verbosity": "low",
        "tool_choice": {
            "type": "allowed_tools",
            "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "a"}}]},
        },
        "top_p": 0.9,
        "user": "u-1",
        "service_tier": "flex",
        "safety_identifier": "s-1",
    }


def test_fields_the_responses_api_does_not_define_pass_through() -> None:
    chat = responses_to_chat(
        {"model": "m", "input": "hi", "stop": ["\n\n"], "seed": 7, "top_k": 20, "chat_template_kwargs": {"a": 1}}
    )
    assert chat["stop"] == ["\n\n"]
    assert chat["seed"] == 7
    assert chat["top_k"] == 20
    assert chat["chat_template_kwargs"] == {"a": 1}


def test_assistant_refusal_and_a_pdf_file_are_carried() -> None:
    chat = responses_to_chat(
        {
            "model": "m",
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}
                    ],
                },
                {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
            ],
        }
    )
    assert chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}
            ],
        },
        {"role": "assistant", "content": None, "refusal": "I can't."},
    ]


def _refusal(body: dict[str, Any]) -> BadRequestError:
    with pytest.raises(BadRequestError) as caught:
        responses_to_chat({"model": "m", "input": "hi", **body})
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id", "send the whole conversation in 'input'"),
        ({"conversation": "conv_1"}, "conversation", "send the whole conversation in 'input'"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt", "state stored on the server"),
        ({"store": True}, "store", "'store': true"),
        ({"background": True}, "background", "'background': true"),
        ({"include": ["file_search_call.results"]}, "include[0]", "'file_search_call.results'"),
        ({"include": ["message.output_text.logprobs"]}, "include[0]", "'message.output_text.logprobs'"),
        ({"truncation": "auto"}, "truncation", "'truncation'"),
        ({"top_logprobs": 5}, "top_logprobs", "'top_logprobs'"),
        ({"max_tool_calls": 3}, "max_tool_calls", "'max_tool_calls'"),
        ({"context_management": [{"type": "compaction"}]}, "context_management", "'context_management'"),
        ({"reasoning": {"effort": "high", "mode": "pro"}}, "reasoning.mode", "'reasoning.mode'"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format.type", "'grammar'"),
        ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice", "'tool_choice'"),
        ({"max_tokens": 10}, "max_tokens", "'max_output_tokens'"),
        ({"messages": []}, "messages", "'input'"),
        ({"n": 2}, "n", "'n' is not a Responses API parameter"),
        ({"input": None}, "input", "Missing required parameter: 'input'"),
        ({"model": ""}, "model", "model parameter"),
    ],
)
def test_a_parameter_that_cannot_be_translated_is_refused_by_name(body: dict[str, Any], param: str, says: str) -> None:
    err = _refusal(body)
    assert err.param == param
    assert says in err.message


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "web_search"},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "code_interpreter", "container": {"type": "auto"}},
        {"type": "computer_use_preview", "display_width": 1024, "display_height": 768, "environment": "linux"},
        {"type": "mcp", "server_label": "git", "server_url": "https://mcp.example"},
        {"type": "custom", "name": "apply_patch"},
        {"type": "local_shell"},
    ],
)
def test_built_in_tools_are_refused_by_name(tool: dict[str, Any]) -> None:
    err = _refusal({"tools": [READ_FILE, tool]})
    assert err.param == "tools[1].type"
    assert repr(tool["type"]) in err.message
    assert "only 'function' tools" in err.message


def test_a_function_tool_field_without_chat_equivalent_is_refused() -> None:
    err = _refusal({"tools": [{**READ_FILE, "defer_loading": True}]})
    assert err.param == "tools[0].defer_loading"


@pytest.mark.parametrize(
    ("item", "param", "says"),
    [
        (
            {"role": "user", "content": [{"type": "input_image", "file_id": "file-1", "detail": "auto"}]},
            "input[0].content[0].file_id",
            "send the image as 'image_url'",
        ),
        (
            {"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]},
            "input[0].content[0].file_id",
            "'file_data'",
        ),
        (
            {"role": "assistant", "content": [{"type": "input_image", "image_url": IMAGE, "detail": "auto"}]},
            "input[0].content[0]",
            "only in user messages",
        ),
        (
            {"role": "user", "content": [{"type": "input_image", "image_url": IMAGE, "detail": "original"}]},
            "input[0].content[0].detail",
            "'original'",
        ),
        ({"type": "item_reference", "id": "msg_1"}, "input[0]", "stored item"),
        (
            {"type": "computer_call_output", "call_id": "c", "output": {"type": "computer_screenshot"}},
            "input[0].type",
            "'computer_call_output'",
        ),
        (
            {"type": "function_call_output", "call_id": "c", "output": [{"type": "input_image", "image_url": IMAGE}]},
            "input[0].output[0].type",
            "carries text only",
        ),
        ({"role": "tool", "content": "x"}, "input[0].role", "'tool'"),
        ({"type": "function_call", "call_id": "c", "name": "f"}, "input[0].arguments", "must be a string"),
    ],
)
def test_an_input_item_that_cannot_be_translated_is_refused_by_path(
    item: dict[str, Any], param: str, says: str
) -> None:
    err = _refusal({"input": [item]})
    assert err.param == param
    assert says in err.message


def test_store_false_and_encrypted_reasoning_include_are_accepted() -> None:
    chat = responses_to_chat(
        {"model": "m", "input": "hi", "store": False, "background": False, "include": ["reasoning.encrypted_content"]}
    )
    assert chat == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_tool_settings_that_ask_nothing_without_tools_are_not_sent() -> None:
    bare = responses_to_chat({"model": "m", "input": "hi", "parallel_tool_calls": False, "tool_choice": "auto"})
    with_tools = responses_to_chat(
        {"model": "m", "input": "hi", "parallel_tool_calls": False, "tool_choice": "auto", "tools": [SHELL]}
    )

    assert "parallel_tool_calls" not in bare and "tool_choice" not in bare
    assert with_tools["parallel_tool_calls"] is False
    assert with_tools["tool_choice"] == "auto"
