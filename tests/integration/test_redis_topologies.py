"""Gateway replicas over a real three-master Redis Cluster and a real Sentinel-managed primary and replica:
limits, budgets, circuits and usage shared exactly; a resharding, the loss of a master and a failover."""

from __future__ import annotations

import concurrent.futures
import json
import re
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from openai.types.chat import ChatCompletionMessageParam

from tests.support.processes import GatewayProcess, RedisServer, Upstream, start_gateway, start_simulated
from tests.support.redis_cluster import (
    RedisClusterNodes,
    SentinelSetup,
    have_redis_cli,
    start_cluster,
    start_sentinel_setup,
    wait_until,
)

pytestmark = pytest.mark.skipif(not have_redis_cli(), reason="needs redis-server and redis-cli")

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
ADMIN_KEY = "adm-topologies-secret"
WORKERS = 12
CLIENT_TIMEOUT_S = 10.0
RPM_LIMIT = 8
COST_USD = 0.003  # 3 output tokens at $1000/Mtok; with max_tokens=3 the estimate is exactly the cost
BUDGET_USD = 0.0155  # room for five requests, not six
FAILOVER_LOAD_S = 20.0  # the most the Sentinel test keeps sending requests for

POLICY = """
version: 1
providers:
  pool: {{type: openai, base_url: "{base_url}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  priced: {{provider: pool, model: priced-model,
            price: {{input_per_mtok: 0, output_per_mtok: 1000, currency: USD}}}}
  quota:  {{provider: pool, model: quota-model, rpm: 100000}}
  flaky:  {{provider: pool, model: flaky-model}}
  steady: {{provider: pool, model: steady-model}}
aliases:
  chat:    {{targets: [priced], strategy: priority}}
  quota:   {{targets: [quota], strategy: priority}}
  circuit: {{targets: [flaky, steady], strategy: priority}}
fallback:
  on: [server_error]
  retries: {{attempts: 0}}
  circuit_breaker: {{failures: 2, window: 30s, cooldown: 120s}}
tenants:
  rpm-team:     {{api_keys: [sk-rpm], limits: {{rpm: {rpm}}}}}
  budget-team:  {{api_keys: [sk-budget], budget: {{usd_per_day: {budget}}}}}
  counted-team: {{api_keys: [sk-counted], limits: {{rpm: 100000}}}}
  free-team:    {{api_keys: [sk-free]}}
"""

Reply = tuple[int, dict[str, str], dict[str, Any]]


class Calls:
    """The official client, one connection pool for every call; each call bounded by CLIENT_TIMEOUT_S."""

    def __init__(self) -> None:
        limits = httpx.Limits(max_connections=WORKERS, max_keepalive_connections=WORKERS)
        self.client = openai.OpenAI(
            api_key="none", max_retries=0, timeout=CLIENT_TIMEOUT_S, http_client=httpx.Client(limits=limits)
        )

    def chat(self, gateway: GatewayProcess, key: str, **kw: Any) -> Reply:
        client = self.client.with_options(base_url=gateway.base_url + "/v1", api_key=key)
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=kw.pop("model", "chat"), messages=HELLO, **kw
            )
        except openai.APIStatusError as err:
            return err.status_code, dict(err.response.headers), {"error": err.body}
        return raw.status_code, dict(raw.headers), json.loads(raw.text)

    def burst(self, gateways: tuple[GatewayProcess, ...], key: str, count: int, **kw: Any) -> list[Reply]:
        """`count` requests at once, spread over `gateways` in turn."""
        with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
            return list(pool.map(lambda n: self.chat(gateways[n % len(gateways)], key, **kw), range(count)))

    def close(self) -> None:
        self.client.close()


def checked(reply: Reply) -> bool:
    """Admitted after the shared store counted it: only then does the response carry the rate-limit headers."""
    return reply[0] == 200 and "x-ratelimit-limit-requests" in reply[1]


