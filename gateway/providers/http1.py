"""The upstream HTTP/1.1 client: pooled keep-alive POSTs, a response read whole or as it arrives.

Every request to an OpenAI-compatible upstream goes through here, so it does only what that needs: POST a body,
read the status, the headers and the body (content-length, chunked, or up to the close), keep the connection for
the next request, and fail in a way failover can classify. Parsing is httptools' (llhttp, in C); connections are
the event loop's own transports, TLS included. Per request it costs a fraction of a general-purpose client.

Failures, all of them exceptions the caller classifies:

    TimeoutError
     └── ConnectTimeout   no connection within the connect timeout
    ConnectionError
     ├── ConnectFailed    the connection could not be made (refused, unreachable, DNS, TLS handshake)
     └── BrokenExchange   the upstream closed or reset the connection, or answered with malformed HTTP
    ValueError
     └── InvalidHeader    a header name or value that cannot be sent (CR, LF, NUL: header injection)

A plain TimeoutError is the request's total timeout, which runs from the request to the last byte read.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import select
import ssl
import time
import zlib
from collections import deque
from collections.abc import Mapping
from types import TracebackType
from typing import cast
from urllib.parse import quote, unquote, urlsplit

import httptools

_HIGH_WATER = 256 * 1024  # stop reading from an upstream socket while this much is received but not yet read
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE = re.compile(r"[\r\n\0]")
_URL_SAFE = "/%:@!$&'()*+,;=?~-._"  # left as they are in a request target; anything else is percent-encoded
_OWN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})  # the client writes these


class ConnectTimeout(TimeoutError):
    """No connection to the upstream within the connect timeout."""


class ConnectFailed(ConnectionError):
    """The connection could not be made: refused, unreachable, a name that does not resolve, a failed handshake."""


class BrokenExchange(ConnectionError):
    """The connection broke before the answer was complete, or what came back was not HTTP/1.1."""


class InvalidHeader(ValueError):
    """A header name or value that cannot be sent as it is (it would split or end the header block)."""


class HeaderBlock:
    """Request headers checked and encoded once, for all the requests that send them."""

    __slots__ = ("authorization", "data")

    def __init__(self, headers: Mapping[str, str]) -> None:
        self.data = _encode(headers)
        self.authorization = any(name.lower() == "authorization" for name in headers)

    def plus(self, name: str, value: str) -> HeaderBlock:
        """These headers and one more (checked now); a name given twice is sent twice."""
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise InvalidHeader(f"header {name[:40]!r} cannot be sent: invalid characters")
        if name.lower() in _OWN_HEADERS:
            return self
        block = HeaderBlock.__new__(HeaderBlock)
        block.data = b"%s%s: %s\r\n" % (self.data, name.encode(), value.encode())
        block.authorization = self.authorization or name.lower() == "authorization"
        return block


class _Origin:
    """Where to connect, and the request-line prefix and Host header of one URL (and its user:password, if any,
    as basic authorization)."""

    __slots__ = ("authorization", "host", "key", "port", "prefix", "ssl")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
        self.ssl = parts.scheme == "https"
        self.host = parts.hostname if parts.hostname.isascii() else parts.hostname.encode("idna").decode()
        self.port = parts.port or (443 if self.ssl else 80)
        self.key = (parts.scheme, self.host, self.port)
        default_port = self.port == (443 if self.ssl else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if default_port else f"{host}:{self.port}"
        target = quote(parts.path or "/", safe=_URL_SAFE)
        if parts.query:
            target += "?" + quote(parts.query, safe=_URL_SAFE)
        self.prefix = f"POST {target} HTTP/1.1\r\nhost: {authority}\r\n".encode()
        self.authorization = parts.username is not None
        if self.authorization:
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
            self.prefix += b"authorization: Basic " + base64.b64encode(pair) + b"\r\n"


class _Connection(asyncio.Protocol):
    """One upstream connection and the exchange on it: httptools feeds the answer in, a reader awaits it."""

    def __init__(self, client: HTTPClient, key: tuple[str, str, int]) -> None:
        self._client = client
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self._parser: httptools.HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._poll: select.poll | None = None  # asks the socket, without reading, whether it has bytes or EOF
        self._reset_exchange()

    def _reset_exchange(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._raw_headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.complete = False
        self.keep_alive = False
        self.error: BaseException | None = None
        self._until_close = False
        self._decoder: zlib._Decompress | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self.complete:  # bytes nobody asked for: this connection cannot be trusted any more
            self._fail(BrokenExchange("the upstream sent bytes outside an answer"))
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(BrokenExchange(f"malformed HTTP answer: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._client._forget(self)
        if self._parser is not None and not self.complete and self.error is None:
            if self.headers_done and self._until_close:
                self.complete = True  # an answer without length or chunks ends where the connection does
            elif exc is not None:
                self.error = BrokenExchange(f"connection broke: {type(exc).__name__}")
            else:
                self.error = BrokenExchange("the upstream closed the connection before the answer was complete")
        self._wake()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (never asked for): the real one follows
            self._raw_headers.clear()
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
        if self.error is not None:  # the exchange already failed (say, an unsupported encoding): nothing to keep
            return
        if self._decoder is not None:
            try:
                body = self._decoder.decompress(body)
            except zlib.error:
                self._fail(BrokenExchange("the answer's compressed body is corrupt"))
                return
        if body:
            self.chunks.append(body)
            self.buffered += len(body)
            if self.buffered > _HIGH_WATER and not self._paused and self.transport is not None:
                self._paused = True
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if self._parser is None or self.error is not None or not self.headers_done:
            return  # the exchange failed meanwhile, or this ends an interim (1xx) answer
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self.chunks.append(tail)
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._wake()

    # used by the client and the response

    def begin(self, request: bytes) -> None:
        """Send one request; its answer is parsed from here on."""
        assert self.transport is not None
        self._reset_exchange()
        self._parser = httptools.HttpResponseParser(self)
        self.transport.write(request)

    def take(self) -> bytes:
        """Everything received and not yet read."""
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self._paused and self.transport is not None:
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

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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


class Response:
    """An upstream answer: status and headers at once, the body read whole or piece by piece.

    Release it (or use it as an async context manager) when done: a completely read answer returns its connection
    to the pool, anything else closes the connection.
    """

    def __init__(self, client: HTTPClient, conn: _Connection, timer: asyncio.TimerHandle) -> None:
        self._client = client
        self._conn: _Connection | None = conn
        self._timer = timer
        self.status = conn.status
        self.headers: Mapping[str, str] = conn.headers
        self._line = b""  # what readline has received past the last line it returned

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

    async def read(self) -> bytes:
        """The whole body (the rest of it, if some was read already)."""
        parts = [self._line] if self._line else []
        self._line = b""
        while data := await self.readany():
            parts.append(data)
        return b"".join(parts)

    async def readline(self) -> bytes:
        """The next line with its b"\\n"; at the end the last unterminated line, then b""."""
        buf = self._line
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end >= 0:
                self._line = buf[end + 1 :]
                return buf[: end + 1]
            start = len(buf)
            data = await self.readany()
            if not data:
                self._line = b""
                return buf
            buf += data

    def release(self) -> None:
        """Done with this answer: its connection goes back to the pool when the body was read to its end."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._timer.cancel()
            self._client._done(conn, reuse=conn.reusable() and not self._line)

    def close(self) -> None:
        """Done with this answer before its end: its connection is closed."""
        conn, self._conn = self._conn, None
        if conn is not None:
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


