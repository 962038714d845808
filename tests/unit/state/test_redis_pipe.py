"""Scripts pipelined on one shared connection: loaded when missing, replies matched in order, through outages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool, ConnectionPool

from gateway.state.redis_pipe import PipelinedScripts, for_pool, supports
from tests.support.processes import RedisServer, have_redis, start_redis
from tests.support.tls import self_signed
from tests.unit.state.lua_samples import ECHO, SAFETY_S, SLOW

COUNT = "return {redis.call('INCR', KEYS[1]), ARGV[1]}"


def make_pool(url: str) -> ConnectionPool:
    return ConnectionPool.from_url(url, decode_responses=True, socket_timeout=0.5, socket_connect_timeout=0.5)


@pytest.fixture
async def pool(own_redis_server: RedisServer) -> AsyncIterator[ConnectionPool]:
    made = make_pool(own_redis_server.url)
    yield made
    await made.aclose()


@pytest.fixture
async def scripts(pool: ConnectionPool) -> AsyncIterator[PipelinedScripts]:
    made = PipelinedScripts(pool.connection_kwargs, retries=1)
    yield made
    await made.aclose()


async def test_the_script_is_loaded_when_redis_does_not_know_it(
    scripts: PipelinedScripts, own_redis_server: RedisServer
) -> None:
    script = scripts.script(ECHO)
    assert await asyncio.wait_for(script(["k"], [1]), SAFETY_S) == ["k", "1"]
    with redis.Redis.from_url(own_redis_server.url, socket_timeout=2) as client:
        client.script_flush()
    assert await asyncio.wait_for(script(["k2"], ["two"]), SAFETY_S) == ["k2", "two"]


async def test_concurrent_callers_each_get_their_own_reply(scripts: PipelinedScripts) -> None:
    count = scripts.script(COUNT)
    calls = [count(["counter"], [f"caller-{i}"]) for i in range(200)]
    replies = await asyncio.wait_for(asyncio.gather(*calls), SAFETY_S)
    for i, (_, echoed) in enumerate(replies):
        assert echoed == f"caller-{i}"
    assert sorted(value for value, _ in replies) == list(range(1, 201))


async def test_a_cancelled_call_leaves_no_reply_for_the_next(scripts: PipelinedScripts) -> None:
    slow, echo = scripts.script(SLOW), scripts.script(ECHO)
    assert await asyncio.wait_for(echo(["k"], ["loaded"]), SAFETY_S) == ["k", "loaded"]
    assert await asyncio.wait_for(slow([], ["loaded"]), SAFETY_S) == "loaded"  # so the blocker runs at once
    blocker = asyncio.create_task(slow([], ["blocker"]))
    first = asyncio.create_task(echo(["k"], ["first"]))
    await asyncio.sleep(0.05)  # both are sent; Redis is busy with the blocker, so `first` is still waiting
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(echo(["k"], ["second"]), SAFETY_S) == ["k", "second"]
    assert await asyncio.wait_for(blocker, SAFETY_S) == "blocker"


async def test_a_restart_of_redis_is_absorbed_by_one_retry(
    scripts: PipelinedScripts, own_redis_server: RedisServer
) -> None:
    script = scripts.script(ECHO)
    assert await asyncio.wait_for(script(["k"], [1]), SAFETY_S) == ["k", "1"]
    own_redis_server.kill()
    own_redis_server.start()
    assert await asyncio.wait_for(script(["k"], [2]), SAFETY_S) == ["k", "2"]  # its connection was stale
    own_redis_server.kill()
    with pytest.raises(rx.ConnectionError):
        await asyncio.wait_for(script(["k"], [3]), SAFETY_S)


async def test_a_paused_redis_times_out_and_calls_succeed_after_it_resumes(
    scripts: PipelinedScripts, own_redis_server: RedisServer
) -> None:
    script = scripts.script(ECHO)
    assert await asyncio.wait_for(script(["k"], [1]), SAFETY_S) == ["k", "1"]
    own_redis_server.pause()
    try:
        with pytest.raises(rx.TimeoutError):
            await asyncio.wait_for(script(["k"], [2]), SAFETY_S)
    finally:
        own_redis_server.resume()
    assert await asyncio.wait_for(script(["k"], [3]), SAFETY_S) == ["k", "3"]
    assert await asyncio.wait_for(script(["k"], [4]), SAFETY_S) == ["k", "4"]


async def test_a_wrong_password_fails_authentication_without_revealing_it(pool: ConnectionPool) -> None:
    settings = dict(pool.connection_kwargs)
    settings["password"] = "not-the-pw-42"
    scripts = PipelinedScripts(settings, retries=1)
    try:
        with pytest.raises(rx.AuthenticationError) as raised:
            await asyncio.wait_for(scripts.script(ECHO)(["k"], [1]), SAFETY_S)
    finally:
        await scripts.aclose()
    assert isinstance(raised.value, rx.ConnectionError)
    assert "not-the-pw-42" not in str(raised.value)
    assert "not-the-pw-42" not in repr(raised.value)


async def test_the_database_of_the_url_is_used(own_redis_server: RedisServer) -> None:
    url_db3 = own_redis_server.url.removesuffix("/0") + "/3"
    db3_pool = make_pool(url_db3)
    scripts = PipelinedScripts(db3_pool.connection_kwargs, retries=1)
    try:
        setter = scripts.script("return redis.call('SET', KEYS[1], ARGV[1])")
        assert await asyncio.wait_for(setter(["where"], ["db3"]), SAFETY_S) == "OK"
    finally:
        await scripts.aclose()
        await db3_pool.aclose()
    with redis.Redis.from_url(url_db3, socket_timeout=2, decode_responses=True) as client:
        assert client.get("where") == "db3"
    with redis.Redis.from_url(own_redis_server.url, socket_timeout=2) as client:
        assert client.exists("where") == 0


async def test_a_script_error_raises_and_the_connection_stays_usable(
    scripts: PipelinedScripts, own_redis_server: RedisServer
) -> None:
    echo, broken = scripts.script(ECHO), scripts.script("return redis.call('NOSUCHCMD')")
    assert await asyncio.wait_for(echo(["k"], [1]), SAFETY_S) == ["k", "1"]
    with redis.Redis.from_url(own_redis_server.url, socket_timeout=2) as client:
        connections_before = client.info("stats")["total_connections_received"]
        with pytest.raises(rx.ResponseError):
            await asyncio.wait_for(broken([], []), SAFETY_S)
        assert await asyncio.wait_for(echo(["k"], [2]), SAFETY_S) == ["k", "2"]
        assert client.info("stats")["total_connections_received"] == connections_before  # no reconnect


@pytest.mark.parametrize(
    ("url", "decode", "expected"),
    [
        ("redis://:pw@127.0.0.1:6379/2", True, True),
        ("unix:///tmp/redis.sock?db=1", True, True),
        ("rediss://127.0.0.1:6379/0", True, True),
        ("redis://127.0.0.1:6379/0?protocol=3", True, False),
        ("redis://127.0.0.1:6379/0", False, False),
        ("unix:///tmp/redis.sock", False, False),
    ],
)
@pytest.mark.parametrize("pool_class", [ConnectionPool, BlockingConnectionPool])
async def test_supports_only_resp2_pools_that_decode(
    pool_class: type[ConnectionPool], url: str, decode: bool, expected: bool
) -> None:
    made = pool_class.from_url(url, decode_responses=decode)
    try:
        assert supports(made) is expected
    finally:
        await made.aclose()


@pytest.fixture
def tls_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if not have_redis():
        pytest.skip("redis-server is not installed")
    server = start_redis(password="s3cret-pw", tls=self_signed(tmp_path))
    yield server
    server.kill()


async def test_tls_redis_is_pipelined_with_the_pool_s_tls_settings(tls_redis_server: RedisServer) -> None:
    trusting = ConnectionPool.from_url(
        tls_redis_server.url, decode_responses=True, socket_timeout=0.5, **tls_redis_server.client_tls()
    )
    untrusting = ConnectionPool.from_url(tls_redis_server.url, decode_responses=True, socket_timeout=0.5)
    scripts, strangers = for_pool(trusting, retries=1), for_pool(untrusting, retries=1)
    assert scripts is not None and strangers is not None
    try:
        assert await asyncio.wait_for(scripts.script(ECHO)(["k"], ["tls"]), SAFETY_S) == ["k", "tls"]
        with pytest.raises(rx.ConnectionError):  # the certificate is not one the default trust store knows
            await asyncio.wait_for(strangers.script(ECHO)(["k"], ["no"]), SAFETY_S)
    finally:
        await scripts.aclose()
        await strangers.aclose()
        await trusting.aclose()
        await untrusting.aclose()
