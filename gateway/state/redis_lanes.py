"""Commands to each Redis Cluster node: a bounded number at once, on connections opened one at a time.

redis-py's async cluster client opens a new connection for every command that finds none of a node's connections
free, with no bound on how many connect at once and no way to wait for one in use (its node pool raises when full;
its client takes no connection class to pace connects). A cold gateway hit by a burst therefore opened one connection
per request, a hundred at once; under load some missed the connect timeout, and each such admission followed the
failure mode (open: admitted beyond its quota) although the node was up. Worse, redis-py answers one failed command
by dropping every idle connection of that node, so the next burst reconnected all at once again.

Here every lane's connection is opened at startup (`warm`), one at a time. A command takes one of its node's `size`
lanes, runs on one of the node's own connections (taken from and given back to redis-py's node pool), and connects
that connection, when it is not connected (after a Redis restart, say), only while no other command of this client
connects to the node. Waiting for a lane and for the turn to connect share one bound, `wait_s`; past it the command
fails as an unreachable node does (`ConnectionError`), which the store turns into its failure mode.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis import exceptions as rx
from redis.asyncio.cluster import ClusterNode, RedisCluster

# A node runs one command at a time: 8 in flight per process keep it busy at up to 8x its service time in round trip,
# and keep a burst after a reconnect (connections are opened one at a time) short.
LANES_PER_NODE = 8
LANE_WAIT_S = 1.0


class LaneWaitError(rx.ConnectionError):
    """No lane, or no turn to connect, within the wait bound: an outage to the store, not a cue to retry elsewhere."""


class NodeLanes:
    """One node's lanes and its turn to connect."""

    def __init__(self, *, size: int, wait_s: float) -> None:
        self._wait_s = wait_s
        self._lanes = asyncio.Semaphore(size)
        self._connecting = asyncio.Lock()

    async def execute(self, node: ClusterNode, *args: Any) -> Any:
        """`node.execute_command(*args)`, in a lane, on a connection connected in turn."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        if self._lanes.locked():
            await self._acquire(self._lanes, deadline, "commands in flight")
        else:
            await self._lanes.acquire()  # a free lane: no wait, no timer
        try:
            connection = node.acquire_connection()
            try:
                await node.disconnect_if_needed(connection)
                if not connection.is_connected:
                    await self._acquire(self._connecting, deadline, "another connection being opened")
                    try:
                        await connection.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                    finally:
                        self._connecting.release()
                await connection.send_packed_command(connection.pack_command(*args))
                return await node.parse_response(connection, args[0])
            finally:
                node.release(connection)
        finally:
            self._lanes.release()

    async def _acquire(self, gate: asyncio.Semaphore | asyncio.Lock, deadline: float, what: str) -> None:
        try:
            async with asyncio.timeout_at(deadline):
                await gate.acquire()
        except TimeoutError as err:
            raise LaneWaitError(f"No connection available within {self._wait_s}s ({what}).") from err


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
        """Open every lane's connection to every primary, one at a time, so that a first burst opens none."""
        await client.initialize()
        for node in client.get_primaries():
            connections = [node.acquire_connection() for _ in range(self._size)]
            try:
                for connection in connections:
                    if not connection.is_connected:
                        await connection.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            finally:
                for connection in connections:
                    node.release(connection)
