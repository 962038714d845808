"""An upstream on loopback that streams a long chat answer as fast as it is read, counting what it has sent.

Served by an event loop in a thread of its own, for tests that are not async themselves. Every request gets the
same event stream: `events` content chunks of `content_bytes` each, a finish chunk and `data: [DONE]`, written with
the writer's own flow control, so `sent` stops growing once nobody reads further along the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import Iterator

HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)
EVENTS_PER_WRITE = 16


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(delta: dict[str, str], finish: str | None) -> bytes:
    chunk = {"id": "chatcmpl-flood", "object": "chat.completion.chunk", "created": 1, "model": "flood",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


class FloodUpstream:
    def __init__(self, events: int, content_bytes: int) -> None:
        self.events = events
        self.content = _event({"content": "x" * content_bytes}, None)
        self.ending = _event({}, "stop") + b"data: [DONE]\n\n"
        self.port = 0
        self.sent = 0  # body bytes written so far (read from the test's thread: a plain int is enough)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def total(self) -> int:
        return self.events * len(self.content) + len(self.ending)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            await reader.readexactly(int(length[1]) if length else 0)
            writer.write(HEAD)
            batch = self.content * EVENTS_PER_WRITE
            left = self.events
            while left:
                n = min(left, EVENTS_PER_WRITE)
                data = batch if n == EVENTS_PER_WRITE else self.content * n
                writer.write(_chunk(data))
                await writer.drain()
                self.sent += len(data)
                left -= n
            writer.write(_chunk(self.ending) + b"0\r\n\r\n")
            await writer.drain()
            self.sent += len(self.ending)
            await reader.read()  # until the gateway closes the connection
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.contextmanager
def flood_upstream_in_thread(events: int, content_bytes: int) -> Iterator[FloodUpstream]:
    upstream = FloodUpstream(events, content_bytes)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    server: asyncio.Server | None = None

    async def serve() -> None:
        nonlocal server
        server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
        upstream.port = server.sockets[0].getsockname()[1]
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    if not ready.wait(10):
        raise RuntimeError("the flood upstream did not start")
    try:
        yield upstream
    finally:

        async def stop() -> None:
            await upstream.stop()
            if server is not None:
                server.close()
                await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
