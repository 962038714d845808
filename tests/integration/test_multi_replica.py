"""Gateway replicas behind a real nginx share one redis-server: limits, budgets, circuits, and a Redis outage."""

from __future__ import annotations

import concurrent.futures
import json
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.nginx import SERVED_BY, Nginx, have_nginx, start_nginx
from tests.support.processes import (
    GatewayProcess,
    RedisServer,
    Upstream,
    have_redis,
    start_gateway,
    start_redis,
    start_simulated,
)

pytestmark = pytest.mark.skipif(not (have_redis() and have_nginx()), reason="needs redis-server and nginx")

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
ADMIN_KEY = "adm-replicas-secret"
BURST_WORKERS = 12
CLIENT_TIMEOUT_S = 10.0  # no request may hang: every call is bounded
RPM_LIMIT = 8
COST_USD = 0.003  # 3 output tokens at $1000/Mtok; with max_tokens=3 the estimate is exactly the cost
BUDGET_USD = 0.0155  # room for five requests, not six

POLICY = """
version: 1
providers:
  pool: {{type: openai, base_url: "{base_url}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  priced: {{provider: pool, model: priced-model,
            price: {{input_per_mtok: 0, output_per_mtok: 1000, currency: USD}}}}
  flaky:  {{provider: pool, model: flaky-model}}
  steady: {{provider: pool, model: steady-model}}
aliases:
  chat:    {{targets: [priced], strategy: priority}}
  circuit: {{targets: [flaky, steady], strategy: priority}}
fallback:
  on: [server_error]
  retries: {{attempts: 0}}
  circuit_breaker: {{failures: 2, window: 30s, cooldown: 120s}}
tenants:
  rpm-team:     {{api_keys: [sk-rpm], limits: {{rpm: {rpm}}}}}
  budget-team:  {{api_keys: [sk-budget], budget: {{usd_per_day: {budget}}}}}
  limited-team: {{api_keys: [sk-limited], limits: {{rpm: 100000}}}}
  free-team:    {{api_keys: [sk-free]}}
"""


@dataclass
class Replicas:
    redis: RedisServer
    upstream: Upstream
    open: tuple[GatewayProcess, GatewayProcess]  # POLYROUTE_STATE_FAILURE_MODE=open
    closed: tuple[GatewayProcess, GatewayProcess]  # POLYROUTE_STATE_FAILURE_MODE=closed
    lb_open: Nginx
    lb_closed: Nginx
    client: openai.OpenAI  # one connection pool for every call: a client per call would cost more than the call

    def chat(self, base_url: str, key: str, **kw: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
        """One chat completion through the official client: status, headers and body, whatever the status."""
        client = self.client.with_options(base_url=base_url + "/v1", api_key=key)
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=kw.pop("model", "chat"), messages=HELLO, **kw
            )
        except openai.APIStatusError as err:  # the client keeps the envelope's inner object: put the envelope back
            return err.status_code, dict(err.response.headers), {"error": err.body}
        return raw.status_code, dict(raw.headers), json.loads(raw.text)

    def burst(self, base_url: str, key: str, count: int, **kw: Any) -> list[tuple[int, dict[str, str], dict[str, Any]]]:
        """`count` requests at once (bounded by BURST_WORKERS threads and each by CLIENT_TIMEOUT_S)."""
        with concurrent.futures.ThreadPoolExecutor(BURST_WORKERS) as pool:
            return list(pool.map(lambda _: self.chat(base_url, key, **kw), range(count)))


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    redis = start_redis()
    upstream = start_simulated("vllm", name="sim-replicas")
    policy = tmp_path_factory.mktemp("replicas") / "policy.yaml"
    policy.write_text(POLICY.format(base_url=upstream.base_url, rpm=RPM_LIMIT, budget=BUDGET_USD))
    started: list[GatewayProcess] = []
    lbs: list[Nginx] = []
    try:

        def start(mode: str) -> GatewayProcess:
            env = {"POLYROUTE_REDIS_URL": redis.url, "POLYROUTE_STATE_FAILURE_MODE": mode}
            gateway = start_gateway(Path(policy), env={**env, "POLYROUTE_ADMIN_KEY": ADMIN_KEY})
            started.append(gateway)
            return gateway

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            a, b, c, d = pool.map(start, ["open", "open", "closed", "closed"])
        lbs.append(start_nginx([a.port, b.port]))
        lbs.append(start_nginx([c.port, d.port]))
        limits = httpx.Limits(max_connections=BURST_WORKERS, max_keepalive_connections=BURST_WORKERS)
        with openai.OpenAI(
            api_key="none", max_retries=0, timeout=CLIENT_TIMEOUT_S, http_client=httpx.Client(limits=limits)
        ) as client:
            yield Replicas(redis, upstream, (a, b), (c, d), lbs[0], lbs[1], client)
    finally:
        for lb in lbs:
            lb.stop()
        for process in (*started, upstream, redis):
            process.stop()


