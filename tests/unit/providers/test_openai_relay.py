"""The fast path's SSE relays against raw upstreams: the same events reach the client however the bytes are split."""

from __future__ import annotations

import asyncio

import pytest

from gateway.providers.base import Endpoint
from tests.unit.providers.raw_http import (
    CHUNKED,
    LAST_CHUNK,
    Handler,
    Serve,
    Upstream,
    call_for,
    chunk,
    exchange,
    provider_for,
)

CHAT_STREAM = (
    b": keep-alive\n\n"
    b'data: {"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": null}]}\r\n\r\n'
    b'data: {"choices": [{"index": 0,\ndata: "delta": {"content": "b"}, "finish_reason": null}]}\n\n'
    b": comment\nevent: x\nid: 1\n"
    b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
CHAT_RELAYED = (
    b'data: {"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": null}]}\n\n'
    b'data: {"choices": [{"index": 0,\ndata: "delta": {"content": "b"}, "finish_reason": null}]}\n\n'
    b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
    b"data: [DONE]\n\n"
)
MESSAGES_STREAM = (
    b'event: message_start\r\ndata: {"type": "message_start", "message": {"usage": {"input_tokens": 3}}}\r\n\r\n'
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {"text": "hi"}}\n\n'
    b'event: message_stop\ndata: {"type": "message_stop"}\n\n'
)
MESSAGES_RELAYED = MESSAGES_STREAM.replace(b"\r\n", b"\n")


def split_stream(body: bytes, piece: int) -> Handler:
    """An upstream sending `body` as an event stream, `piece` bytes at a time, each write on its own."""

    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await up.request(reader) is not None:
            writer.write(CHUNKED)
            for at in range(0, len(body), piece):
                writer.write(chunk(body[at : at + piece]))
                await writer.drain()
                await asyncio.sleep(0.001)  # lets each piece arrive as a read of its own
            writer.write(LAST_CHUNK)
            await writer.drain()

    return handler


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 1 << 20], ids=lambda n: f"{n}-bytes-a-write")
@pytest.mark.parametrize(
    ("endpoint", "body", "relayed"),
    [(Endpoint.CHAT, CHAT_STREAM, CHAT_RELAYED), (Endpoint.MESSAGES, MESSAGES_STREAM, MESSAGES_RELAYED)],
    ids=["chat", "messages"],
)
async def test_a_stream_split_anywhere_is_relayed_as_the_same_events(
    serve: Serve, piece: int, endpoint: Endpoint, body: bytes, relayed: bytes
) -> None:
    up = await serve(split_stream(body, piece))
    provider = provider_for(up)
    try:
        assert await exchange(provider, call_for(endpoint, stream=True)) == relayed
    finally:
        await provider.close()


COMPACT_CONTENT = b'data: {"choices":[{"index":0,"delta":{"content":"w "},"finish_reason":null}]}\n\n'
MANY_TOKENS = (
    COMPACT_CONTENT * 50
    + b'data: {"choices":[{"index":0,"delta":{"content":"x"},"finish_reason": null}]}\n\n'
    + COMPACT_CONTENT * 3
    + b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    + b"data: [DONE]\n\n"
)


@pytest.mark.parametrize("piece", [5, 100, 1 << 20], ids=lambda n: f"{n}-bytes-a-write")
async def test_many_tokens_in_one_read_are_relayed_as_they_came_and_the_stream_still_ends(
    serve: Serve, piece: int
) -> None:
    up = await serve(split_stream(MANY_TOKENS, piece))
    provider = provider_for(up)
    try:
        assert await exchange(provider, call_for(Endpoint.CHAT, stream=True)) == MANY_TOKENS
    finally:
        await provider.close()
