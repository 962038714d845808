"""The HTTP/1.1 server protocol: uvicorn's httptools protocol, bounded against slow clients and too many connections.

uvicorn has a keep-alive timeout but nothing that ends a connection whose request never finishes arriving, and no
bound on connections short of answering 503 to requests on connections it has already accepted. Three bounds are
added here, with one timer per connection that a request answered in time does not touch (no work per byte, no
timer created or cancelled per request):

- header timeout: a request's headers must be complete within `header_timeout_s` of the connection opening or of
  the previous response ending; otherwise 408 (when part of a request came) and close. It also bounds how long
  the rest of a body is read and dropped after an early answer (a 413 at once for a declared length over the
  limit), so a client that sends its whole body still reads the answer rather than a reset.
- body timeout: while a body is arriving, a pause longer than `body_timeout_s` ends the request with 408 and
  closes. Time the gateway itself stops reading (flow control while the app is busy) does not count.
- connection bound: a connection beyond `max_connections` in this process is answered 503 (`Retry-After: 1`) at
  once and closed, before any of it is read, so it holds nothing.

Errors are in OpenAI's envelope, or Anthropic's for a body timeout on /v1/messages.
"""

from __future__ import annotations

import asyncio
import functools
import http
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.api.body_writer import BODY_WRITERS, BodyWriters
from gateway.error_envelope import error_body
from gateway.errors import PolyrouteError, RequestTimeoutError, TooManyConnectionsError
from gateway.protocols import messages_reply
from gateway.settings import Settings


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The bounds a server process applies to each client connection."""

    header_timeout_s: float
    body_timeout_s: float
    max_connections: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        return cls(
            header_timeout_s=settings.header_timeout_seconds,
            body_timeout_s=settings.body_timeout_seconds,
            max_connections=settings.max_connections,
        )


def bounded_protocol(limits: ConnectionLimits) -> Any:
    """What uvicorn's `http=` takes: it calls this with its config and state once per connection.

    A partial of a module-level class, so that it pickles into the worker processes of `--workers N`.
    """
    return functools.partial(BoundedHttpToolsProtocol, limits=limits)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """One client connection, with the header timeout, the body timeout and the connection bound."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = limits
        # One timer per connection, moved lazily: a request that arrives and is answered in time changes a
        # deadline (a float) and creates or cancels no timer. When the timer fires it checks the deadlines that
        # still apply and sleeps again until the nearest one, or acts on the one that passed.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._head_due: float | None = None  # when the next request's headers must be complete
        self._head_started = False  # part of that request's head has come, not all of it
        self._reading_body = False  # headers complete, body not yet
        self._body_seen_at = 0.0  # the last time body bytes came (or the gateway resumed reading them)
        self._linger = False  # answered and to be closed, once the client finishes sending the body
        self._cycle_transport: _CycleTransport | None = None
        self._body_writers: dict[object, object] = {"writers": BodyWriters(self, self._watch_lost)}  # ASGI extension
        self._on_lost: Callable[[], None] | None = None  # the current request's guard, told when the client leaves

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]  # uvicorn narrows it to Transport
        self._cycle_transport = _CycleTransport(self.transport, self._close_after_body, self.loop)
        if len(self.connections) > self._limits.max_connections:
            self._answer_and_close(
                TooManyConnectionsError(
                    f"The gateway holds its maximum of {self._limits.max_connections} connections; retry shortly."
                ),
                messages=False,
            )
            return
        self._expect_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None and self.cycle is not None and self.cycle.disconnected:
            on_lost()

    def _watch_lost(self, on_lost: Callable[[], None]) -> Callable[[], None]:
        """Have `on_lost` called when the client of the current request leaves before its answer is complete;
        returns what stops it (and only it: a later request's watch stays)."""
        self._on_lost = on_lost

        def stop() -> None:
            if self._on_lost is on_lost:
                self._on_lost = None

        return stop

    def data_received(self, data: bytes) -> None:
        if self._cycle_transport is not None:
            self._cycle_transport.flush()  # whatever uvicorn writes itself (a 400 to a bad request) comes after it
        super().data_received(data)
        if self._reading_body:
            # A body that did not come whole with its headers: a pause may not exceed the body timeout.
            self._body_seen_at = now = self.loop.time()
            self._wake_by(now + self._limits.body_timeout_s)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True

    def on_headers_complete(self) -> None:
        self._head_due = None
        self._head_started = False
        self._reading_body = True
        super().on_headers_complete()
        if self.cycle is not None:
            self.cycle.transport = self._cycle_transport  # type: ignore[assignment]
            self.scope["extensions"] = {BODY_WRITERS: self._body_writers}  # body_writer.py

    def on_body(self, body: bytes) -> None:
        """As uvicorn's, but a body that arrives in one piece (the usual case, up to the socket's read size) is
        handed to the request as the very bytes object the parser gave: uvicorn copies each piece into a bytearray
        and then copies that again into bytes at `receive()`, two copies of every body. Later pieces, before the
        request reads, are appended to a bytearray as there (so a body that piles up is not copied over and over)."""
        cycle = self.cycle
        if cycle.response_complete or (self.parser.should_upgrade() and self._should_upgrade()):
            return
        held: bytes | bytearray = cycle.body
        if not held:
            cycle.body = body  # type: ignore[assignment]  # receive() takes `bytes(body)`: the same object
        else:
            grown = held if isinstance(held, bytearray) else bytearray(held)
            grown += body
            cycle.body = grown
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        self._reading_body = False
        if self._linger:
            self.transport.close()
            return
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._cycle_transport is not None:
            self._cycle_transport.flush()  # a HEAD answer's head, which no body write took along
        super().on_response_complete()
        # uvicorn arms its keep-alive timer exactly when it now waits for a next request (not closing, nothing
        # pipelined): the next request's headers are due from here.
        if self.timeout_keep_alive_task is not None:
            self._expect_head()

    def _expect_head(self) -> None:
        self._head_due = due = self.loop.time() + self._limits.header_timeout_s
        self._wake_by(due)

    def _wake_by(self, due: float) -> None:
        """Make sure the timer fires no later than `due` (usually it already does)."""
        if self._timer is not None:
            if self._timer_at <= due:
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(due, self._on_timer)
        self._timer_at = due

    def _on_timer(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        body_due: float | None = None
        if self._reading_body:
            if self.flow.read_paused:
                self._body_seen_at = now  # the gateway is not reading: the client cannot be late
            body_due = self._body_seen_at + self._limits.body_timeout_s
        if self._head_due is not None and self._head_due <= now:
            self._head_timed_out()
        elif body_due is not None and body_due <= now:
            self._body_timed_out()
        elif self._head_due is not None or body_due is not None:
            self._wake_by(min(due for due in (self._head_due, body_due) if due is not None))

    def _head_timed_out(self) -> None:
        if self._head_started and not self._linger:
            self._answer_and_close(
                RequestTimeoutError(
                    f"The request headers did not arrive within {self._limits.header_timeout_s:g} seconds."
                ),
                messages=False,
            )
        else:  # idle, or still sending the body of an answered request: nothing to answer
            self._close()

    def _body_timed_out(self) -> None:
        err = RequestTimeoutError(f"The request body paused for over {self._limits.body_timeout_s:g} seconds.")
        if self.cycle is not None and not self.cycle.response_started:
            self._answer_and_close(err, messages=self.scope.get("path", "").startswith("/v1/messages"))
        else:
            self._close()

    def _close_after_body(self) -> None:
        """How a request's cycle closes the connection: a client still sending a body nobody reads (an early
        answer, such as the 413 for a declared length over the limit) may finish, within the header timeout
        that runs from the answer and the body timeout, so that it reads the answer rather than a reset."""
        if self._reading_body and not self.transport.is_closing():
            self._linger = True
        else:
            self.transport.close()

    def _answer_and_close(self, err: PolyrouteError, *, messages: bool) -> None:
        if self._cycle_transport is not None:
            self._cycle_transport.flush()
        body = messages_reply.error_body(err) if messages else orjson.dumps(error_body(err))
        status = http.HTTPStatus(err.status)
        head = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            "content-type: application/json",
            f"content-length: {len(body)}",
            "connection: close",
        ]
        head += [f"{name}: {value}" for name, value in err.headers().items()]
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self._close()

    def _close(self) -> None:
        if self._cycle_transport is not None:
            self._cycle_transport.flush()
        if self.cycle is not None and not self.cycle.response_complete:
            # The request's task sees a disconnect at its next receive and sends nothing more.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()


