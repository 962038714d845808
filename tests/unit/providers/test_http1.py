"""The upstream HTTP/1.1 client against raw servers on loopback: framing, keep-alive, failures, limits, TLS."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import gzip
import socket
import ssl
import struct
import zlib
from pathlib import Path

import pytest

from gateway.providers.http1 import BrokenExchange, ConnectFailed, HTTPClient, InvalidHeader
from tests.support.tls import self_signed
from tests.unit.providers.raw_http import (
    CHUNKED,
    LAST_CHUNK,
    LIMIT,
    Serve,
    Upstream,
    chunk,
    fetch,
    ok,
    post,
    replies,
    until,
)


async def test_a_content_length_answer_has_status_headers_and_body(client: HTTPClient, serve: Serve) -> None:
    body = b'{"id": "chatcmpl-1"}'
    answer = ok(body, b"X-Request-Id: r1", b"Vary: a", b"vary: b").replace(b"200 OK", b"201 Created")
    up = await serve(replies(answer))
    async with await post(client, up.url()) as response:
        assert response.status == 201
        assert response.headers["content-type"] == "application/json"
        assert response.headers["x-request-id"] == "r1"
        assert response.headers["vary"] == "a, b"
        assert await response.read() == body


async def test_a_chunked_answer_streams_each_piece_as_it_is_sent(client: HTTPClient, serve: Serve) -> None:
    go_on = asyncio.Event()

    async def stream(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await up.request(reader)
        writer.write(CHUNKED + chunk(b"data: one\n\n"))
        await writer.drain()
        await go_on.wait()
        writer.write(chunk(b"data: two\n\n") + LAST_CHUNK)
        await writer.drain()

    up = await serve(stream)
    async with await post(client, up.url()) as response, asyncio.timeout(LIMIT):
        assert await response.readany() == b"data: one\n\n"  # the server has not sent the rest yet
        go_on.set()
        assert await response.readany() == b"data: two\n\n"
        assert await response.readany() == b""


async def test_readline_joins_lines_split_across_chunks(client: HTTPClient, serve: Serve) -> None:
    async def stream(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await up.request(reader)
        writer.write(CHUNKED)
        for piece in (b"data: hel", b"lo\n\ndata: wor", b"ld\n", b"\ndata: [DONE]"):
            writer.write(chunk(piece))
            await writer.drain()
            await asyncio.sleep(0.02)
        writer.write(LAST_CHUNK)

    up = await serve(stream)
    async with await post(client, up.url()) as response, asyncio.timeout(LIMIT):
        lines = [await response.readline() for _ in range(6)]
    assert lines == [b"data: hello\n", b"\n", b"data: world\n", b"\n", b"data: [DONE]", b""]


async def test_an_answer_ended_by_the_close_is_read_whole_and_not_reused(client: HTTPClient, serve: Serve) -> None:
    async def until_close(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await up.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nhello ")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"world")

    up = await serve(until_close)
    assert await fetch(client, up.url()) == (200, b"hello world")
    assert client.idle == 0
    assert await fetch(client, up.url()) == (200, b"hello world")
    assert up.connections == 2


async def test_an_interim_100_answer_is_skipped(client: HTTPClient, serve: Serve) -> None:
    up = await serve(replies(b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"real")))
    assert await fetch(client, up.url()) == (200, b"real")


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_compressed_answer_is_decompressed(client: HTTPClient, serve: Serve, encoding: str) -> None:
    body = b'{"choices": []}' * 50
    packed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)
    up = await serve(replies(ok(packed, b"content-encoding: " + encoding.encode())))
    assert await fetch(client, up.url()) == (200, body)


async def test_an_encoding_it_cannot_decode_is_a_broken_exchange_not_garbage(client: HTTPClient, serve: Serve) -> None:
    up = await serve(replies(ok(b"\x1b\x0f\x00\xf8compressed", b"content-encoding: br")))
    async with await post(client, up.url()) as response, asyncio.timeout(LIMIT):
        with pytest.raises(BrokenExchange, match="content-encoding"):
            await response.readany()  # not a byte of the undecodable body


async def test_a_large_body_is_read_whole_and_the_connection_reused(client: HTTPClient, serve: Serve) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB: past the client's read-ahead limit
    up = await serve(replies(ok(body)))
    assert await fetch(client, up.url()) == (200, body)
    assert await fetch(client, up.url()) == (200, body)
    assert up.connections == 1


async def test_sequential_requests_share_one_connection(client: HTTPClient, serve: Serve) -> None:
    up = await serve(replies(ok()))
    assert await fetch(client, up.url()) == (200, b'{"ok": true}')
    assert client.idle == 1
    assert await fetch(client, up.url()) == (200, b'{"ok": true}')
    assert up.connections == 1
    assert client.idle == 1


@pytest.mark.parametrize("noticed", [True, False], ids=["after-the-client-noticed", "right-after-the-close"])
async def test_a_kept_connection_the_upstream_closed_is_replaced(
    client: HTTPClient, serve: Serve, noticed: bool
) -> None:
    closed = asyncio.Event()

    async def once(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await up.request(reader)
        writer.write(ok())
        await writer.drain()
        writer.close()  # like uvicorn's keep-alive timeout: the idle connection goes away
        await writer.wait_closed()
        closed.set()

    up = await serve(once)
    assert (await fetch(client, up.url()))[0] == 200
    async with asyncio.timeout(LIMIT):
        await closed.wait()
    if noticed:
        await until(lambda: client.idle == 0)
    # else the close is complete on the upstream's side, its FIN already in the client's socket: still no error
    assert (await fetch(client, up.url()))[0] == 200
    assert up.connections == 2


async def test_a_connection_close_answer_is_not_reused(client: HTTPClient, serve: Serve) -> None:
    up = await serve(replies(ok(b"{}", b"Connection: close")))
    assert await fetch(client, up.url()) == (200, b"{}")
    assert client.idle == 0
    await until(lambda: up.eofs == 1)  # the client closed it
    assert await fetch(client, up.url()) == (200, b"{}")
    assert up.connections == 2


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_an_answer_cut_off_mid_body_is_a_broken_exchange(client: HTTPClient, serve: Serve, how: str) -> None:
    headers_read = asyncio.Event()

    async def cut(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await up.request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
        await writer.drain()
        await headers_read.wait()
        if how == "reset":
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    up = await serve(cut)
    async with await post(client, up.url()) as response:
        headers_read.set()
        with pytest.raises(BrokenExchange):
            async with asyncio.timeout(LIMIT):
                await response.read()
    assert client.idle == 0


@pytest.mark.parametrize(
    "answer",
    [b"", b"HTTP/1.1 abc\r\n\r\n", b"SSH-2.0-OpenSSH_9.6\r\n", CHUNKED + b"zz\r\nnot a chunk\r\n"],
    ids=["closed-before-any-answer", "bad-status-line", "not-http", "bad-chunk-size"],
)
async def test_no_answer_or_malformed_http_is_a_broken_exchange(
    client: HTTPClient, serve: Serve, answer: bytes
) -> None:
    async def answer_then_close(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await up.request(reader)
        writer.write(answer)

    up = await serve(answer_then_close)
    with pytest.raises(BrokenExchange):
        async with await post(client, up.url()) as response, asyncio.timeout(LIMIT):
            await response.read()
    assert client.busy == 0


async def test_a_port_nothing_listens_on_is_connect_failed(client: HTTPClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectFailed):
        await post(client, f"http://127.0.0.1:{port}/v1/chat/completions")
    assert client.busy == 0


# the connect timeout is not tested here: no loopback setup makes a connect hang reliably


async def test_a_stalled_body_hits_the_total_timeout(client: HTTPClient, serve: Serve) -> None:
    async def stall(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await up.request(reader)
        writer.write(CHUNKED + chunk(b"data: 1\n\n"))
        await reader.read()  # and nothing more, until the client goes

    up = await serve(stall)
    async with await post(client, up.url(), total=0.3) as response:
        assert await response.readany() == b"data: 1\n\n"
        with pytest.raises(TimeoutError) as raised:
            await response.readany()
    assert type(raised.value) is TimeoutError  # not ConnectTimeout, nor the test's own limit
    assert "total timeout" in str(raised.value)
    assert client.busy == 0 and client.idle == 0


async def test_an_upstream_that_never_answers_hits_the_total_timeout(client: HTTPClient, serve: Serve) -> None:
    async def silent(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await up.request(reader)
        await reader.read()

    up = await serve(silent)
    with pytest.raises(TimeoutError) as raised:
        await post(client, up.url(), total=0.3)
    assert type(raised.value) is TimeoutError
    assert "total timeout" in str(raised.value)
    assert client.busy == 0 and client.idle == 0


async def test_a_header_that_would_inject_lines_is_refused_before_sending(client: HTTPClient, serve: Serve) -> None:
    up = await serve(replies(ok()))
    for headers in ({"x-trace": "a\r\nx-admin: 1"}, {"x-trace": "a\nb"}, {"bad name": "v"}, {"x\r\ny": "v"}):
        with pytest.raises(InvalidHeader):
            await post(client, up.url(), headers)
    await asyncio.sleep(0.05)
    assert up.connections == 0 and up.requests == []
    assert client.busy == 0


async def test_with_one_connection_a_second_request_waits_for_the_first(serve: Serve) -> None:
    finish = asyncio.Event()
    inflight = peak = 0

    async def stream(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal inflight, peak
        while await up.request(reader) is not None:
            inflight += 1
            peak = max(peak, inflight)
            writer.write(CHUNKED + chunk(b"one"))
            await writer.drain()
            await finish.wait()
            writer.write(chunk(b"two") + LAST_CHUNK)
            inflight -= 1

    up = await serve(stream)
    client = HTTPClient(max_connections=1)
    try:
        first = await post(client, up.url())
        second = asyncio.create_task(fetch(client, up.url()))
        await asyncio.sleep(0.05)
        assert not second.done() and len(up.requests) == 1
        finish.set()
        async with asyncio.timeout(LIMIT):
            assert await first.read() == b"onetwo"
        first.release()
        async with asyncio.timeout(LIMIT):
            assert await second == (200, b"onetwo")
        assert peak == 1 and len(up.requests) == 2
    finally:
        await client.close()


@pytest.mark.parametrize("when", ["while queued", "just as it is handed the connection"])
async def test_a_request_cancelled_while_waiting_for_a_connection_leaks_nothing(serve: Serve, when: str) -> None:
    up = await serve(replies(ok()))
    client = HTTPClient(max_connections=1)
    try:
        first = await post(client, up.url())
        waiting = asyncio.create_task(post(client, up.url()))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        if when == "while queued":
            waiting.cancel()
        await first.read()
        first.release()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await fetch(client, up.url()) == (200, b'{"ok": true}')
        assert client.busy == 0
    finally:
        await client.close()


async def test_an_answer_dropped_without_release_frees_its_connection(serve: Serve) -> None:
    up = await serve(replies(ok()))
    limited = HTTPClient(max_connections=1)
    try:
        response = await post(limited, up.url())
        del response  # neither released nor closed, as when a task is cancelled just as its answer arrives
        gc.collect()
        assert limited.busy == 0
        assert await fetch(limited, up.url()) == (200, b'{"ok": true}')
    finally:
        await limited.close()


async def test_the_total_timeout_covers_waiting_for_a_connection(serve: Serve) -> None:
    up = await serve(replies(CHUNKED + chunk(b"held")))  # an answer that never ends holds the only connection
    client = HTTPClient(max_connections=1)
    try:
        holder = await post(client, up.url())
        with pytest.raises(TimeoutError) as raised:
            await post(client, up.url(), total=0.3)
        assert "total timeout" in str(raised.value)
        holder.close()
    finally:
        await client.close()


async def test_the_request_on_the_wire(client: HTTPClient, serve: Serve) -> None:
    up = await serve(replies(ok()))
    body = b'{"model": "m", "messages": []}'
    headers = {"Authorization": "Bearer sk-1", "Host": "evil.example", "Content-Length": "999", "X-Trace": "t"}
    async with await post(client, up.url("/v1/chat/completions?q=1"), headers, body=body) as response:
        await response.read()
    head, sent_body = up.requests[0].split(b"\r\n\r\n", 1)
    request_line, *lines = head.decode().split("\r\n")
    assert request_line == "POST /v1/chat/completions?q=1 HTTP/1.1"
    names = [line.split(":", 1)[0].lower() for line in lines]
    assert names.count("host") == 1 and names.count("content-length") == 1
    assert f"host: 127.0.0.1:{up.port}" in lines
    assert f"content-length: {len(body)}" in lines
    assert "Authorization: Bearer sk-1" in lines and "X-Trace: t" in lines
    assert sent_body == body


async def test_a_url_with_user_and_password_sends_basic_authorization(client: HTTPClient, serve: Serve) -> None:
    up = await serve(replies(ok()))
    url = f"http://bench%40user:p%3Ass@127.0.0.1:{up.port}/v1/a b"
    async with await post(client, url) as response:
        await response.read()
    request_line, *lines = up.requests[0].split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    assert request_line == "POST /v1/a%20b HTTP/1.1"
    assert f"authorization: Basic {base64.b64encode(b'bench@user:p:ss').decode()}" in lines
    with pytest.raises(InvalidHeader):  # which of the two would the upstream believe?
        await post(client, url, {"authorization": "Bearer sk-1"})
    assert len(up.requests) == 1


@pytest.fixture
async def tls_upstream(tmp_path: Path, serve: Serve) -> tuple[Upstream, Path]:
    cert_path, key_path = self_signed(tmp_path)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_path, key_path)
    return await serve(replies(ok(b"secret")), server_context), cert_path


async def test_https_works_with_a_context_that_trusts_the_upstream(tls_upstream: tuple[Upstream, Path]) -> None:
    up, cert_path = tls_upstream
    client = HTTPClient(ssl_context=ssl.create_default_context(cafile=str(cert_path)))
    try:
        assert await fetch(client, up.url()) == (200, b"secret")
        assert await fetch(client, up.url()) == (200, b"secret")
        assert up.connections == 1
    finally:
        await client.close()


async def test_https_to_an_untrusted_certificate_is_connect_failed(
    client: HTTPClient, tls_upstream: tuple[Upstream, Path]
) -> None:
    up, _ = tls_upstream
    with pytest.raises(ConnectFailed):
        await post(client, up.url())
    assert client.busy == 0


async def test_a_cancelled_reader_closes_the_upstream_connection(client: HTTPClient, serve: Serve) -> None:
    gone = asyncio.Event()

    async def stream(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await up.request(reader)
        writer.write(CHUNKED + chunk(b"data: 1\n\n"))
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            await reader.read()  # returns at EOF: the client closed the connection
        gone.set()

    up = await serve(stream)
    response = await post(client, up.url())
    first = asyncio.Event()

    async def relay() -> None:  # like a handler streaming to a client that disconnects
        async with response:
            while await response.readany():
                first.set()

    task = asyncio.create_task(relay())
    async with asyncio.timeout(LIMIT):
        await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(LIMIT):
        await gone.wait()
    assert client.busy == 0 and client.idle == 0


async def test_a_closed_client_closes_its_connections_and_refuses_requests(serve: Serve) -> None:
    up, other = await serve(replies(ok())), await serve(replies(ok()))
    client = HTTPClient(max_connections=1)
    await fetch(client, other.url())  # kept idle
    holder = await post(client, up.url())
    waiting = asyncio.create_task(post(client, up.url()))  # over the limit: waits
    await asyncio.sleep(0.05)
    assert client.idle == 1 and client.busy == 1 and not waiting.done()
    await client.close()
    assert client.idle == 0
    await until(lambda: other.eofs == 1)  # the idle connection is closed at once
    with pytest.raises(RuntimeError):
        await waiting
    with pytest.raises(RuntimeError):
        await post(client, up.url())
    async with asyncio.timeout(LIMIT):
        await holder.read()
    holder.release()  # the busy one is closed when its answer is done with
    assert client.idle == 0 and client.busy == 0
    await until(lambda: up.eofs == 1)
