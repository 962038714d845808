"""A Chat Completions stream re-emitted as the Responses API's typed events, as the official client reads them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from gateway.protocols.responses_reply import ResponsesStreamTranslator
from tests.support.openai_schema import schema_errors

REQUEST: dict[str, Any] = {
    "model": "coder",
    "instructions": "You are a coding agent.",
    "input": "Fix the failing test.",
    "tools": [
        {"type": "function", "name": "read_file", "parameters": {"type": "object"}},
        {"type": "function", "name": "shell", "parameters": {"type": "object"}},
    ],
    "stream": True,
    "max_output_tokens": 64,
}
USAGE = {
    "prompt_tokens": 900,
    "completion_tokens": 40,
    "total_tokens": 940,
    "prompt_tokens_details": {"cached_tokens": 512},
    "completion_tokens_details": {"reasoning_tokens": 12},
}
EVENT = TypeAdapter[Any](ResponseStreamEvent)


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "qwen3", "choices": [choice]}


def _usage_chunk() -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "qwen3", "choices": [], "usage": USAGE}


def _extras(model: BaseModel) -> set[str]:
    found = set(model.model_extra or {})
    for name in type(model).model_fields:
        value = getattr(model, name)
        for child in value if isinstance(value, list) else [value]:
            if isinstance(child, BaseModel):
                found |= {f"{name}.{key}" for key in _extras(child)}
    return found


def _translate(
    chunks: list[dict[str, Any]],
    *,
    end: str = "finish",
    estimate: dict[str, Any] | None = None,
    request: dict[str, Any] = REQUEST,
) -> tuple[list[bytes], list[dict[str, Any]]]:
    """Run a whole stream through the translator; the wire bytes and the parsed events, each checked against the
    SDK's models and OpenAI's published schema."""
    translator = ResponsesStreamTranslator(request=request, response_id="resp_s", model="coder")
    wire = translator.start()
    for chunk in chunks:
        wire += translator.feed(chunk)
    wire += (
        translator.finish(estimate)
        if end == "finish"
        else translator.fail("upstream stopped answering", "upstream_timeout", estimate)
    )
    events = []
    for sequence, raw in enumerate(wire):
        head, data, tail = raw.split(b"\n", 2)
        assert tail == b"\n"
        event = json.loads(data.removeprefix(b"data: "))
        assert head == b"event: " + event["type"].encode()
        assert event["sequence_number"] == sequence
        model = EVENT.validate_python(event)
        assert model.type == event["type"]
        # `store` is in every real response but not (yet) in the SDK's model; nothing else may be unknown to it.
        assert _extras(model) <= {"response.store"}, event
        assert schema_errors("ResponseStreamEvent", event) == [], event
        events.append(event)
    return wire, events


def _client(wire: list[bytes]) -> openai.OpenAI:
    body = b"".join(wire)

    def gateway(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return openai.OpenAI(
        api_key="k", base_url="http://gateway.test/v1", http_client=httpx.Client(transport=httpx.MockTransport(gateway))
    )


def _of(events: list[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    return (event for event in events if event["type"] == kind)


def test_reasoning_then_text_streams_as_a_reasoning_item_then_a_message() -> None:
    chunks = [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"reasoning_content": "f returns 1, "}),
        _chunk({"reasoning_content": "the test wants 2."}),
        _chunk({"content": "Change f "}),
        _chunk({"content": "to return 2."}),
        _chunk({}, "stop"),
        _usage_chunk(),
    ]
    wire, events = _translate(chunks)

    assert [event["type"] for event in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == []
    message_id = events[9]["item"]["id"]
    for event in events[10:16]:
        assert (event["item_id"] if "item_id" in event else event["item"]["id"]) == message_id
        assert event["output_index"] == 1
    assert next(_of(events, "response.output_text.done"))["text"] == "Change f to return 2."
    completed = events[-1]["response"]
    assert completed["status"] == "completed"
    assert completed["usage"] == {
        "input_tokens": 900,
        "input_tokens_details": {"cached_tokens": 512, "cache_write_tokens": 0},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 12},
        "total_tokens": 940,
    }

    with _client(wire).responses.stream(model="coder", input="Fix the failing test.") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas == ["Change f ", "to return 2."]
    assert final.output_text == "Change f to return 2."
    assert final.output[0].type == "reasoning"
    assert final.output[0].summary[0].text == "f returns 1, the test wants 2."


def test_two_interleaved_tool_calls_stream_their_arguments_to_their_own_items() -> None:
    chunks = [
        _chunk({"role": "assistant", "content": None}),
        _chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_a", "type": "function", "function": {"name": "read_file", "arguments": ""}}
                ]
            }
        ),
        _chunk(
            {
                "tool_calls": [
                    {"index": 1, "id": "call_b", "type": "function", "function": {"name": "shell", "arguments": ""}}
                ]
            }
        ),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"path": '}}]}),
        _chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"cmd": ["pytest"]}'}}]}),
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"a.py"}'}}]}),
        _chunk({}, "tool_calls"),
        _usage_chunk(),
    ]
    wire, events = _translate(chunks)

    added = {event["item"]["call_id"]: event for event in _of(events, "response.output_item.added")}
    assert {call: event["output_index"] for call, event in added.items()} == {"call_a": 0, "call_b": 1}
    assert all(
        event["item"]["status"] == "in_progress" and event["item"]["arguments"] == "" for event in added.values()
    )
    index_of = {event["item"]["id"]: event["output_index"] for event in added.values()}
    streamed: dict[str, str] = {}
    for event in _of(events, "response.function_call_arguments.delta"):
        assert index_of[event["item_id"]] == event["output_index"]
        streamed[event["item_id"]] = streamed.get(event["item_id"], "") + event["delta"]
    read_file, shell = added["call_a"]["item"]["id"], added["call_b"]["item"]["id"]
    assert streamed == {read_file: '{"path": "a.py"}', shell: '{"cmd": ["pytest"]}'}
    done = [(e["item_id"], e["name"], e["arguments"]) for e in _of(events, "response.function_call_arguments.done")]
    assert done == [(read_file, "read_file", '{"path": "a.py"}'), (shell, "shell", '{"cmd": ["pytest"]}')]
    assert events[-1]["type"] == "response.completed"
    assert [(item["call_id"], item["status"]) for item in events[-1]["response"]["output"]] == [
        ("call_a", "completed"),
        ("call_b", "completed"),
    ]

    with _client(wire).responses.stream(model="coder", input="Fix the failing test.") as stream:
        snapshots = {
            event.item_id: event.snapshot for event in stream if event.type == "response.function_call_arguments.delta"
        }
        final = stream.get_final_response()
    assert snapshots == {read_file: '{"path": "a.py"}', shell: '{"cmd": ["pytest"]}'}
    assert [(item.type, item.name) for item in final.output] == [
        ("function_call", "read_file"),
        ("function_call", "shell"),
    ]  # type: ignore[union-attr]


def test_a_length_finish_ends_with_response_incomplete() -> None:
    chunks = [_chunk({"role": "assistant"}), _chunk({"content": "The fix is to"}), _chunk({}, "length"), _usage_chunk()]
    wire, events = _translate(chunks)

    assert [event["type"] for event in events[-3:]] == [
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert events[-2]["item"]["status"] == "incomplete"
    response = events[-1]["response"]
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["content"][0]["text"] == "The fix is to"
    assert response["max_output_tokens"] == 64
    assert response["usage"]["output_tokens"] == 40

    with _client(wire).responses.create(model="coder", input="Fix the failing test.", stream=True) as stream:
        kinds = [event.type for event in stream]
    assert kinds[-1] == "response.incomplete"


ESTIMATE = {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32}


def test_usage_comes_from_the_final_chunk_else_from_polyroutes_estimate() -> None:
    _, with_usage = _translate([_chunk({"content": "ok"}), _chunk({}, "stop"), _usage_chunk()], estimate=ESTIMATE)
    _, without = _translate([_chunk({"content": "ok"}), _chunk({}, "stop")], estimate=ESTIMATE)

    assert with_usage[-1]["response"]["usage"]["total_tokens"] == 940  # the upstream's count wins
    assert with_usage[-1]["response"]["usage"]["input_tokens_details"]["cached_tokens"] == 512
    assert without[-1]["response"]["usage"] == {
        "input_tokens": 30,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": 2,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 32,
    }
    assert [e["type"] for e in with_usage] == [e["type"] for e in without]
    assert "usage" not in without[0]["response"]  # unknown while in progress: left out, never null


def test_a_failed_stream_reports_the_estimate_too() -> None:
    _, events = _translate([_chunk({"content": "ok"})], end="fail", estimate=ESTIMATE)
    assert events[-1]["type"] == "response.failed"
    assert events[-1]["response"]["usage"]["output_tokens"] == 2


def test_the_echoed_request_matches_the_schema() -> None:
    request = {**REQUEST, "user": "u-1", "tools": [{"type": "function", "name": "f", "strict": True,
                                                   "description": "d", "parameters": {"type": "object"}}]}
    _, events = _translate([_chunk({"content": "ok"}), _chunk({}, "stop")], estimate=ESTIMATE, request=request)
    response = events[-1]["response"]
    assert response["user"] == "u-1"
    assert response["tools"] == [{"type": "function", "name": "f", "description": "d",
                                  "parameters": {"type": "object"}, "strict": True}]
    _, events = _translate([_chunk({"content": "ok"}), _chunk({}, "stop")], estimate=ESTIMATE)
    assert "user" not in events[-1]["response"]  # not sent: absent, not null
    assert [tool["strict"] for tool in events[-1]["response"]["tools"]] == [None, None]  # not sent: not claimed


def test_fail_reports_an_error_event_then_response_failed_with_what_was_produced() -> None:
    wire, events = _translate([_chunk({"content": "Looking at"})], end="fail")

    assert [event["type"] for event in events[-2:]] == ["error", "response.failed"]
    error, failed = events[-2], events[-1]
    assert (error["code"], error["message"], error["param"]) == ("upstream_timeout", "upstream stopped answering", None)
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "server_error", "message": "upstream stopped answering"}
    assert failed["response"]["output"][0]["status"] == "incomplete"
    assert failed["response"]["output"][0]["content"][0]["text"] == "Looking at"

    with _client(wire).responses.create(model="coder", input="Fix the failing test.", stream=True) as stream:
        kinds = [event.type for event in stream]
    assert kinds[-2:] == ["error", "response.failed"]


def test_fail_before_anything_was_sent_still_opens_the_response_and_nothing_follows_the_end() -> None:
    translator = ResponsesStreamTranslator(request=REQUEST, response_id="resp_f", model="coder")
    wire = translator.fail("rate limited by every target", "rate_limit_exceeded")
    events = [json.loads(raw.split(b"\n")[1].removeprefix(b"data: ")) for raw in wire]

    assert [event["type"] for event in events] == [
        "response.created",
        "response.in_progress",
        "error",
        "response.failed",
    ]
    assert events[-1]["response"]["error"]["code"] == "rate_limit_exceeded"
    assert translator.feed(_chunk({"content": "late"})) == []
    assert translator.finish() == []
    assert translator.start() == []