class _CycleTransport:
    """The transport a request's cycle writes to: the connection's, but a response's head waits for its first body
    bytes, so that both leave in one system call (uvicorn writes them apart: one more `send` per response, and one
    more segment for the client to read), and closing may wait for the request body.

    A head waits no longer than the current turn of the event loop: the connection flushes it when the response is
    complete (a HEAD answer has no body), before anything it writes itself, and a body that does not follow in the
    same turn (a streaming response still waiting for its first chunk) finds the head already sent.
    """

    __slots__ = ("_close", "_head", "_loop", "_transport", "is_closing")

    def __init__(
        self, transport: asyncio.Transport, close: Callable[[], None], loop: asyncio.AbstractEventLoop
    ) -> None:
        self._transport = transport
        self._close = close
        self._loop = loop
        self._head: bytes | None = None
        self.is_closing = transport.is_closing

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            self._transport.writelines((head, data))
        elif data.startswith(b"HTTP/1.1 ") and data[9:10] != b"1":  # a final response's head (not 100 Continue)
            self._head = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def writelines(self, parts: Iterable[bytes]) -> None:
        """A whole answer (body_writer.py): after any head still waiting, in one system call."""
        self.flush()
        self._transport.writelines(parts)

    def flush(self) -> None:
        """Send a head still waiting for its body."""
        head = self._head
        if head is not None:
            self._head = None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._close()
