"""The simulated upstreams, driven over real loopback HTTP by the official openai client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam, ChatCompletionToolParam

from tests.support.processes import Upstream, start_simulated

MODELS = {"modelstudio": "qwen3.6-plus", "vllm": "Qwen/Qwen3-32B", "ollama": "qwen3:32b"}
FLAVORS = sorted(MODELS)
HELLO: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello to the router"},
]
WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}},
    },
}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Upstream]]:
    started = {
        "modelstudio": start_simulated("modelstudio", name="sim-cloud", api_key="sk-sim-secret"),
        "vllm": start_simulated("vllm", name="sim-vllm", models=["Qwen/Qwen3-32B"], chunks=5),
        "ollama": start_simulated("ollama", name="sim-ollama"),
    }
    try:
        yield started
    finally:
        for upstream in started.values():
            upstream.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(upstreams: dict[str, Upstream]) -> Iterator[None]:
    yield
    for upstream in upstreams.values():
        upstream.clear()


def client(upstream: Upstream, **options: float) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=upstream.base_url,
        api_key=upstream.api_key or "unused",
        max_retries=0,
        timeout=options.get("timeout", 10),
    )


def test_models_lists_the_configured_ids(upstreams: dict[str, Upstream]) -> None:
    assert [m.id for m in client(upstreams["vllm"]).models.list().data] == ["Qwen/Qwen3-32B"]
    assert "qwen3.6-plus" in {m.id for m in client(upstreams["modelstudio"]).models.list().data}


@pytest.mark.parametrize("flavor", FLAVORS)
def test_chat_reply_names_the_server_and_echoes_the_model(upstreams: dict[str, Upstream], flavor: str) -> None:
    upstream = upstreams[flavor]
    no_thinking = {"enable_thinking": False}  # qwen3.6-plus thinks unless told not to
    reply = client(upstream).chat.completions.create(model=MODELS[flavor], messages=HELLO, extra_body=no_thinking)
    assert reply.model == MODELS[flavor]
    assert reply.system_fingerprint == "polyroute-simulated"
    assert reply.choices[0].message.content == f"[{upstream.name}] echo: Say hello to the router"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 7  # words in the reply
    assert reply.usage.prompt_tokens == len("You are terse.Say hello to the router") // 4


def test_modelstudio_reports_cached_tokens_and_echoes_unknown_keys(upstreams: dict[str, Upstream]) -> None:
    reply = client(upstreams["modelstudio"]).chat.completions.create(
        model="qwen3.6-plus", messages=HELLO, extra_body={"enable_search": True}
    )
    assert reply.usage is not None
    assert reply.usage.prompt_tokens_details is not None
    assert reply.usage.prompt_tokens_details.cached_tokens == reply.usage.prompt_tokens // 2
    assert (reply.model_extra or {})["x_received_extra"] == ["enable_search"]


def test_modelstudio_thinking_comes_back_as_reasoning_content(upstreams: dict[str, Upstream]) -> None:
    cloud = client(upstreams["modelstudio"])
    reply = cloud.chat.completions.create(model="qwen3.6-plus", messages=HELLO, extra_body={"enable_thinking": True})
    assert (reply.choices[0].message.model_extra or {}).get("reasoning_content")

    stream = cloud.chat.completions.create(
        model="qwen3.6-plus", messages=HELLO, stream=True, extra_body={"enable_thinking": True}
    )
    kinds = []
    for chunk in stream:
        delta = chunk.choices[0].delta if chunk.choices else None
        if delta is not None and (delta.model_extra or {}).get("reasoning_content"):
            kinds.append("reasoning")
        elif delta is not None and delta.content:
            kinds.append("content")
    assert kinds[0] == "reasoning"
    assert kinds[-1] == "content"
    assert kinds.index("content") > max(i for i, kind in enumerate(kinds) if kind == "reasoning")


@pytest.mark.parametrize("flavor", FLAVORS)
def test_stream_with_include_usage_ends_with_a_usage_chunk(upstreams: dict[str, Upstream], flavor: str) -> None:
    api = client(upstreams[flavor])
    expected = api.chat.completions.create(model=MODELS[flavor], messages=HELLO)
    chunks = list(
        api.chat.completions.create(
            model=MODELS[flavor], messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage == expected.usage
    assert all(c.object == "chat.completion.chunk" and c.model == MODELS[flavor] for c in chunks)


def test_stream_without_include_usage_reports_no_usage(upstreams: dict[str, Upstream]) -> None:
    chunks = list(
        client(upstreams["vllm"]).chat.completions.create(model="Qwen/Qwen3-32B", messages=HELLO, stream=True)
    )
    assert all(c.usage is None and c.choices for c in chunks)
    assert len([c for c in chunks if c.choices[0].delta.content]) == 5  # chunks=5 for this server


def test_legacy_completions_stream_and_non_stream(upstreams: dict[str, Upstream]) -> None:
    api = client(upstreams["ollama"])
    result = api.completions.create(model="qwen3:32b", prompt="once upon a time")
    assert result.choices[0].text == "[sim-ollama] echo: once upon a time"
    stream = api.completions.create(
        model="qwen3:32b", prompt="once upon a time", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == result.choices[0].text
    assert chunks[-1].usage == result.usage


@pytest.mark.parametrize("flavor", FLAVORS)
def test_embeddings_are_deterministic_and_agree_in_float_and_base64(
    upstreams: dict[str, Upstream], flavor: str
) -> None:
    api = client(upstreams[flavor])
    as_base64 = api.embeddings.create(model=MODELS[flavor], input=["one", "two"])  # the client asks for base64
    as_float = api.embeddings.create(model=MODELS[flavor], input=["one", "two"], encoding_format="float")
    assert upstreams[flavor].stats()["last_body"]["encoding_format"] == "float"
    vectors = [d.embedding for d in as_float.data]
    assert [d.embedding for d in as_base64.data] == vectors
    assert len(vectors[0]) == 8
    assert vectors[0] != vectors[1]
    assert as_float.usage.prompt_tokens == 2


def test_tool_call_non_stream_and_stream(upstreams: dict[str, Upstream]) -> None:
    api = client(upstreams["vllm"])
    ask: list[ChatCompletionMessageParam] = [{"role": "user", "content": "please call tool for Hangzhou"}]
    reply = api.chat.completions.create(model="Qwen/Qwen3-32B", messages=ask, tools=[WEATHER_TOOL])
    assert reply.choices[0].finish_reason == "tool_calls"
    calls = reply.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].type == "function"
    assert calls[0].function.name == "get_weather"
    assert json.loads(calls[0].function.arguments) == {"city": "please call tool for Hangzhou", "days": 1}

    chunks = list(api.chat.completions.create(model="Qwen/Qwen3-32B", messages=ask, tools=[WEATHER_TOOL], stream=True))
    pieces = [
        call.function.arguments
        for c in chunks
        for call in c.choices[0].delta.tool_calls or []
        if call.function and call.function.arguments
    ]
    assert len(pieces) > 1
    assert "".join(pieces) == calls[0].function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("fault", "error", "code"),
    [
        ("throttling", openai.RateLimitError, "Throttling.RateQuota"),
        ("insufficient_quota", openai.RateLimitError, "insufficient_quota"),
        ("data_inspection", openai.BadRequestError, "data_inspection_failed"),
        ("context_overflow", openai.BadRequestError, "invalid_parameter_error"),
        ("invalid_key", openai.AuthenticationError, "invalid_api_key"),
        ("internal", openai.InternalServerError, "InternalError"),
        ("arrearage", openai.BadRequestError, "Arrearage"),
        ("quota_exhausted", openai.RateLimitError, "Throttling.AllocationQuota"),
    ],
)
def test_modelstudio_named_errors(
    upstreams: dict[str, Upstream], fault: str, error: type[openai.APIStatusError], code: str
) -> None:
    upstreams["modelstudio"].inject([{"fault": fault}])
    with pytest.raises(error) as info:
        client(upstreams["modelstudio"]).chat.completions.create(model="qwen3.6-plus", messages=HELLO)
    assert info.value.code == code
    body = info.value.response.json()
    assert set(body) == {"error", "id", "request_id"}
    assert body["error"]["param"] is None


def test_modelstudio_errors_in_its_own_words(upstreams: dict[str, Upstream]) -> None:
    cloud = upstreams["modelstudio"]
    cloud.inject([{"fault": "context_overflow"}, {"fault": "data_inspection"}, {"fault": "arrearage"}])
    messages = []
    for _ in range(3):
        with pytest.raises(openai.BadRequestError) as info:
            client(cloud).chat.completions.create(model="qwen3.6-plus", messages=HELLO)
        messages.append(info.value.response.json()["error"]["message"])
    assert messages[0] == "<400> InternalError.Algo.InvalidParameter: Range of input length should be [1, 983616]"
    assert messages[1].startswith("Input data may contain inappropriate content. For details, see: ")
    assert messages[2].startswith("Access denied, please make sure your account is in good standing.")


def test_modelstudio_model_not_found_has_no_id() -> None:
    cloud = start_simulated("modelstudio", name="sim-strict", models=["qwen3.6-plus"])
    try:
        with pytest.raises(openai.NotFoundError) as info:
            client(cloud).chat.completions.create(model="qwen-nope", messages=HELLO)
    finally:
        cloud.stop()
    body = info.value.response.json()
    assert set(body) == {"error", "request_id"}
    assert body["error"]["code"] == "model_not_found"


def test_modelstudio_hybrid_models_think_unless_told_not_to(upstreams: dict[str, Upstream]) -> None:
    cloud = client(upstreams["modelstudio"])
    by_default = cloud.chat.completions.create(model="qwen3.6-plus", messages=HELLO)
    assert (by_default.choices[0].message.model_extra or {}).get("reasoning_content")
    told = cloud.chat.completions.create(model="qwen3.6-plus", messages=HELLO, extra_body={"enable_thinking": False})
    assert not (told.choices[0].message.model_extra or {}).get("reasoning_content")
    older = cloud.chat.completions.create(model="qwen-plus", messages=HELLO)
    assert not (older.choices[0].message.model_extra or {}).get("reasoning_content")


def test_modelstudio_refuses_thinking_it_cannot_do(upstreams: dict[str, Upstream]) -> None:
    cloud = client(upstreams["modelstudio"])
    with pytest.raises(openai.BadRequestError) as info:  # open-source Qwen3 thinks only when streamed
        cloud.chat.completions.create(model="qwen3-32b", messages=HELLO)
    assert info.value.response.json()["error"]["message"] == (
        "parameter.enable_thinking must be set to false for non-streaming calls"
    )
    quiet = cloud.chat.completions.create(model="qwen3-32b", messages=HELLO, extra_body={"enable_thinking": False})
    assert quiet.choices[0].message.content
    streamed = list(cloud.chat.completions.create(model="qwen3-32b", messages=HELLO, stream=True))
    assert any((c.choices[0].delta.model_extra or {}).get("reasoning_content") for c in streamed if c.choices)
    with pytest.raises(openai.BadRequestError) as info:
        cloud.chat.completions.create(
            model="qwen3.6-plus", messages=HELLO, extra_body={"enable_thinking": True, "thinking_budget": 81921}
        )
    assert info.value.response.json()["error"]["message"] == (
        "The thinking_budget parameter must be a positive integer and not greater than 81920"
    )


def test_modelstudio_reports_an_explicit_cache_write(upstreams: dict[str, Upstream]) -> None:
    marked: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": [{"type": "text", "text": "A long shared prefix. " * 50,
                                        "cache_control": {"type": "ephemeral"}}]},  # type: ignore[list-item]
        {"role": "user", "content": "Say hello to the router"},
    ]
    reply = client(upstreams["modelstudio"]).chat.completions.create(
        model="qwen-plus", messages=marked
    )
    assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
    details = reply.usage.prompt_tokens_details.model_dump()
    assert details["cache_creation_input_tokens"] == len("A long shared prefix. " * 50) // 4
    assert details["cache_type"] == "ephemeral" and details["cached_tokens"] == 0


def test_vllm_errors_use_its_flat_shape(upstreams: dict[str, Upstream]) -> None:
    upstreams["vllm"].inject([{"fault": "context_overflow"}])
    with pytest.raises(openai.BadRequestError) as info:
        client(upstreams["vllm"]).chat.completions.create(model="Qwen/Qwen3-32B", messages=HELLO)
    body = info.value.response.json()
    assert body["object"] == "error"
    assert body["code"] == 400
    assert body["type"] == "BadRequestError"
    assert "maximum context length is 32768 tokens" in body["message"]


def test_vllm_rejects_a_model_it_does_not_serve(upstreams: dict[str, Upstream]) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(upstreams["vllm"]).chat.completions.create(model="gpt-4o", messages=HELLO)
    assert "`gpt-4o` does not exist" in info.value.response.json()["message"]


def test_ollama_status_fault_with_retry_after(upstreams: dict[str, Upstream]) -> None:
    upstreams["ollama"].inject([{"fault": "status", "status": 503, "retry_after": 7, "message": "overloaded"}])
    with pytest.raises(openai.InternalServerError) as info:
        client(upstreams["ollama"]).chat.completions.create(model="qwen3:32b", messages=HELLO)
    assert info.value.status_code == 503
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.response.json() == {
        "error": {"message": "overloaded", "type": "api_error", "param": None, "code": None}
    }


def test_wrong_api_key_is_refused(upstreams: dict[str, Upstream]) -> None:
    cloud = openai.OpenAI(base_url=upstreams["modelstudio"].base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        cloud.chat.completions.create(model="qwen3.6-plus", messages=HELLO)
    assert info.value.code == "invalid_api_key"


def test_queued_faults_count_down_and_match_their_model(upstreams: dict[str, Upstream]) -> None:
    vllm = upstreams["vllm"]
    pending = vllm.inject([{"fault": "internal", "count": 2, "model": "Qwen/Qwen3-32B"}, {"fault": "throttling"}])
    assert [p["fault"] for p in pending] == ["internal", "throttling"]
    api = client(vllm)
    for expected in (openai.InternalServerError, openai.InternalServerError, openai.RateLimitError):
        with pytest.raises(expected):
            api.chat.completions.create(model="Qwen/Qwen3-32B", messages=HELLO)
    assert api.chat.completions.create(model="Qwen/Qwen3-32B", messages=HELLO).choices


def test_the_fault_log_names_each_fault_served_with_the_request_id_it_came_with(
    upstreams: dict[str, Upstream],
) -> None:
    vllm = upstreams["vllm"]
    vllm.reset_stats()
    vllm.inject([{"fault": "inband_error"}])
    api = client(vllm)
    api.chat.completions.create(model="Qwen/Qwen3-32B", messages=HELLO, extra_headers={"x-request-id": "req-21"})
    api.chat.completions.create(model="Qwen/Qwen3-32B", messages=HELLO)  # no fault: not logged
    (entry,) = vllm.stats()["fault_log"]
    assert entry["fault"] == "inband_error" and entry["request_id"] == "req-21"
    assert entry["path"] == "/v1/chat/completions" and entry["stream"] is False
    assert abs(entry["at"] - time.time()) < 60


def test_forever_fault_lasts_until_cleared(upstreams: dict[str, Upstream]) -> None:
    ollama = upstreams["ollama"]
    ollama.inject([{"fault": "throttling", "count": -1}])
    for _ in range(3):
        with pytest.raises(openai.RateLimitError):
            client(ollama).chat.completions.create(model="qwen3:32b", messages=HELLO)
    ollama.clear()
    assert client(ollama).chat.completions.create(model="qwen3:32b", messages=HELLO).choices


def test_fault_from_a_request_header(upstreams: dict[str, Upstream]) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        client(upstreams["modelstudio"]).chat.completions.create(
            model="qwen3.6-plus", messages=HELLO, extra_headers={"x-sim-fault": "throttling;retry_after=2"}
        )
    assert info.value.response.headers["retry-after"] == "2"


def test_unknown_fault_is_refused(upstreams: dict[str, Upstream]) -> None:
    with pytest.raises(RuntimeError, match="unknown fault 'explode'"):
        upstreams["vllm"].inject([{"fault": "explode"}])


def test_reset_drops_the_connection(upstreams: dict[str, Upstream]) -> None:
    upstreams["vllm"].inject([{"fault": "reset"}])
    with pytest.raises(openai.APIConnectionError):
        client(upstreams["vllm"]).chat.completions.create(model="Qwen/Qwen3-32B", messages=HELLO)


def test_reset_mid_stream_cuts_the_stream_without_done(upstreams: dict[str, Upstream]) -> None:
    upstreams["vllm"].inject([{"fault": "reset_mid_stream", "after": 3}])
    stream = client(upstreams["vllm"]).chat.completions.create(model="Qwen/Qwen3-32B", messages=HELLO, stream=True)
    received: list[ChatCompletionChunk] = []
    with pytest.raises(httpx.RemoteProtocolError):
        received.extend(stream)
    assert len(received) == 3


def test_malformed_json_body(upstreams: dict[str, Upstream]) -> None:
    upstreams["modelstudio"].inject([{"fault": "malformed_json"}])
    with pytest.raises(json.JSONDecodeError):
        client(upstreams["modelstudio"]).chat.completions.create(model="qwen3.6-plus", messages=HELLO)


def test_malformed_sse_stream(upstreams: dict[str, Upstream]) -> None:
    upstreams["modelstudio"].inject([{"fault": "malformed_sse"}])
    stream = client(upstreams["modelstudio"]).chat.completions.create(model="qwen3.6-plus", messages=HELLO, stream=True)
    with pytest.raises(json.JSONDecodeError):
        list(stream)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_inband_error_surfaces_in_the_stream(upstreams: dict[str, Upstream], flavor: str) -> None:
    upstreams[flavor].inject([{"fault": "inband_error", "after": 2, "message": "GPU fell off the bus"}])
    stream = client(upstreams[flavor]).chat.completions.create(model=MODELS[flavor], messages=HELLO, stream=True)
    received: list[ChatCompletionChunk] = []
    with pytest.raises(openai.APIError, match="GPU fell off the bus"):
        received.extend(stream)
    assert len(received) == 2


def test_no_usage_fault_hides_usage(upstreams: dict[str, Upstream]) -> None:
    api = client(upstreams["modelstudio"])
    upstreams["modelstudio"].inject([{"fault": "no_usage", "count": 2}])
    assert api.chat.completions.create(model="qwen3.6-plus", messages=HELLO).usage is None
    chunks = list(
        api.chat.completions.create(
            model="qwen3.6-plus", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.usage is None for c in chunks)


def test_slow_first_token_outlasts_a_short_client_timeout(upstreams: dict[str, Upstream]) -> None:
    upstreams["ollama"].inject([{"fault": "slow_first_token", "delay": 30}])
    with pytest.raises(openai.APITimeoutError):
        client(upstreams["ollama"], timeout=0.5).chat.completions.create(model="qwen3:32b", messages=HELLO)


@pytest.mark.parametrize("fault", ["stall_mid_stream", "delay", "slow_first_token"])
def test_slow_streams_still_deliver_everything(upstreams: dict[str, Upstream], fault: str) -> None:
    api = client(upstreams["vllm"])
    expected = api.chat.completions.create(model="Qwen/Qwen3-32B", messages=HELLO).choices[0].message.content
    upstreams["vllm"].inject([{"fault": fault, "delay": 0.02, "after": 2}])
    chunks = list(api.chat.completions.create(model="Qwen/Qwen3-32B", messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert upstreams["vllm"].stats()["faults_served"][fault] >= 1


def test_stats_show_counts_and_the_last_request(upstreams: dict[str, Upstream]) -> None:
    cloud = upstreams["modelstudio"]
    cloud.reset_stats()
    api = client(cloud)
    api.models.list()
    api.chat.completions.create(
        model="qwen3.6-plus",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-trace": "t-1"},
    ).close()
    stats = cloud.stats()
    assert stats["total_requests"] == 2
    assert stats["requests_by_path"] == {"/compatible-mode/v1/models": 1, "/compatible-mode/v1/chat/completions": 1}
    assert stats["last_body"]["stream_options"] == {"include_usage": True}
    assert stats["last_headers"]["Authorization"] == "Bearer sk-sim-secret"
    assert cloud.last_header("x-trace") == "t-1"


@pytest.mark.parametrize("stream", [False, True], ids=["once", "stream"])
def test_a_client_that_leaves_a_slow_answer_is_counted(upstreams: dict[str, Upstream], stream: bool) -> None:
    vllm = upstreams["vllm"]
    vllm.reset_stats()
    fault = "slow_first_token;delay=3" if stream else "delay;delay=3"
    with client(vllm, timeout=0.3) as impatient, pytest.raises((openai.APITimeoutError, httpx.ReadTimeout)):
        answer = impatient.chat.completions.create(
            model="Qwen/Qwen3-32B", messages=[{"role": "user", "content": "hi"}], stream=stream,
            extra_headers={"x-sim-fault": fault},
        )
        if stream:  # a stream's headers come at once; its first frame is what is slow
            list(answer)  # type: ignore[arg-type]
    deadline = time.monotonic() + 2.0
    while vllm.stats()["clients_gone"] == 0:
        assert time.monotonic() < deadline, "the simulated upstream did not notice its client leaving"
        time.sleep(0.05)
    assert vllm.stats()["clients_gone"] == 1
