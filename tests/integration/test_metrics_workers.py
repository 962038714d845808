"""/metrics of `polyroute serve --workers 2` on POLYROUTE_METRICS_PORT: every request counted, bounded labels."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionMessageParam

from gateway.observability import names
from tests.support.processes import (
    HOST,
    GatewayProcess,
    RedisServer,
    Upstream,
    free_port,
    have_redis,
    healthy,
    start_gateway,
    start_redis,
    start_simulated,
    worker_pids,
)
from tests.support.prometheus import Sample, scrape, total

pytestmark = pytest.mark.skipif(not have_redis(), reason="redis-server is not installed")

USD_PER_CNY = 0.5
POLICY = """
version: 1
providers:
  modelstudio: {{type: openai, base_url: {cloud}, api_key: "${{SIM_CLOUD_KEY}}", hosting: cloud, jurisdiction: sg,
                vendor: alibaba}}
  vllm: {{type: openai, base_url: {vllm}, hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  qwen-plus: {{provider: modelstudio, model: qwen3.6-plus,
              price: {{input_per_mtok: 0.8, output_per_mtok: 4.8, currency: CNY}}}}
  qwen-local: {{provider: vllm, model: Qwen/Qwen3-32B, price: {{gpu_hour: 2.5, tokens_per_second: 1200}}}}
aliases:
  coder: {{targets: [qwen-plus, qwen-local], strategy: priority}}
  local: {{targets: [qwen-local], strategy: priority}}
fallback:
  retries: {{attempts: 0, backoff: 10ms, max_backoff: 50ms}}
  timeouts: {{connect: 2s, first_token: 20s, total: 60s}}
tenants:
  team-a: {{api_keys: ["sk-team-a"]}}
  team-b: {{api_keys: ["sk-team-b"], budget: {{usd_per_day: 5}}}}
"""
KEYS = {"team-a": "sk-team-a", "team-b": "sk-team-b"}
ALIASES = {"coder", "local"}
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello from a metrics test"}]
WAIT_S = 30.0


@dataclass
class Workers:
    gateway: GatewayProcess
    metrics_url: str
    cloud: Upstream
    vllm: Upstream
    redis: RedisServer
    policy: Path


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    cloud = start_simulated("modelstudio", name="sim-cloud", api_key="sk-sim-cloud-secret")
    vllm = start_simulated("vllm", name="sim-vllm", chunks=5)
    redis = start_redis()
    policy = tmp_path_factory.mktemp("metrics-workers") / "policy.yaml"
    policy.write_text(POLICY.format(cloud=cloud.base_url, vllm=vllm.base_url))
    metrics_port = free_port()
    env = {
        "SIM_CLOUD_KEY": "sk-sim-cloud-secret",
        "POLYROUTE_METRICS_PORT": str(metrics_port),
        "POLYROUTE_REDIS_URL": redis.url,
        "POLYROUTE_USD_PER_CNY": str(USD_PER_CNY),
        "POLYROUTE_ADMIN_KEY": "adm",
    }
    gateway = start_gateway(policy, env=env, workers=2)
    try:
        yield Workers(gateway, f"http://{HOST}:{metrics_port}/metrics", cloud, vllm, redis, policy)
    finally:
        gateway.stop()
        for process in (cloud, vllm, redis):
            process.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(workers: Workers) -> Iterator[None]:
    yield
    workers.cloud.clear()
    workers.vllm.clear()


# --- reading /metrics as Prometheus does ---

def label_values(samples: list[Sample], name: str, label: str) -> set[str]:
    return {labels[label] for n, labels, _ in samples if n == name and label in labels}


def wait_for(what: str, check: Any, timeout: float = WAIT_S) -> Any:
    """Poll `check()` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


# --- clients: a new connection per request, so that the kernel hands requests to either worker ---


def client(gateway: GatewayProcess, tenant: str) -> openai.OpenAI:
    fresh = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=60)
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key=KEYS[tenant], max_retries=0, http_client=fresh)


