"""Calls to each Redis Cluster node: a bounded number at once, over connections opened one at a time.

redis-py's async cluster client opens a new connection for every command that finds none of a node's connections
free, with no bound on how many connect at once and no way to wait for one in use (its node pool raises when full;
its client takes no connection class to pace connects). A cold gateway hit by a burst therefore opened one connection
per request, a hundred at once; under load some missed the connect timeout, and each such admission followed the
failure mode (open: admitted beyond its quota) although the node was up. Here each node has `size` lanes: a call
takes one, on a connection already open when one is free, else it opens one more while no other is being opened;
otherwise it waits, and a wait longer than `wait_s` fails the call as an unreachable node does (`ConnectionError`),
which the store turns into its failure mode.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis import exceptions as rx
from redis.asyncio.cluster import ClusterNode, RedisCluster

LANES_PER_NODE = 32
LANE_WAIT_S = 1.0


class NodeLanes:
    """One node's lanes; `opened` counts the connections its calls have opened (and so can reuse)."""

    def __init__(self, *, size: int, wait_s: float) -> None:
        self._size = size
        self._wait_s = wait_s
        self._running = 0
        self._opened = 0
        self._opening = False
        self._waiting = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def lane(self) -> AsyncIterator[None]:
        if self._running < self._opened:  # a connection is free: the common case takes no lock
            self._running += 1
            opens = False
        else:
            opens = await self._wait()
        done = False
        try:
            yield
            done = True
        finally:
            self._running -= 1
            if opens:
                self._opening = False
                self._opened += done  # a connect that failed leaves the next caller to try again, one at a time
            if self._waiting:
                async with self._changed:
                    self._changed.notify_all()

    async def _wait(self) -> bool:
        self._waiting += 1
        try:
            async with self._changed:
                async with asyncio.timeout(self._wait_s):
                    await self._changed.wait_for(self._may_run)
        except TimeoutError as err:
            raise rx.ConnectionError(
                f"No connection available: {self._running} commands in flight, none done within {self._wait_s}s."
            ) from err
        finally:
            self._waiting -= 1
        self._running += 1
        opens = self._running > self._opened
        self._opening = self._opening or opens
        return opens

    def _may_run(self) -> bool:
        return self._running < self._opened or (not self._opening and self._running < self._size)


class ClusterLanes:
    """The lanes of every node of one Cluster client, renewed when the client replaces a node (its pool is new)."""

    def __init__(self, *, size: int = LANES_PER_NODE, wait_s: float = LANE_WAIT_S) -> None:
        self._size = size
        self._wait_s = wait_s
        self._nodes: dict[str, tuple[int, NodeLanes]] = {}

    def of(self, node: ClusterNode) -> NodeLanes:
        known = self._nodes.get(node.name)
        if known is not None and known[0] == id(node):
            return known[1]
        lanes = NodeLanes(size=self._size, wait_s=self._wait_s)
        self._nodes[node.name] = (id(node), lanes)
        return lanes

    async def warm(self, client: RedisCluster) -> None:
        """Open one connection to every primary, so that a first burst finds each node's first connection open."""
        await client.initialize()
        for node in client.get_primaries():
            async with self.of(node).lane():
                await node.execute_command("PING")
