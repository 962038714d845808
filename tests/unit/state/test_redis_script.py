"""Scripts on connections of their own: loaded when missing, through a Redis restart, never mixing up replies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis
from redis import exceptions as rx
from redis.asyncio import ConnectionPool

from gateway.state.redis_script import ScriptConnections
from tests.support.processes import RedisServer
from tests.unit.state.lua_samples import ECHO, SAFETY_S, SLOW


@pytest.fixture
async def pool(own_redis_server: RedisServer) -> AsyncIterator[ConnectionPool]:
    made = ConnectionPool.from_url(own_redis_server.url, decode_responses=True, socket_timeout=2)
    yield made
    await made.aclose()


def flush_scripts(server: RedisServer) -> None:
    with redis.Redis.from_url(server.url, socket_timeout=2) as client:
        client.script_flush()


async def test_the_script_is_loaded_when_redis_does_not_know_it(
    pool: ConnectionPool, own_redis_server: RedisServer
) -> None:
    connections = ScriptConnections(pool, size=4, wait_s=1.0, retries=1)
    script = connections.script(ECHO)
    assert await script(["k"], [1]) == ["k", "1"]
    flush_scripts(own_redis_server)
    assert await script(["k2"], ["two"]) == ["k2", "two"]
    await connections.aclose()


async def test_a_restart_of_redis_is_absorbed_by_one_retry(pool: ConnectionPool, own_redis_server: RedisServer) -> None:
    connections = ScriptConnections(pool, size=4, wait_s=1.0, retries=1)
    script = connections.script(ECHO)
    assert await script(["k"], [1]) == ["k", "1"]
    own_redis_server.kill()
    own_redis_server.start()
    assert await asyncio.wait_for(script(["k"], [2]), SAFETY_S) == ["k", "2"]  # its connection was stale
    own_redis_server.kill()
    with pytest.raises((rx.ConnectionError, rx.TimeoutError)):
        await asyncio.wait_for(script(["k"], [3]), SAFETY_S)
    await connections.aclose()


async def test_a_cancelled_call_leaves_no_reply_for_the_next(pool: ConnectionPool) -> None:
    connections = ScriptConnections(pool, size=1, wait_s=1.0, retries=1)
    slow = connections.script(SLOW)
    call = asyncio.create_task(slow([], ["first"]))
    await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await asyncio.wait_for(slow([], ["second"]), SAFETY_S) == "second"
    await connections.aclose()


async def test_callers_beyond_the_pool_wait_then_fail_as_unreachable(pool: ConnectionPool) -> None:
    connections = ScriptConnections(pool, size=1, wait_s=0.01, retries=1)
    slow = connections.script(SLOW)
    first = asyncio.create_task(slow([], ["first"]))
    await asyncio.sleep(0)
    with pytest.raises(rx.ConnectionError, match="No connection available"):
        await slow([], ["second"])
    assert await asyncio.wait_for(first, SAFETY_S) == "first"
    await connections.aclose()
