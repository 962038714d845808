"""A corpus of hostile or broken upstreams: each answer past a limit is a server error (so it fails over), memory
stays within the limit and a small margin, nothing is logged as an error, and the next request on the pool succeeds.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from gateway.error_classes import ErrorClass
from gateway.errors import UpstreamError
from gateway.providers.base import Endpoint
from gateway.providers.http1 import HTTPClient
from gateway.providers.http1_response import UpstreamLimits
from tests.unit.providers.raw_http import (
    CHUNKED,
    LAST_CHUNK,
    LIMIT,
    Serve,
    Upstream,
    call_for,
    chunk,
    exchange,
    ok,
    post,
    provider_for,
)

BODY_CAP = 1024 * 1024
EVENT_CAP = 256 * 1024
MARGIN = 2 * 1024 * 1024  # read-ahead, one socket read, the raw server's own buffers in this same process
SENT_AT_MOST = 16 * 1024 * 1024  # what a hostile server here sends before it stalls: a client without limits survives
BOMB = 64 * 1024 * 1024  # what the compressed bodies inflate to
PIECE = 64 * 1024

Writer = asyncio.StreamWriter
Hostile = Callable[[Writer], Awaitable[None]]


async def endless(writer: Writer, head: bytes, piece: bytes) -> None:
    """`head`, then `piece` again and again (within SENT_AT_MOST), then silence until the client goes."""
    writer.write(head)
    await writer.drain()
    for _ in range(SENT_AT_MOST // len(piece) if piece else 0):
        writer.write(piece)
        await writer.drain()
    await asyncio.sleep(LIMIT)


def answer(head: bytes, piece: bytes) -> Hostile:
    return lambda writer: endless(writer, head, piece)


def once(data: bytes) -> Hostile:
    return lambda writer: endless(writer, data, b"")


def bomb(encoding: bytes, content_type: bytes = b"application/json", prefix: bytes = b"") -> Hostile:
    plain = prefix + b"\0" * BOMB
    packed = gzip.compress(plain) if encoding == b"gzip" else zlib.compress(plain)
    head = b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-encoding: %s\r\ncontent-length: %d\r\n\r\n"
    return once(head % (content_type, encoding, len(packed)) + packed)


JSON_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
FIRST_EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": null}]}\n\n'
GOOD_REPLY = b'{"choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}]}'
GOOD_STREAM = (
    CHUNKED
    + chunk(FIRST_EVENT)
    + chunk(b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n')
    + chunk(b"data: [DONE]\n\n")
    + LAST_CHUNK
)
MESSAGES_STREAM = (
    CHUNKED
    + chunk(b'event: message_start\ndata: {"type": "message_start", "message": {"usage": {}}}\n\n')
    + chunk(b'event: message_stop\ndata: {"type": "message_stop"}\n\n')
    + LAST_CHUNK
)


@dataclass(frozen=True)
class Case:
    hostile: Hostile
    endpoint: Endpoint = Endpoint.CHAT
    stream: bool = False


CORPUS = {
    "gzip-bomb": Case(bomb(b"gzip")),
    "deflate-bomb": Case(bomb(b"deflate")),
    "gzip-bomb-in-a-stream": Case(bomb(b"gzip", b"text/event-stream", prefix=FIRST_EVENT + b"data: "), stream=True),
    "endless-chunked-body": Case(answer(JSON_HEAD + b"transfer-encoding: chunked\r\n\r\n", chunk(b"x" * PIECE))),
    "endless-content-length-body": Case(answer(JSON_HEAD + b"content-length: 1000000000000\r\n\r\n", b"x" * PIECE)),
    "endless-header-line": Case(answer(JSON_HEAD + b"x-endless: ", b"a" * PIECE)),
    "huge-header-count": Case(answer(JSON_HEAD, b"x-h: 1\r\n" * (PIECE // 8))),
    "huge-status-line": Case(answer(b"HTTP/1.1 200 ", b"O" * PIECE)),
    "endless-interim-answers": Case(answer(b"", b"HTTP/1.1 100 Continue\r\n\r\n" * 1000)),
    "endless-trailers": Case(answer(JSON_HEAD + b"transfer-encoding: chunked\r\n\r\n" + chunk(b"{}") + b"0\r\n",
                                    b"x-t: 1\r\n" * (PIECE // 8))),
    "101-upgrade": Case(once(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
                             b"\x81\x05hello")),
    "sse-endless-event": Case(answer(CHUNKED + chunk(FIRST_EVENT + b"data: "), chunk(b"x" * PIECE)), stream=True),
    "sse-endless-event-of-lines": Case(answer(CHUNKED + chunk(FIRST_EVENT), chunk(b"data: x\n" * (PIECE // 8))),
                                       stream=True),
    "messages-endless-line": Case(answer(CHUNKED + chunk(b"event: message_start\ndata: "), chunk(b"x" * PIECE)),
                                  endpoint=Endpoint.MESSAGES, stream=True),
    "messages-endless-event": Case(answer(CHUNKED, chunk(b"event: ping\n" * (PIECE // 12))),
                                   endpoint=Endpoint.MESSAGES, stream=True),
}


def hostile_first(case: Case) -> Callable[[Upstream, asyncio.StreamReader, Writer], Awaitable[None]]:
    """The first connection gets the hostile answer; every later one a good answer to each request."""
    good = GOOD_STREAM if case.stream else ok(GOOD_REPLY)
    if case.endpoint is Endpoint.MESSAGES:
        good = MESSAGES_STREAM

    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: Writer) -> None:
        first = up.connections == 1
        while await up.request(reader) is not None:
            if first:
                await case.hostile(writer)
                return
            writer.write(good)
            await writer.drain()

    return handler


@pytest.mark.parametrize("name", list(CORPUS))
async def test_a_hostile_answer_is_a_server_error_in_bounded_memory_and_the_pool_goes_on(
    serve: Serve, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    case = CORPUS[name]
    up = await serve(hostile_first(case))
    provider = provider_for(up, UpstreamLimits(body_bytes=BODY_CAP, event_bytes=EVENT_CAP))
    call = call_for(case.endpoint, stream=case.stream)
    try:
        tracemalloc.start()
        try:
            with pytest.raises(UpstreamError) as raised:
                async with asyncio.timeout(LIMIT * 2):
                    await exchange(provider, call)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert raised.value.error_class is ErrorClass.SERVER_ERROR, raised.value.message
        assert peak < BODY_CAP + MARGIN, f"{peak / 2**20:.1f} MiB held at the peak"
        async with asyncio.timeout(LIMIT):
            answer = await exchange(provider, call)
        assert answer.endswith((GOOD_REPLY, b"data: [DONE]\n\n", b'{"type": "message_stop"}\n\n'))
        assert up.connections == 2  # the hostile connection was dropped, its place in the pool passed on
    finally:
        await provider.close()
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize("framing", ["content-length", "chunked", "until-close"])
@pytest.mark.parametrize("encoding", [b"gzip", b"deflate"])
async def test_a_compressed_body_read_piece_by_piece_is_inflated_no_faster_than_it_is_read(
    client: HTTPClient, serve: Serve, framing: str, encoding: bytes
) -> None:
    plain = bytes(range(256)) * (32 * 1024)  # 8 MiB, from a few KiB on the wire
    packed = gzip.compress(plain) if encoding == b"gzip" else zlib.compress(plain)
    head = JSON_HEAD + b"content-encoding: " + encoding + b"\r\n"
    if framing == "content-length":
        wire = head + b"content-length: %d\r\n\r\n" % len(packed) + packed
    elif framing == "chunked":
        wire = head + b"transfer-encoding: chunked\r\n\r\n" + chunk(packed) + LAST_CHUNK
    else:
        wire = head + b"connection: close\r\n\r\n" + packed

    async def send(up: Upstream, reader: asyncio.StreamReader, writer: Writer) -> None:
        await up.request(reader)
        writer.write(wire)
        await writer.drain()

    up = await serve(send)
    pieces: list[int] = []
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        async with await post(client, up.url()) as response, asyncio.timeout(LIMIT):
            while data := await response.readany():
                pieces.append(len(data))
                digest.update(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert digest.digest() == hashlib.sha256(plain).digest()
    assert max(pieces) <= 512 * 1024  # the read-ahead limit and one slice
    assert peak < 2 * 1024 * 1024, f"{peak / 2**20:.1f} MiB held at the peak"
