"""Fixtures for the state stores: a real `redis-server` on a free loopback port, and each store under test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from gateway.settings import Settings, StateFailureMode
from gateway.state.base import StateStore
from gateway.state.factory import connect, create_state_store, parse_redis_url
from gateway.state.memory import MemoryStateStore
from gateway.state.redis import RedisStateStore
from gateway.state.sqlite import SqliteStateStore
from tests.support.processes import RedisServer, have_redis, start_redis
from tests.support.redis_cluster import RedisClusterNodes, have_redis_cli, start_cluster


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Shared by the behavioural suite, emptied before each test."""
    server = _started()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    """A real three-master Cluster, shared by the behavioural suite, emptied before each test."""
    if not have_redis_cli():
        pytest.skip("redis-server and redis-cli are not installed")
    cluster = start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A server of the test's own, protected by a password, that the test may kill and restart."""
    server = _started(password="s3cret-pw")
    yield server
    server.kill()


def _started(password: str | None = None) -> RedisServer:
    if not have_redis():
        pytest.skip("redis-server is not installed")
    return start_redis(password=password)


@pytest.fixture
def errors() -> list[str]:
    """The ops passed to `on_error`, as the app's state-store error counter would count them."""
    return []


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-split", "redis-cluster"])
async def store(request: pytest.FixtureRequest, errors: list[str]) -> AsyncIterator[StateStore]:
    """Each implementation in turn; `redis-split` runs Cluster mode's two-step admission against standalone Redis,
    `redis-cluster` against a real three-master Cluster, `sqlite` is what the workers of one machine share."""
    if request.param == "memory":
        s: StateStore = create_state_store(Settings(redis_url=None), on_error=errors.append)
        assert isinstance(s, MemoryStateStore)
    elif request.param == "sqlite":
        state_dir: Path = request.getfixturevalue("tmp_path")
        s = create_state_store(Settings(redis_url=None, state_dir=state_dir), on_error=errors.append)
        assert isinstance(s, SqliteStateStore)
    elif request.param == "redis-cluster":
        cluster: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        cluster.flush()
        s = create_state_store(Settings(redis_url=cluster.url), on_error=errors.append)
        assert isinstance(s, RedisStateStore)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        server.flush()
        if request.param == "redis":
            s = create_state_store(Settings(redis_url=server.url), on_error=errors.append)
            assert isinstance(s, RedisStateStore)
        else:
            client, _ = connect(parse_redis_url(server.url))
            s = RedisStateStore(client, on_error=errors.append, split_admission=True)
    await s.start()
    yield s
    await s.close()
    assert errors == []  # a healthy store never reports an error


RedisStoreFactory = Callable[[StateFailureMode], Awaitable[RedisStateStore]]


@pytest.fixture
async def redis_store_on_own_server(
    own_redis_server: RedisServer, errors: list[str]
) -> AsyncIterator[RedisStoreFactory]:
    """Builds started Redis stores on `own_redis_server` in a given failure mode; closes them after the test."""
    made: list[RedisStateStore] = []

    async def make(mode: StateFailureMode) -> RedisStateStore:
        settings = Settings(redis_url=own_redis_server.url, state_failure_mode=mode)
        s = create_state_store(settings, on_error=errors.append)
        assert isinstance(s, RedisStateStore)
        await s.start()
        made.append(s)
        return s

    yield make
    for s in made:
        await s.close()
