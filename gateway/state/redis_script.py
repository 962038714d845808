"""Lua scripts run on standalone Redis over connections of their own: the per-request commands, with one layer."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

import hiredis
from redis import exceptions as rx
from redis.asyncio.connection import AbstractConnection, ConnectionPool


class ScriptConnections:
    """`EVALSHA` straight on a connection, loading a script when Redis lacks it; one retry on a broken connection.

    The client's own command path (a pool lock and condition, a timeout per checkout, retry and observability hooks,
    an argument packer in Python) costs more CPU than the round trip itself for commands sent on every request.
    Connections are made like the pool's (same address, credentials, TLS and connect timeout); at most `size` are
    open, and a caller beyond that waits up to `wait_s` for one, then fails as the client would, with a
    `ConnectionError`. The pool's socket timeout bounds each command's whole round trip here (one timer), instead
    of being left to the connection, which runs every write in a task of its own to time it.
    """

    def __init__(self, pool: ConnectionPool, *, size: int, wait_s: float, retries: int) -> None:
        self._pool = pool
        self._kwargs = {**pool.connection_kwargs, "socket_timeout": None}
        self._timeout_s: float | None = pool.connection_kwargs.get("socket_timeout")
        self._wait_s = wait_s
        self._retries = retries
        self._slots = asyncio.Semaphore(size)
        self._idle: list[AbstractConnection] = []
        self._open: set[AbstractConnection] = set()

    def script(self, text: str) -> LeanScript:
        return LeanScript(self, text)

    async def run(self, sha: str, text: str, operands: tuple[int | str, ...]) -> Any:
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), self._wait_s)
            except TimeoutError as err:
                raise rx.ConnectionError("No connection available.") from err
        else:
            await self._slots.acquire()
        conn = self._idle.pop() if self._idle else self._connection()
        try:
            attempt = 0
            while True:
                try:
                    try:
                        async with asyncio.timeout(self._timeout_s):
                            return await _evalsha(conn, sha, text, operands)
                    except TimeoutError as err:  # the connection dropped itself when the timer cancelled it
                        raise rx.TimeoutError("Timeout reading from Redis") from err
                except (rx.ConnectionError, rx.TimeoutError):
                    # A connection left stale by a Redis restart is replaced once, as the client's retry does.
                    if attempt >= self._retries:
                        raise
                    attempt += 1
                    await conn.disconnect()
        finally:
            self._idle.append(conn)
            self._slots.release()

    async def aclose(self) -> None:
        for conn in self._open:
            await conn.disconnect()
        self._open.clear()
        self._idle.clear()

    def _connection(self) -> AbstractConnection:
        conn: AbstractConnection = self._pool.connection_class(**self._kwargs)
        self._open.add(conn)
        return conn


class ScriptRunner(Protocol):
    """Runs a script by its SHA1, sending its text when Redis does not know it."""

    async def run(self, sha: str, text: str, operands: tuple[int | str, ...]) -> Any: ...


class LeanScript:
    """One script, called like redis-py's `AsyncScript`: `await script(keys, args)`."""

    def __init__(self, runner: ScriptRunner, text: str) -> None:
        self._runner = runner
        self._text = text
        self._sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[str], args: Sequence[int | str]) -> Any:
        return await self._runner.run(self._sha, self._text, (len(keys), *keys, *args))


async def _evalsha(conn: AbstractConnection, sha: str, text: str, operands: tuple[int | str, ...]) -> Any:
    # Both calls drop the connection themselves on any error or cancellation, so it never keeps a stray reply.
    await conn.send_packed_command(pack("EVALSHA", sha, *operands))
    try:
        return await conn.read_response()
    except rx.NoScriptError:
        await conn.send_packed_command(pack("EVAL", text, *operands), check_health=False)
        return await conn.read_response()


def pack(*parts: int | str) -> bytes:
    """hiredis packs in C what the connection's packer builds argument by argument: the same bytes for UTF-8 text
    and integers, the only arguments these scripts take."""
    packed: bytes = hiredis.pack_command(parts)  # type: ignore[arg-type]  # its stub declares a one-element tuple
    return packed
