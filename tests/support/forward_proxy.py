"""A forward HTTP proxy on loopback for tests: tunnels CONNECT, relays absolute-form requests, records both."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit


class ForwardProxy:
    """A forward proxy on loopback: tunnels CONNECT, relays absolute-form requests, records what it was asked."""

    def __init__(self, refuse: bytes | None) -> None:
        self.refuse = refuse  # an answer to give instead of a tunnel
        self.request_lines: list[str] = []
        self.authorizations: list[str | None] = []
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode()
            self.request_lines.append(line)
            auth = re.search(rb"(?im)^proxy-authorization:\s*(.+?)\r$", head)
            self.authorizations.append(auth[1].decode() if auth else None)
            if self.refuse is not None:
                writer.write(self.refuse)
                return
            method, target, _ = line.split(" ")
            if method == "CONNECT":
                host, port = target.rsplit(":", 1)
                upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                url = urlsplit(target)
                upstream_reader, upstream_writer = await asyncio.open_connection(url.hostname, url.port)
                upstream_writer.write(head)  # origin servers accept the absolute form too
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.contextmanager
def proxy_in_thread() -> Iterator[ForwardProxy]:
    """A proxy served by an event loop of its own, for tests that are not async themselves."""
    proxy = ForwardProxy(None)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    server: asyncio.Server | None = None

    async def serve() -> None:
        nonlocal server
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        proxy.port = server.sockets[0].getsockname()[1]
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(serve(), loop)
    if not ready.wait(10):
        raise RuntimeError("the test proxy did not start")
    try:
        yield proxy
    finally:

        async def stop() -> None:
            await proxy.stop()
            if server is not None:
                server.close()
                await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
