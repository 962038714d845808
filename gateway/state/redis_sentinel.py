"""The pool of a Sentinel-managed primary: callers wait for a free connection, and new ones are opened one at a time.

redis-py's Sentinel pool raises when full and, like its other pools, opens a connection for every caller that finds
none free, all at once. A cold gateway hit by a burst therefore opened one connection per request to the primary;
under load some missed the connect timeout, and each such call followed the failure mode although Redis was up.
This pool is redis-py's Sentinel pool with its own blocking pool's wait (`max_connections`, `timeout`), and its
connections take the pool's `opening` lock to connect, waiting for it no longer than the pool's `timeout`; the store
opens them all at startup (`fill`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis import exceptions as rx
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedConnection, SentinelManagedSSLConnection


class PacedSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """`master_for(..., connection_pool_class=PacedSentinelPool, max_connections=N, timeout=S)`."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]  # unannotated
        self.opening = asyncio.Lock()

    async def fill(self) -> None:
        """Open every connection the pool may hold, one at a time, so that a first burst opens none."""
        taken: list[Any] = []
        try:
            for _ in range(self.max_connections):
                taken.append(await self.get_connection())  # type: ignore[no-untyped-call]  # unannotated
        finally:
            for connection in taken:
                await self.release(connection)


class PacedSentinelConnection(SentinelManagedConnection):
    """A connection to the primary Sentinel names, opened while no other connection of its pool is being opened."""

    async def connect(self) -> None:
        if self.is_connected:
            return
        pool = self.connection_pool
        try:
            async with asyncio.timeout(pool.timeout):
                await pool.opening.acquire()
        except TimeoutError as err:
            raise rx.ConnectionError(f"No connection available: none opened within {pool.timeout}s.") from err
        try:
            await super().connect()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        finally:
            pool.opening.release()


class PacedSentinelSSLConnection(PacedSentinelConnection, SentinelManagedSSLConnection):
    """The same over TLS."""
