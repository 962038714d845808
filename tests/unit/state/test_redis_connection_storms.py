"""A cold gateway hit by a burst on Redis Cluster or Sentinel admits exactly its quotas: connections are not opened
all at once, so none misses the connect timeout and no admission falls back to the failure mode while Redis is up.

The nodes here accept connections into a one-slot backlog (`--tcp-backlog 1`), as a node that cannot accept a burst
of connects in time does: connects beyond what its queue holds lose their SYN to the kernel and only complete on the
client's retransmission a second later, past the store's connect timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis

from gateway.settings import Settings, StateFailureMode
from gateway.state.base import AdmissionRequest, DeploymentQuota, StateStore, StateUnavailableError
from gateway.state.factory import SENTINEL_POOL_SIZE, create_state_store
from gateway.state.redis_lanes import LANES_PER_NODE
from tests.support.processes import HOST
from tests.support.redis_cluster import (
    RedisClusterNodes,
    SentinelSetup,
    have_redis_cli,
    start_cluster,
    start_sentinel_setup,
)

pytestmark = pytest.mark.skipif(not have_redis_cli(), reason="needs redis-server and redis-cli")

BURST = 200
ROUNDS = 5  # each round a gateway's cold start: a new store, its first requests all at once
PLAN = (DeploymentQuota("a", rpm=30), DeploymentQuota("b", rpm=20))
TENANT_RPM = 50
SAFETY_S = 30.0  # a bound so that a hang fails the test instead of stalling the suite; not a timing assertion


@pytest.fixture(scope="module")
def narrow_cluster() -> Iterator[RedisClusterNodes]:
    cluster = start_cluster(tcp_backlog=1)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def narrow_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    setup = start_sentinel_setup(tmp_path_factory.mktemp("sentinel"), tcp_backlog=1)
    yield setup
    setup.stop()


def clients_of(port: int) -> int:
    with redis.Redis(HOST, port, socket_timeout=2, decode_responses=True) as c:
        return int(c.info("clients")["connected_clients"]) - 1  # not this one


def cold_store(url: str, errors: list[str]) -> StateStore:
    """A new store, as a gateway starting up builds it (open mode: an outage would admit)."""
    return create_state_store(Settings(redis_url=url, state_failure_mode=StateFailureMode.OPEN), on_error=errors.append)


async def burst(store: StateStore, request: AdmissionRequest) -> list[bool | str]:
    """BURST admissions at once, started with the store's first requests; what each got (its deployment, or False)."""
    await store.start()
    results = await asyncio.gather(*(store.admit(request) for _ in range(BURST)))
    return [(r.deployment or True) if r.allowed else False for r in results]


async def test_a_cold_burst_on_a_cluster_admits_exactly_the_deployment_quotas(
    narrow_cluster: RedisClusterNodes,
) -> None:
    for _ in range(ROUNDS):
        narrow_cluster.flush()
        errors: list[str] = []
        request = AdmissionRequest("team-a", tokens=100, est_cost_usd=0.0, now=time.time(), deployments=PLAN)
        before = [clients_of(m.port) for m in narrow_cluster.masters]
        store = cold_store(narrow_cluster.url, errors)
        try:
            got = await burst(store, request)
            assert (got.count("a"), got.count("b"), got.count(False)) == (30, 20, BURST - 50)
            assert errors == []  # no admission was let through as an outage
            opened = [clients_of(m.port) - n for m, n in zip(narrow_cluster.masters, before, strict=True)]
            assert max(opened) <= LANES_PER_NODE + 2  # and the client's own: its slot-map query and its ping
        finally:
            await store.close()


async def test_a_cold_burst_on_sentinel_admits_exactly_the_tenant_limit(narrow_sentinel: SentinelSetup) -> None:
    for _ in range(ROUNDS):
        with redis.Redis(HOST, narrow_sentinel.primary.port, socket_timeout=2) as c:
            c.flushall()
        errors: list[str] = []
        request = AdmissionRequest("team-a", tokens=100, est_cost_usd=0.0, now=time.time(), tenant_rpm=TENANT_RPM)
        before = clients_of(narrow_sentinel.primary.port)  # the replica's and the sentinels' connections
        store = cold_store(narrow_sentinel.url, errors)
        try:
            got = await burst(store, request)
            assert (got.count(True), got.count(False)) == (TENANT_RPM, BURST - TENANT_RPM)
            assert errors == []
            assert clients_of(narrow_sentinel.primary.port) - before <= SENTINEL_POOL_SIZE
        finally:
            await store.close()


def test_the_nodes_here_have_a_one_slot_backlog(
    narrow_cluster: RedisClusterNodes, narrow_sentinel: SentinelSetup
) -> None:
    """The premise of this module."""
    for port in [m.port for m in narrow_cluster.masters] + [narrow_sentinel.primary.port]:
        with redis.Redis(HOST, port, socket_timeout=2, decode_responses=True) as c:
            assert c.config_get("tcp-backlog") == {"tcp-backlog": "1"}


async def test_a_burst_on_a_cluster_that_stops_answering_ends_in_the_failure_mode(
    narrow_cluster: RedisClusterNodes,
) -> None:
    """Waiting for a lane is bounded: with every master hung, each request of a burst is refused (closed mode)."""
    narrow_cluster.flush()
    errors: list[str] = []
    settings = Settings(redis_url=narrow_cluster.url, state_failure_mode=StateFailureMode.CLOSED)
    store = create_state_store(settings, on_error=errors.append)
    await store.start()
    request = AdmissionRequest("team-a", tokens=100, est_cost_usd=0.0, now=time.time(), deployments=PLAN)
    try:
        for master in narrow_cluster.masters:
            master.pause()
        try:
            calls = asyncio.gather(*(store.admit(request) for _ in range(BURST)), return_exceptions=True)
            outcomes = await asyncio.wait_for(calls, SAFETY_S)
        finally:
            for master in narrow_cluster.masters:
                master.resume()
        assert [type(o) for o in outcomes] == [StateUnavailableError] * BURST
        assert errors == ["admit"] * BURST
    finally:
        await store.close()
        narrow_cluster.wait_healthy()
