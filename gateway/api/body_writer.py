"""A streamed response's body written straight to its connection: what a relay without an await per event writes to.

uvicorn's `send` costs an ASGI message, an await and a task step per body piece; a stream relayed from the upstream
connection's callbacks (providers/sse_relay.py, `SSERelay.relay_to`) writes each piece here instead, framed exactly
as `send` frames it (one HTTP/1.1 chunk per piece), with the same flow control: the caller is told when the client's
buffer is full and awaits `drain`. The response's start and its last piece still go through `send`, so uvicorn's
own bookkeeping (keep-alive, completion) is unchanged. Offered by gateway.api.server_protocol as an ASGI extension;
under another server there is none and the relay sends as usual.
"""

from __future__ import annotations

from typing import Any

from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

BODY_WRITERS = "polyroute.body_writers"  # the scope's `extensions` key


class ChunkedBodyWriter:
    """Writes body pieces of one response whose start uvicorn sent, as chunks on its transport."""

    __slots__ = ("_cycle", "_flow", "_write")

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle
        self._write = cycle.transport.write
        self._flow = cycle.flow

    @property
    def gone(self) -> bool:
        return bool(self._cycle.disconnected)

    def write(self, data: bytes) -> bool:
        if self._cycle.disconnected:
            return False
        self._write(b"%x\r\n" % len(data) + data + b"\r\n")  # as uvicorn frames it; no tuple to collect
        return not self._flow.write_paused

    async def drain(self) -> None:
        if self._flow.write_paused and not self._cycle.disconnected:
            await self._flow.drain()


class BodyWriters:
    """One per connection: the writer of the response being streamed on it, for the request that owns it."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: HttpToolsProtocol) -> None:
        self._protocol = protocol

    def open(self, scope: Scope) -> ChunkedBodyWriter | None:
        """The writer for the request of `scope` once its response started in chunks; None otherwise (another
        request's cycle is current, say a pipelined one, or the response has a length or is over)."""
        cycle = self._protocol.cycle
        if (
            cycle is None
            or cycle.scope is not scope
            or not cycle.response_started
            or cycle.response_complete
            or not cycle.chunked_encoding
            or cycle.disconnected
        ):
            return None
        return ChunkedBodyWriter(cycle)


def body_writer(scope: Scope) -> ChunkedBodyWriter | None:
    """The writer the server offers for this request's streamed body, if it offers one."""
    extensions: dict[str, Any] | None = scope.get("extensions")
    offered = extensions.get(BODY_WRITERS) if extensions else None
    writers = offered.get("writers") if isinstance(offered, dict) else None
    return writers.open(scope) if isinstance(writers, BodyWriters) else None
