"""The upstream HTTP/1.1 client: pooled keep-alive POSTs, a response (`http1_response`) read whole or as it arrives.

Every request to an OpenAI-compatible upstream goes through here, so it does only what that needs: POST a body,
read the status, the headers and the body (content-length, chunked, or up to the close), keep the connection for
the next request, and fail in a way failover can classify. Parsing is httptools' (llhttp, in C); connections are
the event loop's own transports, TLS included, direct or through an HTTP proxy (`upstream_proxy`). Per request it
costs a fraction of a general-purpose client. The bytes on the wire are `http1_head`'s (requests) and `http1_wire`'s
(answers).

Failures, all of them exceptions the caller classifies:

    TimeoutError
     └── ConnectTimeout   no connection within the connect timeout
    ConnectionError
     ├── ConnectFailed    no connection: refused, unreachable, DNS, TLS handshake, a proxy refusing the tunnel
     └── BrokenExchange   the upstream closed or reset the connection, or answered with malformed HTTP
          └── AnswerRefused   an answer past a limit (head, decoded body, a stream's line), or a switch of protocols
    ValueError
     └── InvalidHeader    a header name or value that cannot be sent (CR, LF, NUL: header injection)

A plain TimeoutError is the request's total timeout, which runs from the request to the last byte read.

What an upstream sends is bounded in bytes, so that a broken or hostile one cannot exhaust memory: the head (status
line, header lines and count: `http1_wire`), a body read whole (`UpstreamLimits.body_bytes`, after decoding), and a
line read by `readline` or an event of a stream (`UpstreamLimits.event_bytes`, checked by the stream's reader). A
stream read piece by piece is bounded in length only by the total timeout; a compressed body is inflated no faster
than it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping

from gateway.providers.http1_head import HeaderBlock, InvalidHeader, Origin
from gateway.providers.http1_response import Response, UpstreamLimits
from gateway.providers.http1_wire import (
    AnswerRefused,
    BodySink,
    BrokenExchange,
    ConnectFailed,
    Connection,
    ConnectTimeout,
)
from gateway.providers.upstream_proxy import UpstreamProxy

__all__ = [
    "AnswerRefused",
    "BodySink",
    "BrokenExchange",
    "ConnectFailed",
    "ConnectTimeout",
    "HTTPClient",
    "HeaderBlock",
    "InvalidHeader",
]

_DEFAULT_LIMITS = UpstreamLimits()


class HTTPClient:
    """Keep-alive connections to any number of upstream origins, at most `max_connections` in use at once.

    A request beyond the limit waits for a connection to come free (first come, first served). An idle connection
    is reused unless the upstream closed it or it has been idle longer than `keepalive_s`.
    """

    def __init__(
        self,
        *,
        max_connections: int = 200,
        keepalive_s: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
        proxies: Mapping[str, UpstreamProxy] | None = None,
        limits: UpstreamLimits = _DEFAULT_LIMITS,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        """`proxies`: the proxy for "http" and for "https" upstreams, if any (each with its own NO_PROXY list);
        `on_wait(seconds)`: told how long each request that found every connection in use waited for one."""
        self.limits = limits
        self._max = max(1, max_connections)
        self._proxies: Mapping[str, UpstreamProxy] = proxies or {}
        self._keepalive_s = keepalive_s
        self._ssl_context = ssl_context
        self._origins: dict[str, Origin] = {}
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._busy = 0
        self._queue: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self._on_wait = on_wait

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
        origin = self._origin(url, headers)
        head = b"%s%scontent-length: %d\r\n\r\n" % (origin.prefix, headers.data, len(body))
        return await self._exchange(origin, head, body, connect_timeout_s, total_timeout_s)

    async def get(
        self, url: str, headers: HeaderBlock, *, connect_timeout_s: float, total_timeout_s: float
    ) -> Response:
        """GET `url` (an image task's state, a generated image) under the same limits as a POST's answer."""
        origin = self._origin(url, headers, keep=False)  # a task's or an image's URL is asked once: not kept
        head = b"GET%s%s\r\n" % (origin.prefix[4:], headers.data)  # the prefix's `POST` becomes `GET`
        return await self._exchange(origin, head, b"", connect_timeout_s, total_timeout_s)

    def _origin(self, url: str, headers: HeaderBlock, *, keep: bool = True) -> Origin:
        if self._closed:
            raise RuntimeError("the HTTP client is closed")
        origin = self._origins.get(url)
        if origin is None:
            origin = Origin(url, self._proxies)
            if keep:
                self._origins[url] = origin
        if origin.authorization and headers.authorization:
            raise InvalidHeader("the URL's user:password and an authorization header cannot both be sent")
        return origin

    async def _exchange(
        self, origin: Origin, head: bytes, body: bytes, connect_timeout_s: float, total_timeout_s: float
    ) -> Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + total_timeout_s
        await self._acquire(deadline)
        conn: Connection | None = None
        try:
            conn = self._idle_connection(origin.key)
            if conn is None:
                conn = await self._connect(origin, min(connect_timeout_s, total_timeout_s))
            timer = loop.call_at(deadline, conn.timed_out)
            try:
                conn.begin(head, body)
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
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._queue.append(waiter)
        began = loop.time()
        try:
            async with asyncio.timeout_at(deadline):
                await waiter  # the releasing request counted this one in
        except TimeoutError:
            self._give_up(waiter)
            raise TimeoutError("no upstream connection came free within the total timeout") from None
        except BaseException:
            self._give_up(waiter)
            raise
        finally:
            if self._on_wait is not None:
                self._on_wait(loop.time() - began)

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

    def _idle_connection(self, key: tuple[str, str, int]) -> Connection | None:
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

    async def _connect(self, origin: Origin, timeout_s: float) -> Connection:
        loop = asyncio.get_running_loop()
        context: ssl.SSLContext | None = None
        if origin.ssl:
            context = self._ssl_context
            if context is None:
                context = self._ssl_context = ssl.create_default_context()
        via = origin.via
        conn: Connection | None = None
        try:
            async with asyncio.timeout(timeout_s):
                if via is None:
                    _, conn = await loop.create_connection(
                        lambda: Connection(origin.key, self._forget),
                        origin.host,
                        origin.port,
                        ssl=context,
                        server_hostname=origin.host if context is not None else None,
                    )
                else:
                    _, conn = await loop.create_connection(
                        lambda: Connection(origin.key, self._forget), via.host, via.port
                    )
                    if context is not None:
                        await self._tunnel(conn, origin, via, context)
        except TimeoutError as exc:
            if conn is not None:
                conn.abort()
            raise ConnectTimeout(f"no connection within {timeout_s:g}s") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS: ConnectionError, gaierror, ssl.SSLError
            if conn is not None:
                conn.abort()
            if isinstance(exc, ConnectFailed):
                raise
            raise ConnectFailed(f"{type(exc).__name__}: {exc.strerror or exc}") from exc
        return conn

    @staticmethod
    async def _tunnel(conn: Connection, origin: Origin, via: UpstreamProxy, context: ssl.SSLContext) -> None:
        """Ask the proxy for a tunnel to the origin, then speak TLS to the origin through it."""
        conn.begin(via.connect_request(origin.host, origin.port))
        while not conn.headers_done:
            if conn.error is not None:
                raise ConnectFailed(f"the proxy broke the tunnel request: {conn.error}")
            await conn.wait()
        conn.finish()
        if not 200 <= conn.status < 300:
            raise ConnectFailed(f"the proxy refused a tunnel to {origin.host}:{origin.port} with {conn.status}")
        assert conn.transport is not None
        transport = await asyncio.get_running_loop().start_tls(
            conn.transport, conn, context, server_hostname=origin.host
        )
        if transport is None:
            raise ConnectFailed("the connection to the proxy closed during the TLS handshake")
        conn.transport = transport

    def _done(self, conn: Connection | None, *, reuse: bool) -> None:
        if conn is not None:
            conn.finish()
            if reuse and not self._closed:
                conn.idle_since = time.monotonic()
                self._idle.setdefault(conn.key, []).append(conn)
            else:
                conn.abort()
        self._release_slot()

    def _forget(self, conn: Connection) -> None:
        conns = self._idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
