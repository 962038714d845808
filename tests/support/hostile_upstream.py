"""An upstream on loopback whose first answer is a gzip bomb, sent in two parts with a pause between, for tests.

Served by an event loop in a thread of its own, for tests that are not async themselves. The first part inflates to
less than the gateway's body limit; the second part (sent once the test says so) to far more. Every later connection
gets a good chat completion.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import zlib
from collections.abc import Iterator

GOOD = b'{"id": "chatcmpl-h", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop", ' \
    b'"message": {"role": "assistant", "content": "from the hostile upstream, behaving"}}]}'
BOMB_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
WAIT_S = 30.0  # no wait here lasts longer


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class HostileUpstream:
    """Records when the first part of the bomb went out and when the gateway dropped that connection."""

    def __init__(self, first_part: int, second_part: int) -> None:
        packer = zlib.compressobj(wbits=31)  # gzip
        self._first = packer.compress(b"\0" * first_part) + packer.flush(zlib.Z_SYNC_FLUSH)
        self._second = packer.compress(b"\0" * second_part) + packer.flush()
        self.port = 0
        self.connections = 0
        self.first_part_sent = threading.Event()
        self.bomb_dropped = threading.Event()  # the gateway closed the connection the bomb came on
        self._go_on = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def send_the_rest(self) -> None:
        self._go_on.set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        first = self.connections == 1
        try:
            while await _request(reader):
                if not first:
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(GOOD), GOOD))
                    await writer.drain()
                    continue
                writer.write(BOMB_HEAD + _chunk(self._first))
                await writer.drain()
                self.first_part_sent.set()
                await asyncio.get_running_loop().run_in_executor(None, self._go_on.wait, WAIT_S)
                writer.write(_chunk(self._second) + b"0\r\n\r\n")
                await writer.drain()
                await reader.read()  # until the gateway closes the connection
                break
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if first:
                self.bomb_dropped.set()
            writer.close()

    async def stop(self) -> None:
        self._go_on.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _request(reader: asyncio.StreamReader) -> bool:
    """Read one request; False once the client closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return False
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    await reader.readexactly(int(length[1]) if length else 0)
    return True


@contextlib.contextmanager
def hostile_upstream_in_thread(first_part: int, second_part: int) -> Iterator[HostileUpstream]:
    upstream = HostileUpstream(first_part, second_part)
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
        raise RuntimeError("the hostile upstream did not start")
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
