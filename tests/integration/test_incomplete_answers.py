"""A 200 from an upstream that is not a complete answer in its protocol (an error object, no choices, no stop reason,
no status) never reaches a client as a success: it falls back, or ends in a 502 in the client's protocol. A stream
that stops cleanly before its last event ends with the protocol's error event. Official clients, a real gateway, an
upstream on loopback that answers the exact bytes (tests/support/canned_upstream.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest

from tests.support.canned_upstream import CannedUpstream, canned_upstream, json_answer, stream_answer
from tests.support.processes import GatewayProcess, Upstream, start_gateway, start_simulated

POLICY = """
version: 1
providers:
  canned:
    {{type: openai, base_url: {canned}, hosting: cloud, jurisdiction: us, vendor: test,
     protocols: [chat, responses, messages]}}
  canned-chat: {{type: openai, base_url: {canned}, hosting: cloud, jurisdiction: us, vendor: test}}
  vllm: {{type: openai, base_url: {vllm}, hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  native: {{provider: canned, model: m, price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
  chat-only: {{provider: canned-chat, model: m, price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
  good: {{provider: vllm, model: Qwen/Qwen3-32B, price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
aliases:
  native: {{targets: [native]}}
  translated: {{targets: [chat-only]}}
  native-then-good: {{targets: [native, good]}}
fallback:
  retries: {{attempts: 0}}
  circuit_breaker: {{failures: 1000, window: 10s, cooldown: 1s}}
"""
ASK: list[Any] = [{"role": "user", "content": "Say something."}]
# What Model Studio's compatible mode answers for an internal error, here with HTTP 200 (the simulator's
# `inband_error` fault on a non-stream request; the soak of issue 21 found it relayed as a success).
ERROR_200 = {
    "error": {"message": "An internal error has occured, please try again later.", "type": "internal_error",
              "param": None, "code": "InternalError"},
    "id": "chatcmpl-x",
    "request_id": "r-1",
}
USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
CHAT = "/v1/chat/completions"


def _chat(choices: list[Any]) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": choices, "usage": USAGE}


MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
           "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn", "stop_sequence": None,
           "usage": {"input_tokens": 3, "output_tokens": 2}}
RESPONSE = {"id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": "m",
            "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "error": None,
            "incomplete_details": None, "usage": None}
NO_CHOICES = _chat([])
NO_FINISH = _chat([{"index": 0, "message": {"role": "assistant", "content": "half"}, "finish_reason": None}])


@pytest.fixture(scope="module")
def vllm() -> Iterator[Upstream]:
    with start_simulated("vllm", name="sim-vllm", chunks=4) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def canned() -> Iterator[CannedUpstream]:
    with canned_upstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, canned: CannedUpstream, vllm: Upstream) -> Iterator[
    GatewayProcess
]:
    policy: Path = tmp_path_factory.mktemp("incomplete") / "policy.yaml"
    policy.write_text(POLICY.format(canned=canned.base_url, vllm=vllm.base_url))
    with start_gateway(policy) as started:
        yield started


@pytest.fixture
def claude(gateway: GatewayProcess) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.base_url, api_key="any", max_retries=0) as client:
        yield client


@pytest.fixture
def sdk(gateway: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="any", max_retries=0) as client:
        yield client


# --- non-stream: an incomplete 200 is a failed attempt --------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (ERROR_200, "An internal error has occured"),
        ({**MESSAGE, "stop_reason": None}, "Messages message that has no stop_reason"),
        ({k: v for k, v in MESSAGE.items() if k != "usage"}, "Messages message that has no usage"),
    ],
    ids=["error-object", "no-stop-reason", "no-usage"],
)
def test_a_native_messages_200_that_is_not_a_whole_message_is_an_anthropic_502(
    canned: CannedUpstream, claude: anthropic.Anthropic, answer: dict[str, Any], words: str
) -> None:
    canned.answers["/v1/messages"] = json_answer(answer)
    with pytest.raises(anthropic.APIStatusError) as failed:
        claude.messages.create(model="native", max_tokens=16, messages=ASK)
    assert failed.value.status_code == 502
    assert failed.value.body["type"] == "error"  # type: ignore[index]
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert words in failed.value.body["error"]["message"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (ERROR_200, "An internal error has occured"),
        ({k: v for k, v in RESPONSE.items() if k != "status"}, "Responses response that has no status"),
        ({**RESPONSE, "object": "chat.completion"}, "Responses response that is not a response"),
    ],
    ids=["error-object", "no-status", "not-a-response"],
)
def test_a_native_responses_200_that_is_not_a_response_is_an_openai_502(
    canned: CannedUpstream, sdk: openai.OpenAI, answer: dict[str, Any], words: str
) -> None:
    canned.answers["/v1/responses"] = json_answer(answer)
    with pytest.raises(openai.APIStatusError) as failed:
        sdk.responses.create(model="native", input="Say something.")
    assert failed.value.status_code == 502
    assert failed.value.code == "upstream_error"
    assert words in failed.value.message


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (ERROR_200, "An internal error has occured"),
        (NO_CHOICES, "chat completion that has no choices"),
        (NO_FINISH, "chat completion that has a choice without a finish_reason"),
    ],
    ids=["error-object", "no-choices", "no-finish-reason"],
)
def test_an_incomplete_chat_200_is_a_502_for_chat_messages_and_responses_clients(
    canned: CannedUpstream, claude: anthropic.Anthropic, sdk: openai.OpenAI, answer: dict[str, Any], words: str
) -> None:
    canned.answers[CHAT] = json_answer(answer)
    with pytest.raises(openai.APIStatusError) as chat:
        sdk.chat.completions.create(model="translated", messages=ASK)
    assert chat.value.status_code == 502 and words in chat.value.message
    with pytest.raises(anthropic.APIStatusError) as messages:
        claude.messages.create(model="translated", max_tokens=16, messages=ASK)
    assert messages.value.status_code == 502
    assert words in messages.value.body["error"]["message"]  # type: ignore[index]
    with pytest.raises(openai.APIStatusError) as responses:
        sdk.responses.create(model="translated", input="Say something.")
    assert responses.value.status_code == 502 and words in responses.value.message


def test_an_error_object_with_200_falls_back_to_the_next_target(
    canned: CannedUpstream, claude: anthropic.Anthropic, sdk: openai.OpenAI
) -> None:
    canned.answers["/v1/messages"] = json_answer(ERROR_200)
    canned.answers["/v1/responses"] = json_answer(ERROR_200)
    raw = claude.messages.with_raw_response.create(model="native-then-good", max_tokens=16, messages=ASK)
    message = raw.parse()
    assert message.stop_reason == "end_turn" and message.content
    assert raw.headers["x-polyroute-deployment"] == "good"
    assert raw.headers["x-polyroute-fallback-reason"] == "server_error"
    response = sdk.responses.create(model="native-then-good", input="Say something.")
    assert response.status == "completed" and response.output_text


def test_a_complete_answer_still_passes(
    canned: CannedUpstream, claude: anthropic.Anthropic, sdk: openai.OpenAI
) -> None:
    done = _chat([{"index": 0, "message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}])
    canned.answers[CHAT] = json_answer(done)
    canned.answers["/v1/messages"] = json_answer(MESSAGE)
    canned.answers["/v1/responses"] = json_answer(RESPONSE)
    assert sdk.chat.completions.create(model="translated", messages=ASK).choices[0].message.content == "whole"
    assert claude.messages.create(model="native", max_tokens=16, messages=ASK).stop_reason == "end_turn"
    assert sdk.responses.create(model="native", input="Say something.").status == "completed"


# --- streams that stop cleanly before their last event -------------------------------------------------------


def _sse(data: dict[str, Any], name: str | None = None) -> bytes:
    head = b"event: %s\n" % name.encode() if name else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


CHAT_CUT = stream_answer(
    _sse({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
          "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hal"}, "finish_reason": None}]}),
    _sse({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
          "choices": [{"index": 0, "delta": {"content": "f"}, "finish_reason": None}]}),
)
MESSAGES_CUT = stream_answer(
    _sse({"type": "message_start", "message": {**MESSAGE, "content": [], "stop_reason": None}}, "message_start"),
    _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
         "content_block_start"),
    _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hal"}},
         "content_block_delta"),
)
RESPONSES_CUT = stream_answer(
    _sse({"type": "response.created", "sequence_number": 0, "response": {**RESPONSE, "status": "in_progress"}},
         "response.created"),
    _sse({"type": "response.in_progress", "sequence_number": 1, "response": {**RESPONSE, "status": "in_progress"}},
         "response.in_progress"),
)


def test_a_chat_stream_cut_before_done_ends_with_an_error_event(canned: CannedUpstream, sdk: openai.OpenAI) -> None:
    canned.answers[CHAT] = CHAT_CUT
    seen: list[str] = []
    with pytest.raises(openai.APIError) as failed:
        for chunk in sdk.chat.completions.create(model="translated", messages=ASK, stream=True):
            seen.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(seen) == "half"  # what came first still arrived
    assert "stream closed before [DONE]" in failed.value.message


@pytest.mark.parametrize("alias", ["native", "translated"])
def test_a_messages_stream_cut_before_message_stop_ends_with_an_anthropic_error_event(
    canned: CannedUpstream, claude: anthropic.Anthropic, alias: str
) -> None:
    canned.answers[CHAT] = CHAT_CUT
    canned.answers["/v1/messages"] = MESSAGES_CUT
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as failed, claude.messages.stream(
        model=alias, max_tokens=16, messages=ASK
    ) as stream:
        seen.extend(event.type for event in stream)
    assert seen[0] == "message_start" and "message_stop" not in seen
    assert failed.value.body["type"] == "error"  # type: ignore[index]
    assert "stream closed before" in failed.value.body["error"]["message"]  # type: ignore[index]


@pytest.mark.parametrize("alias", ["native", "translated"])
def test_a_responses_stream_cut_before_completed_ends_with_an_error_event(
    canned: CannedUpstream, sdk: openai.OpenAI, alias: str
) -> None:
    canned.answers[CHAT] = CHAT_CUT
    canned.answers["/v1/responses"] = RESPONSES_CUT
    with sdk.responses.create(model=alias, input="Say something.", stream=True) as stream:
        kinds = [event.type for event in stream]
    assert kinds[0] == "response.created"
    assert "response.completed" not in kinds
    assert "error" in kinds[-2:]  # the error event (a translated stream adds response.failed after it)
