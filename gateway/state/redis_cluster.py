"""Lua scripts on Redis Cluster that keep working while their slot migrates: ASK answered on the connection it came on.

redis-py's cluster client (8.1) follows an ASK redirect by sending ASKING as a command of its own, on whichever pooled
connection to the target is free first, and then the redirected command on the next one. With more than one idle
connection to that node (any concurrent load) the two land on different connections: the target, which only serves
an importing slot after ASKING on the same connection, answers MOVED back to the source, which answers ASK again,
until the client gives up ("TTL exhausted") and every admission of a migrating slot fails as an outage. Here the
script goes to the slot's node first; an ASK is answered by ASKING and the script written together on one connection;
anything else (MOVED, NOSCRIPT, a node down) is left to the client, which refreshes its slot map and retries.
Commands to the slot's node run in one of its lanes (redis_lanes.py), so that a burst waits for connections instead of
opening one per call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rx
from redis.asyncio.cluster import ClusterNode, PipelineCommand, RedisCluster
from redis.commands.core import AsyncScript

from gateway.state.redis_lanes import ClusterLanes, LaneWaitError


class ClusterScript:
    """One script on a Cluster, called like redis-py's `AsyncScript`: `await script(keys, args)`."""

    def __init__(self, client: RedisCluster, text: str, lanes: ClusterLanes) -> None:
        self._client = client
        self._lanes = lanes
        self._fallback = AsyncScript(client, text)
        self._sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, keys: Sequence[str], args: Sequence[int | float | str]) -> Any:
        operands = (self._sha, len(keys), *keys, *args)
        await self._client.initialize()  # loads the slot map on first use; a no-op afterwards
        node = self._client.get_node_from_key(keys[0])
        if node is None:
            return await self._fallback(keys, args)
        lanes = self._lanes.of(node)
        try:
            try:
                return await lanes.execute(node, "EVALSHA", *operands)
            except rx.NoScriptError:
                # Loaded on this node, in a lane: the client's own path would load it on every primary at once,
                # opening connections to them outside their lanes while a cold burst meets a node new to the script.
                await lanes.execute(node, "SCRIPT", "LOAD", self._fallback.script)
                return await lanes.execute(node, "EVALSHA", *operands)
        except rx.AskError as ask:
            return await self._asking(ask, operands, keys, args)
        except LaneWaitError:
            raise  # the client's own path would open the connections the lanes are there to pace
        except (rx.MovedError, rx.NoScriptError, rx.TryAgainError, rx.ClusterDownError, rx.ConnectionError):
            # Redis ran nothing: the client's own path refreshes the slot map, loads the script, retries.
            return await self._fallback(keys, args)

    async def _asking(
        self, ask: rx.AskError, operands: tuple[Any, ...], keys: Sequence[str], args: Sequence[int | float | str]
    ) -> Any:
        target: ClusterNode | None = self._client.get_node(host=ask.host, port=ask.port)
        if target is None:
            return await self._fallback(keys, args)
        commands = [PipelineCommand(0, "ASKING"), PipelineCommand(1, "EVALSHA", *operands)]
        await target.execute_pipeline(commands)
        result = commands[1].result
        if isinstance(result, rx.NoScriptError):
            await target.execute_command("SCRIPT", "LOAD", self._fallback.script)
            commands = [PipelineCommand(0, "ASKING"), PipelineCommand(1, "EVALSHA", *operands)]
            await target.execute_pipeline(commands)
            result = commands[1].result
        if isinstance(result, Exception):
            raise result
        return result