def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=CLIENT_TIMEOUT_S) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def metrics(gateway: GatewayProcess) -> str:
    with urllib.request.urlopen(gateway.url("/metrics"), timeout=CLIENT_TIMEOUT_S) as resp:
        text: str = resp.read().decode()
        return text


def usage(base_url: str, tenant: str) -> tuple[int, float]:
    status, report = get_json(base_url + "/admin/usage?group_by=tenant", {"authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 200, report
    rows = [g for g in report["groups"] if g["tenant"] == tenant]
    return (rows[0]["requests"], rows[0]["cost_usd"]) if rows else (0, 0.0)


def eventually(check: Any, what: str, timeout: float = 15.0) -> Any:
    """Poll `check()` until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def test_one_tenants_rpm_holds_across_both_replicas(replicas: Replicas) -> None:
    results = replicas.burst(replicas.lb_open.base_url, "sk-rpm", 3 * RPM_LIMIT)
    statuses = Counter(status for status, _, _ in results)
    by_replica = Counter(headers[SERVED_BY] for _, headers, _ in results)
    # Each replica received more requests than the limit: replicas counting alone would have accepted 2 x the limit.
    assert len(by_replica) == 2 and min(by_replica.values()) > RPM_LIMIT, by_replica
    assert set(statuses) == {200, 429}, statuses
    assert statuses[200] == RPM_LIMIT, statuses  # a sliding window: even a burst across a whole minute gets no more
    for status, headers, body in results:
        assert headers["x-ratelimit-limit-requests"] == str(RPM_LIMIT)
        if status == 429:
            assert headers["x-ratelimit-remaining-requests"] == "0" and int(headers["retry-after"]) >= 1
            assert "rpm-team" in body["error"]["message"]


def test_one_tenants_budget_holds_across_both_replicas_and_spend_equals_the_costs(replicas: Replicas) -> None:
    results = replicas.burst(replicas.lb_open.base_url, "sk-budget", 15, max_tokens=3)
    accepted = [headers for status, headers, _ in results if status == 200]
    refused = [body for status, _, body in results if status == 429]
    assert len({headers[SERVED_BY] for _, headers, _ in results}) == 2
    assert len(accepted) == 5 and len(refused) == 10  # $0.0155 buys five requests of $0.003, on both replicas
    costs = [float(headers["x-polyroute-cost-usd"]) for headers in accepted]
    assert costs == pytest.approx([COST_USD] * 5)
    for body in refused:
        assert body["error"]["code"] == "insufficient_quota"
        assert "Daily budget of $0.0155 for tenant 'budget-team' would be exceeded" in body["error"]["message"]
    # Spend, as every replica reads it back: the usage report and a budget refusal agree with the costs charged.
    eventually(lambda: usage(replicas.lb_open.base_url, "budget-team")[0] == 5, "usage of the accepted requests")
    assert usage(replicas.lb_open.base_url, "budget-team")[1] == pytest.approx(sum(costs), abs=1e-9)
    for replica in replicas.open:
        status, _, body = replicas.chat(replica.base_url, "sk-budget", max_tokens=3)
        assert status == 429
        spent = re.search(r"spent \$([0-9.]+) today", body["error"]["message"])
        assert spent and float(spent.group(1)) == pytest.approx(sum(costs), abs=1e-9)


def test_a_circuit_opened_by_one_replica_is_seen_by_the_other(replicas: Replicas) -> None:
    first, second = replicas.open
    replicas.upstream.inject([{"fault": "internal", "count": 2, "model": "flaky-model"}])
    for _ in range(2):  # two failures open the circuit (policy: failures: 2)
        status, headers, _ = replicas.chat(first.base_url, "sk-free", model="circuit")
        assert status == 200 and headers["x-polyroute-deployment"] == "steady"
        assert headers["x-polyroute-fallback-reason"] == "server_error"
    open_gauge = re.compile(r'^polyroute_circuit_open\{[^}]*deployment="flaky"[^}]*\} 1(\.0)?$', re.MULTILINE)
    assert open_gauge.search(metrics(first))
    eventually(lambda: open_gauge.search(metrics(second)), "the other replica to see the open circuit")
    before = replicas.upstream.stats()["requests_by_model"].get("flaky-model", 0)
    status, headers, _ = replicas.chat(second.base_url, "sk-free", model="circuit")
    assert status == 200 and headers["x-polyroute-deployment"] == "steady"
    assert headers["x-polyroute-attempts"] == "1" and "x-polyroute-fallback-reason" not in headers
    assert replicas.upstream.stats()["requests_by_model"].get("flaky-model", 0) == before  # never tried


def test_a_redis_outage_follows_the_failure_mode_and_buffered_usage_arrives_after_recovery(
    replicas: Replicas,
) -> None:
    lb_open, lb_closed = replicas.lb_open.base_url, replicas.lb_closed.base_url
    assert replicas.chat(lb_open, "sk-limited")[0] == 200 and replicas.chat(lb_closed, "sk-limited")[0] == 200
    eventually(lambda: usage(lb_open, "limited-team")[0] == 2, "usage written before the outage")
    replicas.redis.process.kill()
    try:
        # open: requests keep flowing, on both replicas, without hanging.
        during = [replicas.chat(lb_open, "sk-limited") for _ in range(6)]
        assert [status for status, _, _ in during] == [200] * 6
        assert len({headers[SERVED_BY] for _, headers, _ in during}) == 2
        # closed: requests that need limits are refused at once with a clear 503; others are still served.
        refused = [replicas.chat(lb_closed, "sk-limited") for _ in range(4)]
        for status, _, body in refused:
            assert status == 503, body
            assert body["error"]["code"] == "state_store_unavailable"
            assert "state store is unreachable" in body["error"]["message"]
        assert len({headers[SERVED_BY] for _, headers, _ in refused}) == 2
        free = [replicas.chat(lb_closed, "sk-free") for _ in range(2)]
        assert [status for status, _, _ in free] == [200, 200]
        # The outage is logged and counted, on every replica that met it.
        for replica in (*replicas.open, *replicas.closed):
            assert "state store redis://127.0.0.1" in replica.logs() and "unreachable" in replica.logs()
            assert re.search(r'polyroute_state_store_errors_total\{[^}]*op="admit"[^}]*\} [1-9]', metrics(replica))
        status, body = get_json(lb_closed + "/readyz")
        assert status == 503 and body["degraded"] is True
    finally:
        replicas.redis.restart()  # same port, no data: whatever usage shows next was buffered during the outage
    eventually(lambda: usage(lb_open, "limited-team")[0] == 6, "the six requests served during the outage")
    eventually(lambda: usage(lb_open, "free-team")[0] == 2, "the requests of the closed replicas during the outage")
    assert eventually(lambda: replicas.chat(lb_closed, "sk-limited")[0] == 200, "the closed replicas to admit again")
    for replica in replicas.open:
        assert "state store redis://127.0.0.1" in replica.logs() and "reachable again" in replica.logs()
