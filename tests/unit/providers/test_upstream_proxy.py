"""Upstreams reached through an HTTP proxy: CONNECT tunnels for https://, absolute URLs for http://, NO_PROXY."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gateway.providers.http1 import ConnectFailed, HTTPClient
from gateway.providers.upstream_proxy import UpstreamProxy
from tests.support.forward_proxy import ForwardProxy
from tests.support.tls import self_signed
from tests.unit.providers.raw_http import Serve, fetch, ok, post, replies

StartProxy = Callable[..., Awaitable[ForwardProxy]]


@pytest.fixture
async def start_proxy() -> AsyncIterator[StartProxy]:
    made: list[tuple[ForwardProxy, asyncio.Server]] = []

    async def start(refuse: bytes | None = None) -> ForwardProxy:
        proxy = ForwardProxy(refuse)
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        proxy.port = server.sockets[0].getsockname()[1]
        made.append((proxy, server))
        return proxy

    yield start
    for proxy, server in made:
        await proxy.stop()
        server.close()
        await server.wait_closed()


async def test_an_https_upstream_is_reached_through_one_tunnel(
    start_proxy: StartProxy, serve: Serve, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    up = await serve(replies(ok(b"over tls")), server_side)
    proxy = await start_proxy()
    via = UpstreamProxy(f"http://egress:p%40ss@127.0.0.1:{proxy.port}", no_proxy="")
    client = HTTPClient(ssl_context=ssl.create_default_context(cafile=cert), proxies={"https": via})
    try:
        assert await fetch(client, up.url()) == (200, b"over tls")
        assert await fetch(client, up.url()) == (200, b"over tls")  # the tunnel is kept alive like any connection
    finally:
        await client.close()
    assert proxy.request_lines == [f"CONNECT 127.0.0.1:{up.port} HTTP/1.1"]
    assert proxy.authorizations == ["Basic " + base64.b64encode(b"egress:p@ss").decode()]
    assert up.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")


async def test_an_http_upstream_is_asked_for_by_its_absolute_url(start_proxy: StartProxy, serve: Serve) -> None:
    up = await serve(replies(ok()))
    proxy = await start_proxy()
    client = HTTPClient(proxies={"http": UpstreamProxy(f"127.0.0.1:{proxy.port}", no_proxy="")})
    try:
        assert await fetch(client, up.url()) == (200, b'{"ok": true}')
    finally:
        await client.close()
    assert proxy.request_lines == [f"POST http://127.0.0.1:{up.port}/v1/chat/completions HTTP/1.1"]
    assert proxy.authorizations == [None]


async def test_no_proxy_and_loopback_go_direct(start_proxy: StartProxy, serve: Serve) -> None:
    up = await serve(replies(ok()))
    proxy = await start_proxy()
    for no_proxy in (None, "127.0.0.0/8", f"127.0.0.1:{up.port}", "*"):  # None: the default, loopback direct
        client = HTTPClient(proxies={"http": UpstreamProxy(f"http://127.0.0.1:{proxy.port}", no_proxy=no_proxy)})
        try:
            assert await fetch(client, up.url()) == (200, b'{"ok": true}')
        finally:
            await client.close()
    assert proxy.request_lines == []


async def test_a_proxy_that_refuses_the_tunnel_is_a_connect_failure(
    start_proxy: StartProxy, serve: Serve, tmp_path: Path
) -> None:
    proxy = await start_proxy(refuse=b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")
    client = HTTPClient(proxies={"https": UpstreamProxy(f"http://127.0.0.1:{proxy.port}", no_proxy="")})
    try:
        with pytest.raises(ConnectFailed, match="407"):
            await post(client, "https://api.example.test/v1/chat/completions")
        assert client.busy == 0
    finally:
        await client.close()
    assert proxy.request_lines == ["CONNECT api.example.test:443 HTTP/1.1"]


@pytest.mark.parametrize(
    ("no_proxy", "host", "port", "bypassed"),
    [
        ("example.com", "api.example.com", 443, True),
        (".example.com", "api.example.com", 443, True),
        ("example.com", "example.com", 443, True),
        ("example.com", "badexample.com", 443, False),
        ("10.0.0.0/8", "10.1.2.3", 80, True),
        ("10.0.0.0/8", "11.1.2.3", 80, False),
        ("vllm.internal:8000", "vllm.internal", 8000, True),
        ("vllm.internal:8000", "vllm.internal", 9000, False),
        ("[::1]:8000", "::1", 8000, True),
        ("*", "dashscope-intl.aliyuncs.com", 443, True),
        ("", "localhost", 80, False),
        (None, "localhost", 80, True),
        (None, "dashscope-intl.aliyuncs.com", 443, False),
    ],
)
def test_no_proxy_rules(no_proxy: str | None, host: str, port: int, bypassed: bool) -> None:
    assert UpstreamProxy("http://proxy:3128", no_proxy=no_proxy).bypassed(host, port) is bypassed


def test_only_http_proxies_are_accepted() -> None:
    with pytest.raises(ValueError, match="http://"):
        UpstreamProxy("https://proxy:3128")
