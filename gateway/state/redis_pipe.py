"""Lua scripts pipelined on one Redis connection: the per-request commands, written together and answered in order.

Redis answers the commands of one connection in the order they came, so concurrent requests can share it: each
call queues its command and a future, every command queued during one turn of the event loop goes out in a single
write, and replies are matched to futures in order as hiredis parses them. Per command there is no pool, no lock
and no write of its own; a caller that gives up (its client left) simply leaves its reply to be dropped.

Used for standalone Redis over TCP (TLS included) or a unix socket when the URL asks for nothing beyond address,
credentials, database and TLS settings; anything else (RESP3, client names, ...) keeps
`redis_script.ScriptConnections`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Mapping
from typing import Any, cast

import hiredis
from redis import exceptions as rx
from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection, UnixDomainSocketConnection

from gateway.state.redis_script import LeanScript, pack

# The connection settings this path applies, and redis-py's own bookkeeping that changes nothing on a RESP2
# connection; a pool with any other setting is left to redis-py.
SUPPORTED_SETTINGS = frozenset(
    {"host", "port", "path", "db", "username", "password", "socket_timeout", "socket_connect_timeout", "retry",
     "decode_responses", "himport_registry", "maint_notifications_config", "maint_notifications_pool_handler",
     "orig_host_address", "orig_socket_connect_timeout", "orig_socket_timeout",
     "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs", "ssl_include_verify_flags", "ssl_exclude_verify_flags",
     "ssl_ca_certs", "ssl_ca_data", "ssl_ca_path", "ssl_check_hostname", "ssl_min_version", "ssl_ciphers",
     "ssl_password"}
)
# Error replies redis-py raises as their own classes; the outage handling tells them apart.
_ERRORS: Mapping[str, type[rx.RedisError]] = {
    "NOSCRIPT": rx.NoScriptError,
    "READONLY": rx.ReadOnlyError,
    "OOM": rx.OutOfMemoryError,
    "LOADING": rx.BusyLoadingError,
    "NOAUTH": rx.AuthenticationError,
    "WRONGPASS": rx.AuthenticationError,
    "NOPERM": rx.NoPermissionError,
}


def supports(pool: ConnectionPool) -> bool:
    """Whether a pool connects over TCP, TLS or a unix socket with only settings this path applies."""
    settings = pool.connection_kwargs
    return (
        pool.connection_class in (Connection, SSLConnection, UnixDomainSocketConnection)
        and settings.keys() <= SUPPORTED_SETTINGS
        and bool(settings.get("decode_responses"))
    )


def for_pool(pool: ConnectionPool, *, retries: int) -> PipelinedScripts | None:
    """The pipelined path for a pool's Redis, with the pool's TLS settings; None when `supports` says no."""
    if not supports(pool):
        return None
    context = None
    if pool.connection_class is SSLConnection:  # the TLS context exactly as redis-py's connections build it
        context = SSLConnection(**pool.connection_kwargs).ssl_context.get()
    return PipelinedScripts(pool.connection_kwargs, retries=retries, ssl_context=context)


def _reply_error(reply: hiredis.ReplyError) -> rx.RedisError:
    message = str(reply)
    return _ERRORS.get(message.split(" ", 1)[0], rx.ResponseError)(message)


class _Pipe(asyncio.Protocol):
    """One Redis connection: commands written once per loop turn, replies handed out in order."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(encoding="utf-8")
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._flush_soon = False
        self.error: rx.RedisError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def send(self, command: bytes) -> asyncio.Future[Any]:
        if self.error is not None:
            raise self.error
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        self._waiting.append(reply)
        self._out.append(command)
        if not self._flush_soon:
            self._flush_soon = True
            loop.call_soon(self._flush)
        return reply

    def _flush(self) -> None:
        self._flush_soon = False
        if self._out and self._transport is not None and self.error is None:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as err:
                self.fail(rx.ConnectionError(f"Protocol error from Redis: {err}"))
                return
            if reply is False:
                return
            if not self._waiting:
                self.fail(rx.ConnectionError("Redis sent a reply nobody asked for"))
                return
            waiter = self._waiting.popleft()
            if waiter.done():  # its caller gave up; the reply is dropped, the next ones still match
                continue
            if isinstance(reply, hiredis.ReplyError):
                waiter.set_exception(_reply_error(reply))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(rx.ConnectionError("Connection closed by server."))

    def fail(self, error: rx.RedisError) -> None:
        """Every command still waiting fails with `error`; the connection is dropped."""
        if self.error is None:
            self.error = error
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_exception(error)
        if self._transport is not None:
            self._transport.abort()


