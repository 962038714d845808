"""Which store a process gets, and how Redis URLs of each kind (standalone, Sentinel, Cluster) are understood."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from gateway.settings import Settings
from gateway.state.factory import RedisTarget, connect, create_state_store, parse_redis_url
from gateway.state.memory import MemoryStateStore
from gateway.state.redis import RedisStateStore


async def test_no_redis_url_means_the_in_process_store() -> None:
    assert isinstance(create_state_store(Settings(redis_url=None), on_error=print), MemoryStateStore)


async def test_a_redis_url_means_the_redis_store_and_connects_lazily() -> None:
    store = create_state_store(Settings(redis_url="redis://127.0.0.1:1/0"), on_error=print)
    assert isinstance(store, RedisStateStore)
    await store.close()


def test_standalone_urls_pass_through_and_display_without_credentials() -> None:
    target = parse_redis_url("rediss://user:p%40ss@cache.internal:6380/2?ssl_cert_reqs=none")
    assert target == RedisTarget(
        "standalone",
        "rediss://cache.internal:6380/2",
        url="rediss://user:p%40ss@cache.internal:6380/2?ssl_cert_reqs=none",
        password="p@ss",
    )
    assert parse_redis_url("unix:///run/redis.sock?db=1").display == "unix:///run/redis.sock"


def test_sentinel_url() -> None:
    target = parse_redis_url("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380,[::1]/mymaster/3")
    assert target == RedisTarget(
        "sentinel",
        "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380,[::1]:26379/mymaster/3",
        nodes=(("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26379)),
        service_name="mymaster",
        db=3,
        password="s3cret",
    )
    plain = parse_redis_url("redis+sentinel://s1,s2/cache")
    assert (plain.nodes, plain.service_name, plain.db, plain.password) == (
        (("s1", 26379), ("s2", 26379)),
        "cache",
        0,
        None,
    )


@pytest.mark.parametrize(
    "url",
    ["redis+cluster://:pw@n1:7000,n2:7001", "redis://:pw@n1:7000,n2:7001?cluster=true"],
)
def test_cluster_urls(url: str) -> None:
    target = parse_redis_url(url)
    assert (target.kind, target.nodes, target.password, target.display) == (
        "cluster",
        (("n1", 7000), ("n2", 7001)),
        "pw",
        "redis+cluster://n1:7000,n2:7001",
    )
    assert parse_redis_url("rediss+cluster://u:pw@n1").ssl


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("memcached://x", "unsupported scheme"),
        ("redis+sentinel://s1:26379", "service_name"),
        ("redis+sentinel://s1:26379/a/1/extra", "service_name"),
        ("redis+cluster://n1:7000?db=2", "unsupported options"),
        ("unix:///run/redis.sock?cluster=true", "unix socket"),
    ],
)
def test_bad_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_redis_url(url)


async def test_each_kind_gets_its_client_without_connecting() -> None:
    sentinel, companions = connect(parse_redis_url("redis+sentinel://127.0.0.1:1/mymaster"))
    assert isinstance(sentinel, Redis) and len(companions) == 1
    cluster, none = connect(parse_redis_url("redis+cluster://127.0.0.1:1"))
    assert isinstance(cluster, RedisCluster) and none == []
    for client in (sentinel, *companions):
        await client.aclose()
    await cluster.aclose()
