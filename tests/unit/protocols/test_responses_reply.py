"""A Chat Completions reply read back by a Responses client: the `response` object and the error body."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response
from pydantic import BaseModel

from gateway.error_classes import AttemptFailure, ErrorClass
from gateway.errors import AllTargetsFailedError, BadRequestError
from gateway.protocols.adapters import RESPONSES, translate_reply
from gateway.protocols.responses_reply import chat_to_response, error_body
from gateway.providers.base import UpstreamReply
from tests.support.openai_schema import schema_errors

REQUEST: dict[str, Any] = {
    "model": "coder",
    "instructions": "You are a coding agent.",
    "input": "Fix the failing test.",
    "tools": [
        {"type": "function", "name": "read_file", "parameters": {"type": "object", "properties": {}}, "strict": False},
        {"type": "function", "name": "shell", "description": "Run a command.", "parameters": {"type": "object"}},
    ],
    "tool_choice": "auto",
    "temperature": 0.2,
    "max_output_tokens": 512,
    "reasoning": {"effort": "low", "summary": "auto"},
    "metadata": {"ticket": "T-1"},
}
USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "prompt_tokens_details": {"cached_tokens": 1024},
    "completion_tokens_details": {"reasoning_tokens": 120},
}


def _chat(message: dict[str, Any], finish_reason: str, usage: dict[str, Any] | None = USAGE) -> dict[str, Any]:
    chat: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_764_000_000,
        "model": "Qwen/Qwen3-32B",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
    }
    if usage is not None:
        chat["usage"] = usage
    return chat


def _extras(model: BaseModel, path: str = "response") -> set[str]:
    """Fields the SDK's models do not define: a typo or an invented field shows up here."""
    found = {f"{path}.{key}" for key in model.model_extra or {}}
    for name in type(model).model_fields:
        value = getattr(model, name)
        for index, child in enumerate(value if isinstance(value, list) else [value]):
            if isinstance(child, BaseModel):
                found |= _extras(child, f"{path}.{name}[{index}]" if isinstance(value, list) else f"{path}.{name}")
    return found


def _validated(obj: dict[str, Any]) -> Response:
    response = Response.model_validate(obj)
    # `store` is in every real response but not (yet) in the SDK's model.
    assert _extras(response) == {"response.store"}
    assert schema_errors("Response", obj) == []  # OpenAI's published schema, stricter than the SDK's models
    return response


def test_text_reply_becomes_a_completed_response_with_usage_and_echoed_parameters() -> None:
    obj = chat_to_response(
        _chat({"content": "The test expects 2; f returns 1."}, "stop"), request=REQUEST, response_id="resp_abc"
    )
    response = _validated(obj)

    assert response.id == "resp_abc"
    assert response.status == "completed"
    assert response.incomplete_details is None
    assert response.output_text == "The test expects 2; f returns 1."
    assert obj["output"] == [
        {
            "id": "msg_abc_0",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [
                {"type": "output_text", "text": "The test expects 2; f returns 1.", "annotations": [], "logprobs": []}
            ],
        }
    ]
    assert obj["usage"] == {
        "input_tokens": 1200,
        "input_tokens_details": {"cached_tokens": 1024, "cache_write_tokens": 0},
        "output_tokens": 300,
        "output_tokens_details": {"reasoning_tokens": 120},
        "total_tokens": 1500,
    }
    assert response.model == "Qwen/Qwen3-32B"
    assert response.created_at == 1_764_000_000
    assert response.instructions == "You are a coding agent."
    assert [tool.name for tool in response.tools] == ["read_file", "shell"]  # type: ignore[union-attr]
    assert response.temperature == 0.2
    assert response.max_output_tokens == 512
    assert response.tool_choice == "auto"
    assert response.reasoning is not None and response.reasoning.effort == "low"
    assert response.metadata == {"ticket": "T-1"}
    assert response.parallel_tool_calls is True
    assert obj["store"] is False


def test_reasoning_text_and_tool_calls_become_items_in_order() -> None:
    message = {
        "content": "Reading both files.",
        "reasoning_content": "The user wants the test fixed; read the test and the code.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": '{"path":"a.py"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "read_file", "arguments": '{"path":"b.py"}'}},
        ],
    }
    obj = chat_to_response(_chat(message, "tool_calls"), request=REQUEST, response_id="resp_t")
    response = _validated(obj)

    assert response.status == "completed"
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call", "function_call"]
    assert obj["output"][0]["summary"] == [
        {"type": "summary_text", "text": "The user wants the test fixed; read the test and the code."}
    ]
    assert obj["output"][2:] == [
        {
            "id": "fc_t_2",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_1",
            "name": "read_file",
            "arguments": '{"path":"a.py"}',
        },
        {
            "id": "fc_t_3",
            "type": "function_call",
            "status": "completed",
            "call_id": "call_2",
            "name": "read_file",
            "arguments": '{"path":"b.py"}',
        },
    ]
    assert len({item["id"] for item in obj["output"]}) == 4


