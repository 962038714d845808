"""Responses written straight to their connection: a streamed body without an await per event, a whole answer at once.

uvicorn's `send` costs an ASGI message, an await and a task step per body piece; a stream relayed from the upstream
connection's callbacks (providers/sse_relay.py, `SSERelay.relay_to`) writes each piece here instead, framed exactly
as `send` frames it (one HTTP/1.1 chunk per piece), with the same flow control: the caller is told when the client's
buffer is full and awaits `drain`. The response's start and its last piece still go through `send`, so uvicorn's
own bookkeeping (keep-alive, completion) is unchanged. Offered by gateway.api.server_protocol as an ASGI extension;
under another server there is none and the relay sends as usual.

A proxied non-stream answer is written whole (`BodyWriters.whole`): its head and body in one write, without the two
ASGI messages and uvicorn's per-header checks (two regular expressions a header, a dozen headers an answer); the
values are checked at once instead, and uvicorn's state is left as its own `send` leaves it after such an answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

BODY_WRITERS = "polyroute.body_writers"  # the scope's `extensions` key
# Scope keys: set by an app that wraps `send` to change an answer's start (CORS headers), so that no answer starts
# past it; set here once an answer started past `send`, so that an app that would answer an error knows it cannot.
SEND_WRAPPED = "polyroute.send_wrapped"
STARTED_DIRECTLY = "polyroute.started_directly"


class ChunkedBodyWriter:
    """Writes body pieces of one response whose start uvicorn sent, as chunks on its transport."""

    __slots__ = ("_cycle", "_flow", "_write")

    def __init__(self, cycle: RequestResponseCycle, write: Callable[[bytes], object]) -> None:
        self._cycle = cycle
        self._write = write
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
    """One per connection: the writer of the response being streamed on it, for the request that owns it; and the
    watch for its client leaving (`watch_disconnect`)."""

    __slots__ = ("_protocol", "_watch_lost")

    def __init__(
        self, protocol: HttpToolsProtocol, watch_lost: Callable[[Callable[[], None]], Callable[[], None]]
    ) -> None:
        self._protocol = protocol
        self._watch_lost = watch_lost

    def watch_disconnect(self, scope: Scope, on_disconnect: Callable[[], None]) -> Callable[[], None] | None:
        """Call `on_disconnect` (at once, if it already happened) when the client of this request leaves before its
        answer is complete; returns what stops the watch, or None when this request's cycle is not current.

        What `receive()` tells an app as `http.disconnect`, from the connection itself: no coroutine waiting on the
        next ASGI message, no future, for every request."""
        cycle = self._protocol.cycle
        if cycle is None or cycle.scope is not scope:
            return None
        if cycle.disconnected:
            on_disconnect()
            return nothing
        return self._watch_lost(on_disconnect)

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
        # The connection's own transport: the response's head already went out with its first piece (a head waits
        # in the cycle's transport only until a body write, gateway.api.server_protocol).
        return ChunkedBodyWriter(cycle, self._protocol.transport.write)

    def whole(self, scope: Scope, status: int, media_type: bytes, headers: dict[str, str], body: bytes) -> bool:
        """Write a complete answer with a Content-Length, as uvicorn's `send` would write it from the two messages;
        False (nothing written) when the request's cycle is not in a state to take it here: send it as usual."""
        cycle = self._startable(scope, headers)
        if cycle is None:
            return False
        scope[STARTED_DIRECTLY] = True
        head = _head(cycle, status, media_type, headers, b"content-length: %d\r\n" % len(body))
        cycle.chunked_encoding = False
        cycle.expected_content_length = 0
        cycle.transport.writelines((head, body))
        cycle.response_complete = True
        cycle.message_event.set()
        if not cycle.keep_alive:
            cycle.transport.close()
        cycle.on_response()
        return True

    def start_chunked(
        self, scope: Scope, status: int, media_type: bytes, headers: dict[str, str], first: bytes
    ) -> bool:
        """Start a streamed answer with its first piece, in one write (uvicorn's `send` takes two messages and checks
        every header); the rest follows through `open`'s writer or `send`. False: nothing written, start it as usual."""
        cycle = self._startable(scope, headers)
        if cycle is None:
            return False
        scope[STARTED_DIRECTLY] = True
        head = _head(cycle, status, media_type, headers, b"transfer-encoding: chunked\r\n")
        cycle.chunked_encoding = True
        cycle.expected_content_length = 0
        cycle.transport.writelines((head, b"%x\r\n" % len(first) + first + b"\r\n") if first else (head,))
        return True

    def _startable(self, scope: Scope, headers: dict[str, str]) -> RequestResponseCycle | None:
        """The request's cycle when an answer may be started here: nothing sent yet, the client reading, header
        values free of CR, LF and other control characters (uvicorn's `send` refuses those too)."""
        cycle = self._protocol.cycle
        if (
            cycle is None
            or cycle.scope is not scope
            or SEND_WRAPPED in scope
            or cycle.response_started
            or cycle.disconnected
            or cycle.flow.write_paused
            or scope["method"] == "HEAD"
            or not "".join(headers.values()).isprintable()
        ):
            return None
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        return cycle


def _head(
    cycle: RequestResponseCycle, status: int, media_type: bytes, headers: dict[str, str], framing: bytes
) -> bytes:
    """An answer's head as uvicorn's `send` writes it: status line, its date and server, then the answer's own."""
    head = [STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        head += (name, b": ", value, b"\r\n")
    head += (b"content-type: ", media_type, b"\r\n", framing)
    for key, text in headers.items():
        head += (key.encode("latin-1"), b": ", text.encode("latin-1"), b"\r\n")
    if not cycle.keep_alive:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head)


def nothing() -> None:
    """A callback that does nothing: what a watch that has nothing left to stop returns."""
    return None


def _offered(scope: Scope) -> BodyWriters | None:
    extensions: dict[str, Any] | None = scope.get("extensions")
    offered = extensions.get(BODY_WRITERS) if extensions else None
    writers = offered.get("writers") if isinstance(offered, dict) else None
    return writers if isinstance(writers, BodyWriters) else None


def body_writer(scope: Scope) -> ChunkedBodyWriter | None:
    """The writer the server offers for this request's streamed body, if it offers one."""
    writers = _offered(scope)
    return writers.open(scope) if writers is not None else None


def start_chunked(scope: Scope, status: int, media_type: bytes, headers: dict[str, str], first: bytes) -> bool:
    """Start a streamed answer with its first piece straight on the connection when the server offers it; False: start
    it with `send` as usual."""
    writers = _offered(scope)
    return writers is not None and writers.start_chunked(scope, status, media_type, headers, first)


def write_whole(scope: Scope, status: int, media_type: bytes, headers: dict[str, str], body: bytes) -> bool:
    """Write a complete answer straight to the connection when the server offers it; False: send it as usual."""
    writers = _offered(scope)
    return writers is not None and writers.whole(scope, status, media_type, headers, body)


def watch_disconnect(scope: Scope, on_disconnect: Callable[[], None]) -> Callable[[], None] | None:
    """`BodyWriters.watch_disconnect` when the server offers it; None: watch `receive()` instead."""
    writers = _offered(scope)
    return writers.watch_disconnect(scope, on_disconnect) if writers is not None else None
