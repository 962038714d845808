"""The litellm provider before a raw upstream: what a stream relays before an in-band error, how that is classified."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from gateway.error_classes import ErrorClass
from gateway.errors import UpstreamError
from gateway.policy import table
from gateway.providers.base import Endpoint, UpstreamCall
from gateway.providers.litellm import LiteLLMProvider, close_shared_clients
from tests.unit.providers.raw_http import CHUNKED, LAST_CHUNK, LIMIT, Handler, Serve, Upstream, chunk

# litellm builds pydantic models of TypedDicts with ReadOnly items on its first answer; pydantic warns about those.
pytestmark = pytest.mark.filterwarnings("ignore:Item .* is using the `ReadOnly` qualifier:UserWarning")

MESSAGE = "Input data may contain inappropriate content."
# Model Studio's in-band error frame: its error object, as it would have answered with HTTP 400.
ERROR_FRAME = b"data: " + orjson.dumps(
    {"error": {"message": MESSAGE, "type": "data_inspection_failed", "param": None, "code": "DataInspectionFailed"},
     "id": "chatcmpl-1", "request_id": "r-1"}
) + b"\n\n"


def frame(delta: dict[str, str]) -> bytes:
    event = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "qwen-plus",
             "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
    return b"data: " + orjson.dumps(event) + b"\n\n"


def stream_of(*frames: bytes) -> Handler:
    """An upstream answering every request with these SSE frames, each written on its own, then [DONE]."""

    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await up.request(reader) is not None:
            writer.write(CHUNKED)
            for data in [*frames, b"data: [DONE]\n\n"]:
                writer.write(chunk(data))
                await writer.drain()
                await asyncio.sleep(0.001)
            writer.write(LAST_CHUNK)
            await writer.drain()

    return handler


@pytest.fixture
async def shared_clients() -> AsyncIterator[None]:
    yield
    await close_shared_clients()


def provider_and_call(up: Upstream) -> tuple[LiteLLMProvider, UpstreamCall]:
    config = table.Provider(name="ms", type="litellm", hosting=table.Hosting.CLOUD, jurisdiction="sg",
                            vendor="alibaba", base_url=up.url("/v1"), api_key="sk-test", litellm_prefix="openai")
    call = UpstreamCall(
        endpoint=Endpoint.CHAT,
        deployment=table.Deployment(name="d", provider=config, model="qwen-plus", context_window=None,
                                    price=table.Price(0.0, 0.0)),
        body={"model": "qwen-plus", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        timeouts=table.Timeouts(connect_s=LIMIT, first_token_s=LIMIT, total_s=LIMIT),
        stream=True,
    )
    return LiteLLMProvider(config), call


async def test_frames_before_an_inband_error_are_relayed_then_it_is_classified_by_its_body(
    serve: Serve, shared_clients: None
) -> None:
    up = await serve(stream_of(frame({"role": "assistant", "content": ""}), frame({"content": "["}), ERROR_FRAME))
    provider, call = provider_and_call(up)
    stream = await provider.open_stream(call)
    relayed = [stream.first_event]
    try:
        with pytest.raises(UpstreamError) as info:
            async for event in stream.events():
                relayed.append(event)
    finally:
        await stream.aclose()
    contents = [orjson.loads(e.removeprefix(b"data: "))["choices"][0]["delta"].get("content") for e in relayed]
    assert contents == ["", "["]  # both frames, in order, before the error
    assert info.value.error_class is ErrorClass.CONTENT_POLICY
    assert MESSAGE in info.value.message and "DataInspectionFailed" in info.value.message


async def test_an_inband_error_before_any_frame_fails_the_attempt_classified_by_its_body(
    serve: Serve, shared_clients: None
) -> None:
    up = await serve(stream_of(ERROR_FRAME))
    provider, call = provider_and_call(up)
    with pytest.raises(UpstreamError) as info:
        await provider.open_stream(call)
    assert info.value.error_class is ErrorClass.CONTENT_POLICY
    assert MESSAGE in info.value.message