@pytest.mark.parametrize(
    ("finish_reason", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_a_cut_off_reply_is_incomplete_with_its_reason(finish_reason: str, reason: str) -> None:
    obj = chat_to_response(_chat({"content": "The answer is"}, finish_reason), request=REQUEST, response_id="resp_l")
    response = _validated(obj)

    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == reason
    assert obj["output"][0]["status"] == "incomplete"
    assert response.output_text == "The answer is"


def test_a_refusal_and_a_reply_without_usage_which_polyroute_estimates() -> None:
    chat = _chat({"content": None, "refusal": "I can't help with that."}, "stop", usage=None)
    reply = translate_reply(RESPONSES, UpstreamReply(body=json.dumps(chat).encode(), usage=None), REQUEST, 40)
    obj = json.loads(reply.body)
    response = _validated(obj)

    assert obj["output"][0]["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]
    assert response.output_text == ""
    # The estimate accounting records (routing's prompt estimate, the generated text / 4) is what the client sees.
    assert reply.usage is not None and reply.usage.estimated
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (40, 6)
    assert obj["usage"]["input_tokens"] == 40 and obj["usage"]["output_tokens"] == 6
    assert obj["usage"]["total_tokens"] == 46


def test_the_echoed_request_has_the_published_shape() -> None:
    request = {**REQUEST, "user": None, "tools": [{"type": "function", "name": "f", "parameters": {}}]}
    obj = chat_to_response(_chat({"content": "ok"}, "stop"), request=request, response_id="resp_e")
    _validated(obj)
    assert "user" not in obj  # sent as null: absent, as OpenAI's schema has it (a string or nothing)
    assert obj["tools"] == [{"type": "function", "name": "f", "parameters": {}, "strict": None}]
    obj = chat_to_response(_chat({"content": "ok"}, "stop"), request={**REQUEST, "user": "u-7"}, response_id="resp_u")
    assert _validated(obj).user == "u-7"
    assert [tool["strict"] for tool in obj["tools"]] == [False, None]  # as sent; never claimed when not sent


def test_the_official_client_reads_the_translated_response() -> None:
    obj = chat_to_response(
        _chat(
            {
                "content": None,
                "tool_calls": [
                    {"id": "call_9", "type": "function", "function": {"name": "shell", "arguments": '{"cmd":["ls"]}'}}
                ],
            },
            "tool_calls",
        ),
        request=REQUEST,
        response_id="resp_c",
    )
    client = openai.OpenAI(
        api_key="k",
        base_url="http://gateway.test/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200, json=obj))),
    )
    response = client.responses.create(model="coder", input="list files")

    call = response.output[0]
    assert call.type == "function_call"
    assert (call.call_id, call.name, json.loads(call.arguments)) == ("call_9", "shell", {"cmd": ["ls"]})
    assert response.usage is not None and response.usage.input_tokens_details.cached_tokens == 1024


def test_error_body_is_the_openai_envelope() -> None:
    assert json.loads(error_body(BadRequestError("'store': true asks to keep the response.", param="store"))) == {
        "error": {
            "message": "'store': true asks to keep the response.",
            "type": "invalid_request_error",
            "param": "store",
            "code": None,
        }
    }
    failed = AllTargetsFailedError([AttemptFailure("qwen-local", ErrorClass.TIMEOUT, "no first token in 15s")])
    assert json.loads(error_body(failed))["error"]["code"] == "upstream_timeout"


@pytest.mark.parametrize(
    ("failures", "status", "code"),
    [
        ([AttemptFailure("a", ErrorClass.CONTEXT_WINDOW, "too long", 400, context_window=8000)], 400,
         "context_length_exceeded"),
        ([AttemptFailure("a", ErrorClass.CONTENT_POLICY, "DataInspectionFailed", 400)], 400,
         "content_policy_violation"),
        ([AttemptFailure("a", ErrorClass.RATE_LIMIT, "Throttling", 429, retry_after=2.5)], 429, "rate_limit_exceeded"),
        ([AttemptFailure("a", ErrorClass.AUTH, "InvalidApiKey", 401)], 502, "upstream_error"),
        ([AttemptFailure("a", ErrorClass.CONNECTION_ERROR, "refused")], 503, "upstream_unavailable"),
        ([], 503, "upstream_unavailable"),
    ],
)
def test_every_all_targets_failed_envelope_matches_the_published_schema(
    failures: list[AttemptFailure], status: int, code: str
) -> None:
    err = AllTargetsFailedError(failures)
    body = json.loads(error_body(err))
    assert schema_errors("ErrorResponse", body) == []
    assert (err.status, body["error"]["code"]) == (status, code)
    assert body["error"]["type"] == {400: "invalid_request_error", 429: "rate_limit_error"}.get(status, "api_error")