def remaining(reply: Reply) -> int:
    return int(reply[1]["x-ratelimit-remaining-requests"])


def usage(gateway: GatewayProcess, tenant: str) -> tuple[int, float]:
    request = urllib.request.Request(
        gateway.url("/admin/usage?group_by=tenant"), headers={"authorization": f"Bearer {ADMIN_KEY}"}
    )
    with urllib.request.urlopen(request, timeout=CLIENT_TIMEOUT_S) as resp:
        report = json.loads(resp.read())
    rows = [g for g in report["groups"] if g["tenant"] == tenant]
    return (rows[0]["requests"], rows[0]["cost_usd"]) if rows else (0, 0.0)


def metrics(gateway: GatewayProcess) -> str:
    with urllib.request.urlopen(gateway.url("/metrics"), timeout=CLIENT_TIMEOUT_S) as resp:
        text: str = resp.read().decode()
        return text


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    sim = start_simulated("vllm", name="sim-topologies")
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def policy(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("topologies") / "policy.yaml"
    path.write_text(POLICY.format(base_url=upstream.base_url, rpm=RPM_LIMIT, budget=BUDGET_USD))
    return path


@pytest.fixture(scope="module")
def calls() -> Iterator[Calls]:
    made = Calls()
    yield made
    made.close()


def start_gateways(policy: Path, url: str, modes: list[str]) -> list[GatewayProcess]:
    def start(mode: str) -> GatewayProcess:
        env = {"POLYROUTE_REDIS_URL": url, "POLYROUTE_STATE_FAILURE_MODE": mode, "POLYROUTE_ADMIN_KEY": ADMIN_KEY}
        return start_gateway(policy, env=env)

    with concurrent.futures.ThreadPoolExecutor(len(modes)) as pool:
        futures = [pool.submit(start, mode) for mode in modes]
    started = [f.result() for f in futures if f.exception() is None]
    if len(started) < len(modes):
        for gateway in started:
            gateway.stop()
        raise next(e for f in futures if (e := f.exception()) is not None)
    return started


# --- Cluster ------------------------------------------------------------------------------------------------------


@dataclass
class OnCluster:
    cluster: RedisClusterNodes
    replicas: tuple[GatewayProcess, GatewayProcess]  # POLYROUTE_STATE_FAILURE_MODE=open
    closed: GatewayProcess  # POLYROUTE_STATE_FAILURE_MODE=closed


@pytest.fixture(scope="module")
def on_cluster(policy: Path) -> Iterator[OnCluster]:
    cluster = start_cluster()
    try:
        a, b, closed = start_gateways(policy, cluster.url, ["open", "open", "closed"])
        try:
            yield OnCluster(cluster, (a, b), closed)
        finally:
            for gateway in (a, b, closed):
                gateway.stop()
    finally:
        cluster.stop()


def test_a_limit_of_n_admits_exactly_n_across_two_replicas_on_a_cluster(on_cluster: OnCluster, calls: Calls) -> None:
    results = calls.burst(on_cluster.replicas, "sk-rpm", 4 * RPM_LIMIT)

    statuses = Counter(status for status, _, _ in results)
    assert statuses == {200: RPM_LIMIT, 429: 3 * RPM_LIMIT}, statuses
    assert sorted(remaining(r) for r in results if r[0] == 200) == list(range(RPM_LIMIT))
    for status, headers, body in results:
        if status == 429:
            assert 1 <= int(headers["retry-after"]) <= 61 and "rpm-team" in body["error"]["message"]


def test_a_budget_holds_across_replicas_and_usage_sums_on_a_cluster(on_cluster: OnCluster, calls: Calls) -> None:
    a, b = on_cluster.replicas
    results = calls.burst(on_cluster.replicas, "sk-budget", 15, max_tokens=3)

    assert Counter(status for status, _, _ in results) == {200: 5, 429: 10}
    for gateway in (a, b):  # either replica reports what both served
        wait_until(lambda g=gateway: usage(g, "budget-team")[0] == 5, "usage records of both replicas")
        assert usage(gateway, "budget-team")[1] == pytest.approx(5 * COST_USD)


def test_a_circuit_opened_by_one_replica_is_open_on_the_other_on_a_cluster(
    on_cluster: OnCluster, calls: Calls, upstream: Upstream
) -> None:
    first, second = on_cluster.replicas
    upstream.inject([{"fault": "internal", "count": 2, "model": "flaky-model"}])
    for _ in range(2):
        status, headers, _ = calls.chat(first, "sk-free", model="circuit")
        assert status == 200 and headers["x-polyroute-deployment"] == "steady"
    open_gauge = re.compile(r'^polyroute_circuit_open\{[^}]*deployment="flaky"[^}]*\} 1(\.0)?$', re.MULTILINE)
    wait_until(lambda: open_gauge.search(metrics(second)), "the other replica to see the open circuit")
    before = upstream.stats()["requests_by_model"].get("flaky-model", 0)
    status, headers, _ = calls.chat(second, "sk-free", model="circuit")
    assert (status, headers["x-polyroute-deployment"], headers["x-polyroute-attempts"]) == (200, "steady", "1")
    assert upstream.stats()["requests_by_model"].get("flaky-model", 0) == before


def test_counting_carries_on_through_a_resharding_of_its_slots(on_cluster: OnCluster, calls: Calls) -> None:
    """The tenant's slot and the deployments' slot move to other masters: half-way (ASK) and then for good (MOVED)."""
    cluster, (a, b) = on_cluster.cluster, on_cluster.replicas
    tenant_key, deployments_key = "polyroute:{t:counted-team}:window", "polyroute:{deployments}:quota:window"
    seen: list[int] = []

    def send(n: int) -> None:
        for i in range(n):
            reply = calls.chat((a, b)[i % 2], "sk-counted", model="quota")
            assert checked(reply), [ln for ln in (metrics(a) + metrics(b)).splitlines() if "errors_total{" in ln]
            seen.append(remaining(reply))

    # Concurrent requests first: each replica then holds several idle connections to every master, as under load.
    warm = calls.burst((a, b), "sk-counted", 2 * WORKERS, model="quota")
    assert all(checked(r) for r in warm)
    send(4)
    for key in (tenant_key, deployments_key):
        home = cluster.node_for(key)
        target = next(m for m in cluster.masters if m is not home)
        cluster.move_slot(key, target, finish=False)  # keys moved, slot still MIGRATING: clients are sent ASK
        send(4)
        cluster.assign_slot(cluster.slot(key), cluster.node_id(target))  # done: clients are sent MOVED
        send(4)
        assert cluster.node_for(key) is target

    first = 99_999 - len(warm)
    assert seen == list(range(first, first - len(seen), -1))  # one count, in order, across both replicas
    for gateway in (a, b):
        assert not re.search(r"^polyroute_state_store_errors_total\{.*\} [1-9]", metrics(gateway), re.MULTILINE)


def test_losing_a_master_follows_the_failure_mode_until_it_is_back(on_cluster: OnCluster, calls: Calls) -> None:
    cluster, (a, _), closed = on_cluster.cluster, on_cluster.replicas, on_cluster.closed
    lost = cluster.node_for("polyroute:{t:counted-team}:window")
    lost.process.kill()
    survivors = [m for m in cluster.masters if m is not lost]
    try:
        # With no replica to promote, the others declare the cluster failed once the node timeout (1 s) passes,
        # and refuse every key (cluster-require-full-coverage yes, Redis's default).
        wait_until(lambda: not _cluster_ok(survivors), "the surviving masters to declare the cluster failed")
        admitted = [calls.chat(a, "sk-counted") for _ in range(3)]
        assert [r[0] for r in admitted] == [200] * 3 and not any(checked(r) for r in admitted)  # open: unchecked
        refused = [calls.chat(closed, "sk-counted") for _ in range(3)]
        assert [(s, body["error"]["code"]) for s, _, body in refused] == [(503, "state_store_unavailable")] * 3
        assert calls.chat(closed, "sk-free")[0] == 200  # a tenant without limits needs no store
    finally:
        lost.restart()  # same port and node id (nodes.conf); its keys are gone, nothing was persisted
    cluster.wait_healthy()
    wait_until(lambda: checked(calls.chat(a, "sk-counted")), "the open replica to count again")
    wait_until(lambda: checked(calls.chat(closed, "sk-counted")), "the closed replica to admit again")


def _cluster_ok(masters: list[RedisServer]) -> bool:
    for m in masters:
        with redis.Redis("127.0.0.1", m.port, socket_timeout=2, decode_responses=True) as c:
            if "cluster_state:ok" not in str(c.execute_command("CLUSTER", "INFO")):
                return False
    return True


# --- Sentinel -----------------------------------------------------------------------------------------------------


@dataclass
class OnSentinel:
    setup: SentinelSetup
    open: GatewayProcess
    closed: GatewayProcess


@pytest.fixture(scope="module")
def on_sentinel(policy: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnSentinel]:
    setup = start_sentinel_setup(tmp_path_factory.mktemp("sentinel"))
    try:
        opened, closed = start_gateways(policy, setup.url, ["open", "closed"])
        try:
            yield OnSentinel(setup, opened, closed)
        finally:
            opened.stop()
            closed.stop()
    finally:
        setup.stop()


def test_a_failover_is_followed_and_the_failure_mode_decides_meanwhile(on_sentinel: OnSentinel, calls: Calls) -> None:
    s = on_sentinel
    before = [calls.chat(g, "sk-counted") for g in (s.open, s.closed)]
    assert all(checked(r) for r in before)
    log: list[tuple[str, Reply]] = []
    stop = threading.Event()

    def load(gateway: GatewayProcess, mode: str) -> None:
        deadline = time.monotonic() + FAILOVER_LOAD_S
        while not stop.is_set() and time.monotonic() < deadline:
            log.append((mode, calls.chat(gateway, "sk-counted")))
            time.sleep(0.02)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = [pool.submit(load, s.open, "open"), pool.submit(load, s.closed, "closed")]
        time.sleep(0.5)
        s.setup.primary.process.kill()
        killed_at, killed_s = len(log), time.monotonic()
        try:
            wait_until(s.setup.replica_is_primary, "the sentinels to promote the replica")

            def both_count_again() -> bool:
                recent = {mode: reply for mode, reply in log[-6:]}
                return len(recent) == 2 and all(checked(r) for r in recent.values())

            wait_until(both_count_again, "both gateways to count on the promoted replica")
            failover_s = time.monotonic() - killed_s
        finally:
            stop.set()
            for future in running:
                future.result()

    during = log[killed_at:]
    unchecked = [r for mode, r in during if mode == "open" and not checked(r)]
    refused = [r for mode, r in during if mode == "closed" and r[0] != 200]
    assert all(r[0] == 200 for mode, r in during if mode == "open")  # open: nothing refused, some unchecked
    assert all(r[0] == 503 and r[2]["error"]["code"] == "state_store_unavailable" for r in refused)
    assert all(checked(r) for mode, r in during if mode == "closed" and r[0] == 200)  # closed: never unchecked
    assert unchecked and refused  # the failover took a while, and each mode showed it
    # The promoted replica holds the counts: they go on from where the gateways left them, shared by both.
    after = [calls.chat(g, "sk-counted") for g in (s.open, s.closed)]
    assert all(checked(r) for r in after)
    assert remaining(after[1]) == remaining(after[0]) - 1
    print(
        f"\nSentinel failover: {len(unchecked)} of {sum(1 for m, _ in during if m == 'open')} requests admitted "
        f"without a check (open), {len(refused)} refused with 503 (closed), counted again after {failover_s:.1f}s"
    )
