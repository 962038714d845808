"""Fixtures of the provider tests: a raw upstream server factory, and an HTTP client closed after each test."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import pytest

from gateway.providers.http1 import HTTPClient
from tests.unit.providers.raw_http import LIMIT, Handler, Serve, Upstream


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    upstreams: list[Upstream] = []
    handlers: set[asyncio.Task[None]] = set()

    async def start(handler: Handler, tls: ssl.SSLContext | None = None) -> Upstream:
        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            upstream.connections += 1
            task = asyncio.current_task()
            assert task is not None
            handlers.add(task)
            try:
                async with asyncio.timeout(LIMIT):
                    await handler(upstream, reader, writer)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass  # the client went, the limit passed, or the test is over
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()

        server = await asyncio.start_server(on_connection, "127.0.0.1", 0, ssl=tls)
        upstream = Upstream(server, "https" if tls else "http")
        upstreams.append(upstream)
        return upstream

    yield start
    for task in handlers:
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    for upstream in upstreams:
        upstream.server.close()
        await upstream.server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[HTTPClient]:
    client = HTTPClient()
    yield client
    await client.close()