class HTTPClient:
    """Keep-alive connections to any number of upstream origins, at most `max_connections` in use at once.

    A request beyond the limit waits for a connection to come free (first come, first served). An idle connection
    is reused unless the upstream closed it or it has been idle longer than `keepalive_s`.
    """

    def __init__(
        self, *, max_connections: int = 200, keepalive_s: float = 60.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._max = max(1, max_connections)
        self._keepalive_s = keepalive_s
        self._ssl_context = ssl_context
        self._origins: dict[str, _Origin] = {}
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._busy = 0
        self._queue: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def busy(self) -> int:
        """Connections in use by a request right now."""
        return self._busy

    @property
    def idle(self) -> int:
        """Open connections waiting for the next request."""
        return sum(len(conns) for conns in self._idle.values())

    async def post(
        self,
        url: str,
        body: bytes,
        headers: HeaderBlock,
        *,
        connect_timeout_s: float,
        total_timeout_s: float,
    ) -> Response:
        """POST `body` to `url`; returns once the status and headers arrived. Read the body from the response."""
        if self._closed:
            raise RuntimeError("the HTTP client is closed")
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = _Origin(url)
        if origin.authorization and headers.authorization:
            raise InvalidHeader("the URL's user:password and an authorization header cannot both be sent")
        request = b"%s%scontent-length: %d\r\n\r\n%s" % (origin.prefix, headers.data, len(body), body)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total_timeout_s
        await self._acquire(deadline)
        conn: _Connection | None = None
        try:
            conn = self._idle_connection(origin.key)
            if conn is None:
                conn = await self._connect(origin, min(connect_timeout_s, total_timeout_s))
            timer = loop.call_at(deadline, conn.timed_out)
            try:
                conn.begin(request)
                while not conn.headers_done:
                    if conn.error is not None:
                        raise conn.error
                    await conn.wait()
            except BaseException:
                timer.cancel()
                raise
        except BaseException:
            self._done(conn, reuse=False)
            raise
        return Response(self, conn, timer)

    async def close(self) -> None:
        """Close every idle connection; connections still in use close when their response is released."""
        self._closed = True
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._idle.clear()
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_exception(RuntimeError("the HTTP client is closed"))

    async def _acquire(self, deadline: float) -> None:
        """A place among the `max_connections` in use, waited for until `deadline` (the total timeout)."""
        if self._busy < self._max and not self._queue:
            self._busy += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._queue.append(waiter)
        try:
            async with asyncio.timeout_at(deadline):
                await waiter  # the releasing request counted this one in
        except TimeoutError:
            self._give_up(waiter)
            raise TimeoutError("no upstream connection came free within the total timeout") from None
        except BaseException:
            self._give_up(waiter)
            raise

    def _give_up(self, waiter: asyncio.Future[None]) -> None:
        """A request stops waiting for a place: a place already handed to it passes on."""
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            self._release_slot()  # handed a place, then stopped: pass it on
        else:
            with contextlib.suppress(ValueError):
                self._queue.remove(waiter)

    def _release_slot(self) -> None:
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next request
                return
        self._busy -= 1

    def _idle_connection(self, key: tuple[str, str, int]) -> _Connection | None:
        conns = self._idle.get(key)
        if not conns:
            return None
        stale_before = time.monotonic() - self._keepalive_s
        while conns:
            conn = conns.pop()
            if conn.reusable() and conn.idle_since >= stale_before and not conn.peer_spoke():
                return conn
            conn.abort()
        return None

    async def _connect(self, origin: _Origin, timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if origin.ssl:
            context = self._ssl_context
            if context is None:
                context = self._ssl_context = ssl.create_default_context()
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, origin.key),
                    origin.host,
                    origin.port,
                    ssl=context,
                    server_hostname=origin.host if context is not None else None,
                )
        except TimeoutError as exc:
            raise ConnectTimeout(f"no connection within {timeout_s:g}s") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS: ConnectionError, gaierror, ssl.SSLError
            raise ConnectFailed(f"{type(exc).__name__}: {exc.strerror or exc}") from exc
        return conn

    def _done(self, conn: _Connection | None, *, reuse: bool) -> None:
        if conn is not None:
            conn.finish()
            if reuse and not self._closed:
                conn.idle_since = time.monotonic()
                self._idle.setdefault(conn.key, []).append(conn)
            else:
                conn.abort()
        self._release_slot()

    def _forget(self, conn: _Connection) -> None:
        conns = self._idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)


def _encode(headers: Mapping[str, str]) -> bytes:
    lines = []
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise InvalidHeader(f"header {name[:40]!r} cannot be sent: invalid characters")
        if name.lower() not in _OWN_HEADERS:
            lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode()