def cny_cost(usage: CompletionUsage) -> float:
    """What the policy price of qwen-plus (CNY, converted at POLYROUTE_USD_PER_CNY) makes of a usage report."""
    return (usage.prompt_tokens * 0.8 + usage.completion_tokens * 4.8) * USD_PER_CNY / 1e6


def one_request(gateway: GatewayProcess, tenant: str, stream: bool) -> tuple[Any, float | None]:
    """(usage the client saw, x-polyroute-cost-usd or None for a stream)."""
    with client(gateway, tenant) as c:
        if stream:
            chunks = list(
                c.chat.completions.create(
                    model="coder", messages=HELLO, stream=True, stream_options={"include_usage": True}
                )
            )
            return chunks[-1].usage, None
        raw = c.chat.completions.with_raw_response.create(model="coder", messages=HELLO)
        return raw.parse().usage, float(raw.headers["x-polyroute-cost-usd"])


def test_requests_tokens_and_cost_add_up_across_workers(workers: Workers) -> None:
    before = scrape(workers.metrics_url)
    jobs = [(tenant, i % 3 == 0) for i in range(24) for tenant in ("team-a", "team-b")]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda job: one_request(workers.gateway, *job), jobs))

    after = scrape(workers.metrics_url)

    def delta(name: str, **match: str) -> float:
        return total(after, name, **match) - total(before, name, **match)

    for tenant in KEYS:
        sent = sum(1 for t, _ in jobs if t == tenant)
        assert delta(names.REQUESTS_TOTAL, tenant=tenant, status_class="2xx", deployment="qwen-plus") == sent
    assert delta(names.UPSTREAM_REQUESTS_TOTAL, deployment="qwen-plus", outcome="success") == len(jobs)
    streams = sum(1 for _, stream in jobs if stream)
    ttft_count = f"{names.TIME_TO_FIRST_TOKEN_SECONDS}_count"
    assert delta(ttft_count, alias="coder", deployment="qwen-plus") == streams
    assert delta(f"{names.REQUEST_DURATION_SECONDS}_count", alias="coder", stream="true") == streams

    usages = [usage for usage, _ in results]
    tokens = {"deployment": "qwen-plus", "estimated": "false"}
    assert delta(names.TOKENS_TOTAL, **tokens, type="input") == sum(u.prompt_tokens for u in usages)
    assert delta(names.TOKENS_TOTAL, **tokens, type="output") == sum(u.completion_tokens for u in usages)
    cached = sum(u.prompt_tokens_details.cached_tokens for u in usages)
    assert cached > 0  # Model Studio reports prompt_tokens_details.cached_tokens
    assert delta(names.TOKENS_TOTAL, **tokens, type="cached") == cached

    expected_cost = sum(cny_cost(u) for u in usages)
    assert delta(names.COST_USD_TOTAL, deployment="qwen-plus") == pytest.approx(expected_cost, rel=1e-9)
    for usage, header in results:
        if header is not None:
            assert header == pytest.approx(cny_cost(usage), abs=1e-8)  # the header has 8 decimals

    budget = [v for n, labels, v in after if n == names.BUDGET_REMAINING_USD and labels["tenant"] == "team-b"]
    assert budget and all(0 < v < 5 for v in budget)


def test_usage_records_of_every_worker_reach_the_shared_store(workers: Workers) -> None:
    one_request(workers.gateway, "team-a", stream=False)

    def report() -> dict[str, Any]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLYROUTE_")}
        env["POLYROUTE_REDIS_URL"] = workers.redis.url
        command = [sys.executable, "-m", "gateway.cli", "usage", "--json", "--group-by", "tenant,deployment"]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        parsed: dict[str, Any] = json.loads(done.stdout)
        return parsed

    def settled() -> tuple[dict[str, Any], list[Sample]] | None:
        # Usage records are written off the response path: wait until the store has caught up with /metrics.
        samples = scrape(workers.metrics_url)
        served = sum(v for n, labels, v in samples if n == names.REQUESTS_TOTAL and labels["deployment"] != "none")
        usage = report()
        return (usage, samples) if usage["total"]["requests"] == served else None

    usage, samples = wait_for("usage records in Redis to match /metrics", settled)

    tokens = {"estimated": "false"}
    assert usage["total"]["input_tokens"] == total(samples, names.TOKENS_TOTAL, **tokens, type="input")
    assert usage["total"]["output_tokens"] == total(samples, names.TOKENS_TOTAL, **tokens, type="output")
    assert usage["total"]["cached_tokens"] == total(samples, names.TOKENS_TOTAL, **tokens, type="cached")
    # The store keeps each record's cost in whole micro-dollars.
    resolution = usage["total"]["requests"] * 0.5e-6
    assert usage["total"]["cost_usd"] == pytest.approx(total(samples, names.COST_USD_TOTAL), abs=resolution)
    assert {g["tenant"] for g in usage["groups"]} == {"team-a", "team-b"}