class PipelinedScripts:
    """`EVALSHA` on one shared connection, loading a script when Redis lacks it; one retry on a broken connection.

    A command without its reply within the socket timeout, or a broken connection, fails every command waiting on
    that connection (their replies could no longer be matched); the next call connects again.
    """

    def __init__(
        self, settings: Mapping[str, Any], *, retries: int, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._settings = settings
        self._ssl_context = ssl_context
        self._timeout_s: float | None = settings.get("socket_timeout")
        self._connect_timeout_s: float | None = settings.get("socket_connect_timeout")
        self._retries = retries
        self._pipe: _Pipe | None = None
        self._connecting = asyncio.Lock()

    def script(self, text: str) -> LeanScript:
        return LeanScript(self, text)

    async def run(self, sha: str, text: str, operands: tuple[int | str, ...]) -> Any:
        attempt = 0
        while True:
            try:
                return await self._once(sha, text, operands)
            except (rx.ConnectionError, rx.TimeoutError):
                if attempt >= self._retries:  # a connection left broken by a restart is replaced once
                    raise
                attempt += 1

    async def _once(self, sha: str, text: str, operands: tuple[int | str, ...]) -> Any:
        pipe = self._pipe
        if pipe is None or pipe.error is not None:
            pipe = await self._connect()
        try:
            async with asyncio.timeout(self._timeout_s):
                try:
                    return await pipe.send(pack("EVALSHA", sha, *operands))
                except rx.NoScriptError:
                    return await pipe.send(pack("EVAL", text, *operands))
        except TimeoutError as err:
            failure = rx.TimeoutError("Timeout reading from Redis")
            pipe.fail(failure)
            raise failure from err

    async def _connect(self) -> _Pipe:
        async with self._connecting:
            pipe = self._pipe
            if pipe is not None and pipe.error is None:
                return pipe  # another caller connected meanwhile
            pipe = self._pipe = await self._open()
            return pipe

    async def _open(self) -> _Pipe:
        loop = asyncio.get_running_loop()
        s = self._settings
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if s.get("path"):
                    _, pipe = await loop.create_unix_connection(_Pipe, s["path"])
                else:
                    _, pipe = await loop.create_connection(
                        _Pipe, s.get("host", "localhost"), s.get("port", 6379), ssl=self._ssl_context
                    )
        except TimeoutError as err:
            raise rx.TimeoutError("Timeout connecting to server") from err
        except OSError as err:  # refused, unreachable, DNS, a failed TLS handshake
            raise rx.ConnectionError(f"Error connecting to Redis: {type(err).__name__}") from err
        handshake = []
        if s.get("password"):
            auth = ("AUTH", s["username"], s["password"]) if s.get("username") else ("AUTH", s["password"])
            handshake.append(pipe.send(pack(*auth)))
        if s.get("db"):
            handshake.append(pipe.send(pack("SELECT", int(s["db"]))))
        try:
            async with asyncio.timeout(self._timeout_s):
                for reply in handshake:
                    await reply
        except TimeoutError as err:
            pipe.fail(rx.TimeoutError("Timeout reading from Redis"))
            _settled(handshake)
            raise rx.TimeoutError("Timeout reading from Redis") from err
        except rx.RedisError as err:
            pipe.fail(rx.ConnectionError("connection setup failed"))
            _settled(handshake)
            if isinstance(err, rx.ResponseError) and not isinstance(err, rx.AuthenticationError):
                raise rx.ConnectionError(f"Redis refused the connection setup: {err}") from err
            raise
        return pipe

    async def aclose(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.fail(rx.ConnectionError("the state store is closed"))


def _settled(replies: list[asyncio.Future[Any]]) -> None:
    """Mark the failures of setup replies nobody will await as seen (asyncio would log each as never retrieved)."""
    for reply in replies:
        if reply.done() and not reply.cancelled():
            reply.exception()
