"""A gateway that has just started on Redis Cluster or Sentinel, hit at once by 150 requests for a deployment with a
quota of 20, answers exactly 20 of them with 200 and the rest with 429, although its first requests find no
connection open yet (the nodes here accept connects into a one-slot backlog, as a node that cannot take a burst of
connects does; see tests/unit/state/test_redis_connection_storms.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis

from tests.support.processes import HOST, Upstream, start_gateway, start_simulated
from tests.support.redis_cluster import (
    RedisClusterNodes,
    SentinelSetup,
    have_redis_cli,
    start_cluster,
    start_sentinel_setup,
)

pytestmark = pytest.mark.skipif(not have_redis_cli(), reason="needs redis-server and redis-cli")

QUOTA = 20
BURST = 150
ROUNDS = 3  # each round a new gateway process
CLIENT_TIMEOUT_S = 30.0

POLICY = """
version: 1
providers:
  pool: {{type: openai, base_url: "{base_url}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  quota: {{provider: pool, model: quota-model, rpm: {quota}}}
aliases:
  chat: {{targets: [quota], strategy: priority}}
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    sim = start_simulated("vllm", name="sim-cold-start")
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def policy(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cold-start") / "policy.yaml"
    path.write_text(POLICY.format(base_url=upstream.base_url, quota=QUOTA))
    return path


async def burst(base_url: str) -> Counter[int]:
    """BURST chat requests at once through the official client; the status of each."""
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=BURST)) as http:
        client = openai.AsyncOpenAI(
            base_url=base_url + "/v1", api_key="none", max_retries=0, timeout=CLIENT_TIMEOUT_S, http_client=http
        )

        async def one() -> int:
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model="chat", messages=[{"role": "user", "content": "hi"}]
                )
            except openai.APIStatusError as err:
                return err.status_code
            return raw.status_code

        return Counter(await asyncio.gather(*(one() for _ in range(BURST))))


def cold_gateways_admit_exactly_the_quota(policy: Path, url: str, flush: Callable[[], None]) -> None:
    for _ in range(ROUNDS):
        flush()
        gateway = start_gateway(policy, env={"POLYROUTE_REDIS_URL": url, "POLYROUTE_STATE_FAILURE_MODE": "open"})
        try:
            statuses = asyncio.run(burst(gateway.base_url))
        finally:
            gateway.stop()
        assert statuses == {200: QUOTA, 429: BURST - QUOTA}


def test_a_cold_gateway_on_a_cluster_admits_exactly_the_quota(policy: Path) -> None:
    cluster: RedisClusterNodes = start_cluster(tcp_backlog=1)
    try:
        cold_gateways_admit_exactly_the_quota(policy, cluster.url, cluster.flush)
    finally:
        cluster.stop()


def test_a_cold_gateway_on_sentinel_admits_exactly_the_quota(
    policy: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    setup: SentinelSetup = start_sentinel_setup(tmp_path_factory.mktemp("sentinel"), tcp_backlog=1)

    def flush() -> None:
        with redis.Redis(HOST, setup.primary.port, socket_timeout=2) as c:
            c.flushall()

    try:
        cold_gateways_admit_exactly_the_quota(policy, setup.url, flush)
    finally:
        setup.stop()
