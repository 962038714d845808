"""`polyroute serve --workers 4` without Redis: limits, budgets and usage hold for the whole process group.

Every request opens a new connection, so that the kernel hands requests to all four workers; a store per worker would
admit a limit four times over and report one worker's share of the usage.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.processes import GatewayProcess, Upstream, start_gateway, start_simulated

WORKERS = 4
RPM = 24
BUDGET_USD = 0.2
POLICY = """
version: 1
providers:
  vllm: {{type: openai, base_url: {vllm}, hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  local: {{provider: vllm, model: Qwen/Qwen3-32B, price: {{input_per_mtok: 1000, output_per_mtok: 1000}}}}
aliases:
  chat: {{targets: [local]}}
fallback:
  retries: {{attempts: 0}}
tenants:
  limited: {{api_keys: [sk-limited], limits: {{rpm: {rpm}}}}}
  budgeted: {{api_keys: [sk-budgeted], budget: {{usd_per_day: {budget}}}}}
  free: {{api_keys: [sk-free]}}
"""
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello from every worker"}]
WAIT_S = 30.0


@dataclass
class Group:
    gateway: GatewayProcess
    vllm: Upstream

    def call(self, key: str) -> int:
        """One chat completion on a new connection; the status the client saw (OpenAI errors checked)."""
        fresh = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=60)
        with openai.OpenAI(base_url=self.gateway.url("/v1"), api_key=key, max_retries=0, http_client=fresh) as c:
            try:
                c.chat.completions.create(model="chat", messages=HELLO, max_tokens=20)
            except openai.RateLimitError as err:
                assert isinstance(err.body, dict) and err.body["code"] in ("rate_limit_exceeded", "insufficient_quota")
                assert int(err.response.headers["retry-after"]) >= 1
                return 429
        return 200

    def usage(self, tenant: str) -> tuple[int, float]:
        request = urllib.request.Request(
            self.gateway.url("/admin/usage?group_by=tenant"), headers={"authorization": "Bearer adm"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            report: dict[str, Any] = json.loads(response.read())
        rows = [g for g in report["groups"] if g["tenant"] == tenant]
        return (rows[0]["requests"], rows[0]["cost_usd"]) if rows else (0, 0.0)


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    vllm = start_simulated("vllm", name="sim-vllm", chunks=3)
    policy = tmp_path_factory.mktemp("workers-state") / "policy.yaml"
    policy.write_text(POLICY.format(vllm=vllm.base_url, rpm=RPM, budget=BUDGET_USD))
    gateway = start_gateway(policy, env={"POLYROUTE_ADMIN_KEY": "adm"}, workers=WORKERS)
    try:
        deadline = time.monotonic() + WAIT_S
        while gateway.logs().count("Application startup complete") < WORKERS:
            assert time.monotonic() < deadline, "not every worker started"
            time.sleep(0.05)
        yield Group(gateway, vllm)
    finally:
        gateway.stop()
        vllm.stop()


def test_a_rate_limit_admits_exactly_its_requests_across_every_worker(group: Group) -> None:
    with ThreadPoolExecutor(max_workers=12) as pool:
        statuses = list(pool.map(lambda _: group.call("sk-limited"), range(RPM * 3)))
    assert statuses.count(200) == RPM
    assert statuses.count(429) == RPM * 2


def test_a_spent_budget_refuses_on_every_worker_and_usage_counts_every_request(group: Group) -> None:
    admitted = 0
    while group.call("sk-budgeted") == 200:
        admitted += 1
        assert admitted < 100, "the budget never ran out"
    assert admitted >= 2
    assert [group.call("sk-budgeted") for _ in range(WORKERS * 4)] == [429] * (WORKERS * 4)
    _, cost = wait_for_usage(group, "budgeted", admitted)
    assert 0 < cost <= BUDGET_USD


def test_admin_usage_shows_the_requests_of_every_worker(group: Group) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(lambda _: group.call("sk-free"), range(40))) == {200}
    wait_for_usage(group, "free", 40)
    assert {group.usage("free")[0] for _ in range(WORKERS * 3)} == {40}  # whichever worker answers


def wait_for_usage(group: Group, tenant: str, requests: int) -> tuple[int, float]:
    """Usage is written after each response, off the response path: wait (bounded) until it shows `requests`."""
    deadline = time.monotonic() + WAIT_S
    while (seen := group.usage(tenant))[0] != requests:
        assert seen[0] < requests, f"usage of {tenant} shows {seen[0]} requests, only {requests} were answered"
        assert time.monotonic() < deadline, f"usage of {tenant} shows {seen[0]} requests, expected {requests}"
        time.sleep(0.05)
    return seen