def test_metrics_are_on_the_metrics_port_only(workers: Workers) -> None:
    with urllib.request.urlopen(workers.metrics_url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(workers.gateway.url("/metrics"), timeout=10)
    with refused.value as answer:
        assert answer.code == 404


def test_bad_keys_and_unknown_aliases_add_no_label_values(workers: Workers) -> None:
    for i in range(15):
        stranger = openai.OpenAI(base_url=workers.gateway.url("/v1"), api_key=f"sk-wrong-{i}", max_retries=0)
        with stranger as c, pytest.raises(openai.AuthenticationError):
            c.chat.completions.create(model="coder", messages=HELLO)
        with client(workers.gateway, "team-a") as c, pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model=f"typo-{i}", messages=HELLO)

    samples = scrape(workers.metrics_url)

    bounded = {"other", "none"}
    assert label_values(samples, names.REQUESTS_TOTAL, "tenant") <= {*KEYS, "anonymous", *bounded}
    for name in (names.REQUESTS_TOTAL, f"{names.REQUEST_DURATION_SECONDS}_count", names.INFLIGHT_REQUESTS):
        assert label_values(samples, name, "alias") <= ALIASES | bounded
    assert total(samples, names.REQUESTS_TOTAL, alias="other", status_class="4xx") >= 15
    text = "\n".join(f"{n}{labels}" for n, labels, _ in samples)
    assert "typo-" not in text and "sk-wrong" not in text and "sk-team" not in text


def test_killed_workers_lose_no_counts_and_leave_no_requests_in_flight(workers: Workers) -> None:
    if not Path("/proc/self/task").is_dir():
        pytest.skip("needs /proc to find the worker processes")
    gateway = workers.gateway
    workers.vllm.inject([{"fault": "delay", "delay": 1.0, "count": 3}])  # streams that outlive the workers
    broken: list[BaseException] = []

    def slow_stream() -> None:
        try:
            with client(gateway, "team-a") as c:
                for _ in c.chat.completions.create(model="local", messages=HELLO, stream=True):
                    pass
        except (openai.APIError, httpx.HTTPError) as exc:
            broken.append(exc)

    threads = [threading.Thread(target=slow_stream) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_for("3 requests in flight", lambda: total(scrape(workers.metrics_url), names.INFLIGHT_REQUESTS) == 3)
    counted = total(scrape(workers.metrics_url), names.REQUESTS_TOTAL)
    killed = worker_pids(gateway)
    assert len(killed) == 2

    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    wait_for("new workers", lambda: len(worker_pids(gateway) - killed) == 2 and healthy(gateway))
    for thread in threads:
        thread.join(timeout=WAIT_S)
    assert len(broken) == 3  # the streams died with their workers

    # The dead workers' requests stay counted; their in-flight requests are gone with them.
    wait_for("no request in flight", lambda: total(scrape(workers.metrics_url), names.INFLIGHT_REQUESTS) == 0)
    assert total(scrape(workers.metrics_url), names.REQUESTS_TOTAL) == counted
    for _ in range(4):
        one_request(gateway, "team-b", stream=False)
    assert total(scrape(workers.metrics_url), names.REQUESTS_TOTAL) == counted + 4
