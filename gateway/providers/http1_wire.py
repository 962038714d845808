"""HTTP/1.1 on the wire for the upstream client: one connection's answer parsed as it arrives.

`http1.HTTPClient` pools these connections and sends them the request heads of `http1_head`; this module knows the
bytes that come back: an answer fed through httptools as it arrives, within the limits below.
"""

from __future__ import annotations

import asyncio
import select
import zlib
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

import httptools

_HIGH_WATER = 256 * 1024  # stop reading from an upstream socket while this much is received but not yet read
_SLICE = 64 * 1024  # inflated per step: a compressed body is decoded no further ahead of its reader than this
# The answer's head, limited as aiohttp's client limits it (aiohttp 3.14, `http_parser.HttpParser` and
# `ClientSession` defaults: max_line_size=8190, max_field_size=8190, max_headers=128). aiohttp bounds the whole
# head only through those; here it has a bound of its own, which also covers chunk framing and trailers.
MAX_STATUS_LINE = 8190  # the reason phrase of the status line
MAX_HEADER_LINE = 8190  # one header's name and value
MAX_HEADERS = 128  # header (and trailer) lines of one answer
MAX_HEAD = 64 * 1024  # bytes received without a byte of body: the head, chunk-size lines, trailers


class ConnectTimeout(TimeoutError):
    """No connection to the upstream within the connect timeout."""


class ConnectFailed(ConnectionError):
    """The connection could not be made: refused, unreachable, a name that does not resolve, a failed handshake."""


class BrokenExchange(ConnectionError):
    """The connection broke before the answer was complete, or what came back was not HTTP/1.1."""


class AnswerRefused(BrokenExchange):
    """The upstream answered with something the client will not take: past one of its size limits (status line,
    header line, header count, head, decoded body, a line or event of a stream) or a switch of protocols (101)."""


class BodySink(Protocol):
    """Takes an answer's body as it arrives, in the connection's own callbacks (`Connection.sink`)."""

    def body(self, data: bytes) -> None:
        """Body bytes just received (never b""); must not raise."""

    def woken(self) -> None:
        """The answer is complete, failed or lost its connection: the reader takes over from here."""


