"""An upstream's answer to the HTTP/1.1 client: status and headers, the body read whole or as it arrives, bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from gateway.providers.http1_wire import AnswerRefused, BodySink, Connection

if TYPE_CHECKING:
    from gateway.providers.http1 import HTTPClient


@dataclass(frozen=True)
class UpstreamLimits:
    """How much of an answer is held at once: a body read whole (decoded); one event of a stream, or a line."""

    body_bytes: int = 64 * 1024 * 1024
    event_bytes: int = 8 * 1024 * 1024


class Response:
    """An upstream answer: status and headers at once, the body read whole or piece by piece.

    Release it (or use it as an async context manager) when done: a completely read answer returns its connection
    to the pool, anything else closes the connection.
    """

    def __init__(self, client: HTTPClient, conn: Connection, timer: asyncio.TimerHandle) -> None:
        self._client = client
        self._conn: Connection | None = conn
        self._timer = timer
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers
        self.limits = client.limits
        self._line = b""  # received by readline; returned up to _line_at
        self._line_at = 0

    async def readany(self) -> bytes:
        """The body bytes received since the last read (waiting for some), or b"" once the body is complete."""
        conn = self._conn
        if conn is None:
            return b""
        while True:
            if conn.chunks:
                return conn.take()
            if conn.error is not None:
                raise conn.error
            if conn.complete:
                return b""
            await conn.wait()

    def stream_to(self, sink: BodySink | None) -> bool:
        """From now on hand the body to `sink` as it arrives, in the connection's callbacks (what was received and
        not read yet first), instead of holding it for `readany`; None hands it back to `readany`. False, with
        nothing changed, when the body is compressed (inflated only as fast as it is read) or already over: read
        it with `readany` then. A sink stops it with `pause_reading` while its own reader is slow."""
        conn = self._conn
        if sink is None:
            if conn is not None:
                conn.sink = None
            return True
        unread = self._line_at < len(self._line)
        if conn is None or unread or conn.compressed or conn.complete or conn.error is not None:
            return False
        conn.sink = sink
        if conn.chunks:
            sink.body(conn.take())
        return True

    def pause_reading(self) -> None:
        if self._conn is not None:
            self._conn.pause_reading()

    def resume_reading(self) -> None:
        if self._conn is not None:
            self._conn.resume_reading()

    async def read(self) -> bytes:
        """The whole body (the rest of it, if some was read already), up to `limits.body_bytes` decoded."""
        rest = self._line[self._line_at :]
        parts = [rest] if rest else []
        self._line, self._line_at = b"", 0
        size, limit = len(rest), self.limits.body_bytes
        while data := await self.readany():
            size += len(data)
            if size > limit:
                self.close()
                raise AnswerRefused(f"the upstream's answer is larger than {limit} bytes")
            parts.append(data)
        return b"".join(parts)

    async def readline(self) -> bytes:
        """The next line with its b"\\n", up to `limits.event_bytes`; at the end the last unterminated line, then b"".

        Each byte is searched and copied once, however many reads a line takes or lines a read holds."""
        buf, start = self._line, self._line_at
        end = buf.find(b"\n", start)
        if end >= 0:
            self._line_at = end + 1
            return buf[start : end + 1]
        parts = [buf[start:]] if start < len(buf) else []
        size, limit = len(buf) - start, self.limits.event_bytes
        while True:
            data = await self.readany()
            if not data:
                self._line, self._line_at = b"", 0
                return b"".join(parts)
            end = data.find(b"\n")
            if end >= 0:
                self._line, self._line_at = data, end + 1
                parts.append(data[: end + 1])
                return b"".join(parts)
            size += len(data)
            if size > limit:
                self.close()
                raise AnswerRefused(f"a line of the upstream's answer is longer than {limit} bytes")
            parts.append(data)

    def release(self) -> None:
        """Done with this answer: its connection goes back to the pool when the body was read to its end."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.sink = None
            self._timer.cancel()
            self._client._done(conn, reuse=conn.reusable() and self._line_at >= len(self._line))

    def close(self) -> None:
        """Done with this answer before its end: its connection is closed."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.sink = None
            self._timer.cancel()
            self._client._done(conn, reuse=False)

    def __del__(self) -> None:
        # Dropped without release or close (a task cancelled just as its answer came): the connection must not keep
        # its place among max_connections for ever. Closed, as an abandoned answer is.
        if self._conn is not None:
            with contextlib.suppress(RuntimeError):  # the event loop may be gone already, at interpreter exit
                self.close()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.release()
        else:
            self.close()
