"""Raw HTTP/1.1 servers on loopback for the upstream client's tests: exact bytes, exact failures; the fast-path
provider in front of one."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Protocol

from gateway.policy import table
from gateway.providers.base import Endpoint, UpstreamCall
from gateway.providers.http1 import HeaderBlock, HTTPClient
from gateway.providers.http1_response import Response, UpstreamLimits
from gateway.providers.openai import OpenAICompatibleProvider

LIMIT = 5.0  # every wait in these tests ends within this many seconds
CHUNKED = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


class Upstream:
    """A raw server on 127.0.0.1: runs a handler per connection and records what the client did."""

    def __init__(self, server: asyncio.Server, scheme: str) -> None:
        self.server = server
        self.port: int = server.sockets[0].getsockname()[1]
        self.scheme = scheme
        self.connections = 0  # accepted
        self.eofs = 0  # connections the client closed between requests
        self.requests: list[bytes] = []  # raw, as they came off the wire

    def url(self, path: str = "/v1/chat/completions") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    async def request(self, reader: asyncio.StreamReader) -> bytes | None:
        """The next request on a connection, or None once the client closed it."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eofs += 1
            return None
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        raw = head + await reader.readexactly(int(length[1]) if length else 0)
        self.requests.append(raw)
        return raw


Handler = Callable[[Upstream, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Serve(Protocol):
    def __call__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> Awaitable[Upstream]: ...


def ok(body: bytes = b'{"ok": true}', *headers: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def replies(answer: bytes) -> Handler:
    """A keep-alive server that answers every request on a connection with `answer`."""

    async def handler(up: Upstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await up.request(reader) is not None:
            writer.write(answer)
            await writer.drain()

    return handler


async def post(
    client: HTTPClient, url: str, headers: dict[str, str] | None = None, *, body: bytes = b"{}", total: float = LIMIT
) -> Response:
    async with asyncio.timeout(LIMIT):
        block = HeaderBlock(headers or {"content-type": "application/json"})
        return await client.post(url, body, block, connect_timeout_s=LIMIT, total_timeout_s=total)


async def fetch(client: HTTPClient, url: str) -> tuple[int, bytes]:
    async with await post(client, url) as response, asyncio.timeout(LIMIT):
        return response.status, await response.read()


async def until(condition: Callable[[], bool]) -> None:
    """Polls, within the limit: a client noticing a close has no event to await."""
    for _ in range(int(LIMIT / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within the limit")


def provider_for(up: Upstream, limits: UpstreamLimits | None = None) -> OpenAICompatibleProvider:
    """The fast-path provider in front of `up` (chat at /v1, Messages at /v1/messages), with one connection: a
    request after a failed one needs its place in the pool."""
    config = table.Provider(
        name="raw", type="openai", hosting=table.Hosting.CLOUD, jurisdiction="us", vendor="test",
        base_url=up.url("/v1"), max_connections=1,
        protocols=frozenset({table.Protocol.CHAT, table.Protocol.MESSAGES}),
        native_urls=((table.Protocol.MESSAGES, up.url("/v1/messages")),),
    )
    return OpenAICompatibleProvider(config, limits=limits)


def call_for(endpoint: Endpoint = Endpoint.CHAT, *, stream: bool = False) -> UpstreamCall:
    config = table.Provider(name="raw", type="openai", hosting=table.Hosting.CLOUD, jurisdiction="us", vendor="test")
    return UpstreamCall(
        endpoint=endpoint,
        deployment=table.Deployment(
            name="d", provider=config, model="m", context_window=None, price=table.Price(0.0, 0.0)
        ),
        body={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream},
        timeouts=table.Timeouts(connect_s=LIMIT, first_token_s=LIMIT, total_s=LIMIT),
        stream=stream,
        client_wants_usage=True,
    )


async def exchange(provider: OpenAICompatibleProvider, call: UpstreamCall) -> bytes:
    """What a client of the gateway would get: the body, or every event of the stream."""
    if not call.stream:
        return (await provider.send(call)).body
    relay = await provider.open_stream(call)
    try:
        return relay.first_event + b"".join([events async for events in relay.events()])
    finally:
        await relay.aclose()