class Connection(asyncio.Protocol):
    """One upstream connection and the exchange on it: httptools feeds the answer in, a reader awaits it."""

    def __init__(self, key: tuple[str, str, int], on_lost: Callable[[Connection], None]) -> None:
        self.key = key
        self._on_lost = on_lost  # the pool forgets a connection the upstream closed
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._poll: select.poll | None = None  # asks the socket, without reading, whether it has bytes or EOF
        # Body pieces of one read, for the sink: an upstream that sends each event as its own HTTP chunk gives one
        # piece per event, and the sink takes them as one (one scan, one write to the client), not one by one.
        self._held: list[bytes] = []
        self._reset_exchange()

    def _reset_exchange(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False  # the whole body is in `chunks` or was read (decoded, if it was compressed)
        self.keep_alive = False
        self.error: BaseException | None = None
        self.sink: BodySink | None = None  # takes the body as it arrives instead of `chunks` (uncompressed only)
        self._parsed = False  # the parser saw the end of the answer (its body may still be inflating)
        self._until_close = False
        self._decoder: zlib._Decompress | None = None
        self._compressed: deque[bytes] = deque()  # body received, not yet inflated: its reader is behind
        self._inflating = False  # the last slice filled up: the decoder may hold more output
        self._framing = 0  # bytes received since the last byte of body (or since the request)
        self._status_size = 0
        self._head_size = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self._parsed:  # bytes nobody asked for: this connection cannot be trusted any more
            self._fail(BrokenExchange("the upstream sent bytes outside an answer"))
            return
        self._framing += len(data)  # on_body sets it back to 0
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            refused = exc.__context__  # what a callback below raised, if one did
            malformed = BrokenExchange(f"malformed HTTP answer: {exc}")
            self._fail(refused if isinstance(refused, AnswerRefused) else malformed)
        except httptools.HttpParserUpgrade:
            self._fail(AnswerRefused("the upstream switched protocols (an upgrade), which a POST here never asks for"))
        else:
            if self._framing > MAX_HEAD:  # httptools keeps an unfinished line whole: it must not grow for ever
                self._fail(AnswerRefused(f"the upstream sent more than {MAX_HEAD} bytes of head or framing"))
        if self._held:
            self._hand_held()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._on_lost(self)
        if self._parser is not None and not self._parsed and self.error is None:
            if self.headers_done and self._until_close:
                self._end_body()  # an answer without length or chunks ends where the connection does
            elif exc is not None:
                self.error = BrokenExchange(f"connection broke: {type(exc).__name__}")
            else:
                self.error = BrokenExchange("the upstream closed the connection before the answer was complete")
        self._wake()

    # httptools callbacks

    def on_status(self, reason: bytes) -> None:
        self._status_size += len(reason)  # called per piece received: an endless status line stops here
        if self._status_size > MAX_STATUS_LINE:
            raise AnswerRefused(f"the upstream's status line is longer than {MAX_STATUS_LINE} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        raw = self._raw_headers
        raw.append((name, value))
        size = len(name) + len(value)
        self._head_size += size + 4
        if size > MAX_HEADER_LINE or len(raw) > MAX_HEADERS or self._head_size > MAX_HEAD:
            raise AnswerRefused(
                f"the upstream's headers are past the limits ({MAX_HEADER_LINE} bytes a line, {MAX_HEADERS} lines,"
                f" {MAX_HEAD} bytes in all)"
            )

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if status == 101:  # the connection would speak another protocol from here on
            raise AnswerRefused("the upstream answered 101 Switching Protocols to a POST that asked for no upgrade")
        if 100 <= status < 200:  # an interim answer (never asked for): the real one follows
            self._raw_headers.clear()
            self._status_size = 0
            return
        self.status = status
        headers = self.headers
        for raw_name, raw_value in self._raw_headers:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.headers_done = True
        self._until_close = "content-length" not in headers and "chunked" not in headers.get(
            "transfer-encoding", ""
        ).lower()
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()
        elif encoding not in ("identity", ""):
            self._fail(BrokenExchange(f"unsupported content-encoding {encoding!r}"))
            return
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._framing = 0
        if self.error is not None:  # the exchange already failed (say, an unsupported encoding): nothing to keep
            return
        if self._decoder is None:
            self._keep(body)
        else:
            self._compressed.append(body)
            self._inflate()

    def on_message_complete(self) -> None:
        if self._parser is None or self.error is not None or not self.headers_done:
            return  # the exchange failed meanwhile, or this ends an interim (1xx) answer
        self.keep_alive = self._parser.should_keep_alive()
        self._end_body()

    # the body on its way to the reader

    def _keep(self, data: bytes) -> None:
        if self.sink is not None:
            # Only the parser's callbacks get here with a sink (a compressed body never has one): the piece goes on
            # with the rest of this read, after `feed_data`, or before the end or failure it brought (`_wake`).
            self._held.append(data)
            return
        self._buffer(data)

    def _buffer(self, data: bytes) -> None:
        """Keep a piece for `readany`, pausing the socket above the high-water mark, and wake the reader."""
        self.chunks.append(data)
        self.buffered += len(data)
        if self.buffered > _HIGH_WATER:
            self._pause()
        self._wake()

    def _inflate(self) -> None:
        """Decode received compressed bytes a slice at a time, only while less than the high-water mark waits for
        the reader: a small body that inflates to gigabytes grows no faster than it is read. Reading from the
        socket pauses while compressed bytes wait too, so those stay within about one read."""
        decoder = self._decoder
        assert decoder is not None
        pending = self._compressed
        try:
            while self.buffered < _HIGH_WATER:
                if decoder.unconsumed_tail:
                    data = decoder.decompress(decoder.unconsumed_tail, _SLICE)
                elif pending:
                    data = decoder.decompress(pending.popleft(), _SLICE)
                elif self._inflating:
                    data = decoder.decompress(b"", _SLICE)
                else:
                    break
                self._inflating = len(data) == _SLICE
                if data:
                    self._keep(data)
        except zlib.error:
            self._fail(BrokenExchange("the answer's compressed body is corrupt"))
            return
        if pending or decoder.unconsumed_tail or self._inflating:
            self._pause()
        elif self._parsed and not self.complete:
            tail = decoder.flush()  # all input consumed and no slice filled: at most what zlib still holds
            if tail:
                self._keep(tail)
            self.complete = True
            self._wake()

    def _end_body(self) -> None:
        self._parsed = True
        if self._decoder is not None:
            self._inflate()  # complete once every compressed byte is decoded
        else:
            self.complete = True
            self._wake()

    def _pause(self) -> None:
        if not self._paused and self.transport is not None and not self.lost:
            self._paused = True
            self.transport.pause_reading()

    @property
    def compressed(self) -> bool:
        """The answer's body is inflated as it is read."""
        return self._decoder is not None

    def pause_reading(self) -> None:
        """Read no more from the upstream until `resume_reading` (a sink whose reader is slow)."""
        self._pause()

    def resume_reading(self) -> None:
        if self._paused and self.transport is not None and not self.lost:
            self._paused = False
            self.transport.resume_reading()

    # used by the client and the response

    def begin(self, head: bytes, body: bytes = b"") -> None:
        """Send one request; its answer is parsed from here on.

        Head and body go out in one system call without being joined first: a body of megabytes is not copied."""
        assert self.transport is not None
        self._reset_exchange()
        self._parser = httptools.HttpResponseParser(self)
        if body:
            self.transport.writelines((head, body))
        else:
            self.transport.write(head)

    def take(self) -> bytes:
        """Everything received and not yet read."""
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        decoder = self._decoder
        if decoder is not None and self.error is None:
            self._inflate()  # the next slices, from what waited compressed
            if self._compressed or decoder.unconsumed_tail or self._inflating:
                return data
        if self._paused and self.transport is not None and self.buffered <= _HIGH_WATER:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def wait(self) -> None:
        """Until more of the answer has arrived, it is complete, or the exchange failed."""
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def timed_out(self) -> None:
        self._fail(TimeoutError("the upstream answer did not complete within the total timeout"))

    def _fail(self, error: BaseException) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self.abort()
        self._wake()

    def _hand_held(self) -> None:
        """Hand the sink what this read held back, as one piece (to `chunks` if the sink let go meanwhile)."""
        held = self._held
        data = held[0] if len(held) == 1 else b"".join(held)
        held.clear()
        sink = self.sink
        if sink is not None:
            sink.body(data)
        else:
            self._buffer(data)

    def _wake(self) -> None:
        if self._held:
            self._hand_held()  # the body that came first, then the end or the failure
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif self.sink is not None:
            self.sink.woken()

    def peer_spoke(self) -> bool:
        """Whether the idle socket has something to read: the upstream closed it (say its keep-alive timeout ran
        out) and the event loop has not processed that yet. Asked before reuse, so a request is not sent into it."""
        if self._poll is None:
            return False
        try:
            return bool(self._poll.poll(0))
        except OSError:
            return True

    def reusable(self) -> bool:
        transport = self.transport
        return (
            self.complete
            and self.keep_alive
            and self.error is None
            and not self.chunks
            and not self.lost
            and transport is not None
            and not transport.is_closing()
        )

    def finish(self) -> None:
        """The exchange is over: nothing more is parsed until the next request."""
        self._parser = None

    def abort(self) -> None:
        self._parser = None
        if self.transport is not None and not self.lost:
            self.transport.abort()
