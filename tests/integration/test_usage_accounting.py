"""Tokens, cost and usage records as a user checks them: response headers, /metrics, /admin/usage, `polyroute usage`.

The gateway runs two workers sharing Redis, with /metrics on its API port: whichever worker answers a request or a
scrape, the numbers must be the same.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionMessageParam

from gateway.observability import names
from gateway.policy.pricing import litellm_price
from tests.support.processes import (
    HOST,
    GatewayProcess,
    RedisServer,
    Upstream,
    have_redis,
    start_gateway,
    start_redis,
    start_simulated,
)
from tests.support.prometheus import scrape, total

pytestmark = pytest.mark.skipif(not have_redis(), reason="redis-server is not installed")

USD_PER_CNY = 0.5  # not the default, so that the test sees the setting applied
GPU_USD_PER_TOKEN = 2.5 / (1200 * 3600)
POLICY = """
version: 1
providers:
  modelstudio: {{type: openai, base_url: {cloud}, api_key: "${{SIM_CLOUD_KEY}}", hosting: cloud, jurisdiction: sg,
                vendor: alibaba}}
  vllm: {{type: openai, base_url: {vllm}, hosting: self_hosted, jurisdiction: onprem, vendor: self}}
  openai-priced: {{type: litellm, litellm_prefix: openai, base_url: {vllm}, api_key: unused, hosting: cloud,
                  jurisdiction: us, vendor: openai}}
deployments:
  qwen-plus: {{provider: modelstudio, model: qwen3.6-plus,
              price: {{input_per_mtok: 0.8, output_per_mtok: 4.8, currency: CNY}}}}
  qwen-local: {{provider: vllm, model: Qwen/Qwen3-32B, price: {{gpu_hour: 2.5, tokens_per_second: 1200}}}}
  mini: {{provider: openai-priced, model: gpt-4o-mini}}   # no price: litellm's price map knows this model
aliases:
  cloud: {{targets: [qwen-plus]}}
  local: {{targets: [qwen-local]}}
  mini: {{targets: [mini]}}
fallback:
  retries: {{attempts: 0, backoff: 10ms, max_backoff: 50ms}}
  timeouts: {{connect: 2s, first_token: 20s, total: 60s}}
"""
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello, how much does this cost?"}]
WAIT_S = 30.0


@dataclass
class Gateway:
    process: GatewayProcess
    metrics_url: str
    cloud: Upstream
    vllm: Upstream
    redis: RedisServer

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.process.url("/v1"), api_key="any", max_retries=0)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    cloud = start_simulated("modelstudio", name="sim-cloud", api_key="sk-sim-cloud-secret")
    vllm = start_simulated("vllm", name="sim-vllm")
    policy: Path = tmp_path_factory.mktemp("usage") / "policy.yaml"
    policy.write_text(POLICY.format(cloud=cloud.base_url, vllm=vllm.base_url))
    redis = start_redis()
    env = {
        "SIM_CLOUD_KEY": "sk-sim-cloud-secret",
        "POLYROUTE_ADMIN_KEY": "adm",
        "POLYROUTE_REDIS_URL": redis.url,
        "POLYROUTE_USD_PER_CNY": str(USD_PER_CNY),
    }
    process = start_gateway(policy, env=env, workers=2)
    try:
        yield Gateway(process, process.url("/metrics"), cloud, vllm, redis)
    finally:
        process.stop()
        for other in (cloud, vllm, redis):
            other.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(gw: Gateway) -> Iterator[None]:
    yield
    gw.cloud.clear()
    gw.vllm.clear()


# --- what the user reads: /metrics and /admin/usage ---

def admin_usage(gw: Gateway, group_by: str = "deployment") -> dict[str, Any]:
    request = urllib.request.Request(
        gw.process.url(f"/admin/usage?days=1&group_by={group_by}"), headers={"authorization": "Bearer adm"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        report: dict[str, Any] = json.loads(response.read())
    return report


def usage_of(report: dict[str, Any], deployment: str) -> dict[str, Any]:
    return next((g for g in report["groups"] if g["deployment"] == deployment), {"requests": 0})


class Delta:
    """What /metrics and /admin/usage gained between construction and `settle`."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.metrics_before = scrape(gw.metrics_url)
        self.usage_before = admin_usage(gw)

    def settle(self, deployment: str, requests: int) -> None:
        """Wait until `requests` more usage records of `deployment` are stored (they are written asynchronously)."""
        wanted = usage_of(self.usage_before, deployment)["requests"] + requests
        deadline = time.monotonic() + WAIT_S
        while usage_of(admin_usage(self.gw), deployment)["requests"] < wanted:
            if time.monotonic() > deadline:
                pytest.fail(f"usage records of {deployment} did not arrive within {WAIT_S:.0f}s")
            time.sleep(0.05)
        self.metrics_after = scrape(self.gw.metrics_url)
        self.usage_after = admin_usage(self.gw)
        assert usage_of(self.usage_after, deployment)["requests"] == wanted

    def metric(self, name: str, **match: str) -> float:
        return total(self.metrics_after, name, **match) - total(self.metrics_before, name, **match)

    def usage(self, deployment: str, field: str) -> float:
        before = usage_of(self.usage_before, deployment).get(field, 0)
        after: float = usage_of(self.usage_after, deployment)[field] - before
        return after


def cost_of(deployment: str, usage: CompletionUsage | None) -> float:
    """The cost a user expects from the policy price of `deployment` and the usage in the response."""
    assert usage is not None
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    if deployment == "qwen-plus":  # CNY per million tokens, converted at POLYROUTE_USD_PER_CNY
        return (prompt * 0.8 + completion * 4.8) * USD_PER_CNY / 1e6
    if deployment == "qwen-local":  # a GPU hour spread over the tokens it serves in an hour
        return (prompt + completion) * GPU_USD_PER_TOKEN
    price = litellm_price("openai", "gpt-4o-mini")
    assert price is not None and price.source == "litellm" and price.output_per_mtok_usd > 0
    return (prompt * price.input_per_mtok_usd + completion * price.output_per_mtok_usd) / 1e6


@pytest.mark.parametrize(("alias", "deployment"), [("cloud", "qwen-plus"), ("local", "qwen-local"), ("mini", "mini")])
def test_cost_in_header_equals_cost_in_metrics_and_usage(gw: Gateway, alias: str, deployment: str) -> None:
    delta = Delta(gw)
    headers = []
    with gw.client() as client:
        for i in range(3):
            messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "price? " * (i + 1)}]
            raw = client.chat.completions.with_raw_response.create(model=alias, messages=messages)
            header = float(raw.headers["x-polyroute-cost-usd"])
            assert header == pytest.approx(cost_of(deployment, raw.parse().usage), abs=1e-8)
            headers.append(header)

    delta.settle(deployment, 3)

    assert delta.metric(names.REQUESTS_TOTAL, deployment=deployment, status_class="2xx") == 3
    metric_cost = delta.metric(names.COST_USD_TOTAL, deployment=deployment)
    assert metric_cost == pytest.approx(sum(headers), abs=3e-8)  # headers have 8 decimals
    # Usage rows keep each record's cost in whole micro-dollars.
    assert delta.usage(deployment, "cost_usd") == pytest.approx(metric_cost, abs=3 * 0.5e-6 + 1e-12)


def test_a_request_every_target_failed_is_an_error_of_the_target_it_last_tried(gw: Gateway) -> None:
    gw.vllm.inject([{"fault": "status", "status": 500, "count": 2}])
    delta = Delta(gw)
    with gw.client() as client:
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model="local", messages=HELLO)
        with pytest.raises(openai.APIStatusError) as failed_stream:
            list(client.chat.completions.create(model="local", messages=HELLO, stream=True))
    assert failed.value.status_code == failed_stream.value.status_code == 502

    delta.settle("qwen-local", 2)

    assert delta.metric(names.REQUESTS_TOTAL, deployment="qwen-local", status_class="5xx") == 2
    assert delta.usage("qwen-local", "errors") == 2
    assert delta.usage("qwen-local", "cost_usd") == 0
    assert delta.metric(names.COST_USD_TOTAL, deployment="qwen-local") == 0


def test_cached_and_reasoning_tokens_are_counted(gw: Gateway) -> None:
    delta = Delta(gw)
    thinking = {"enable_thinking": True}
    with gw.client() as client:
        reply = client.chat.completions.create(model="cloud", messages=HELLO, extra_body=thinking)
        chunks = list(
            client.chat.completions.create(
                model="cloud", messages=HELLO, extra_body=thinking, stream=True, stream_options={"include_usage": True}
            )
        )
    cached = reasoning = 0
    for usage in (reply.usage, chunks[-1].usage):
        assert usage and usage.prompt_tokens_details and usage.completion_tokens_details
        cached += usage.prompt_tokens_details.cached_tokens or 0
        reasoning += usage.completion_tokens_details.reasoning_tokens or 0
    assert cached > 0 and reasoning > 0

    delta.settle("qwen-plus", 2)

    reported = {"deployment": "qwen-plus", "estimated": "false"}
    assert delta.metric(names.TOKENS_TOTAL, **reported, type="cached") == cached
    assert delta.metric(names.TOKENS_TOTAL, **reported, type="reasoning") == reasoning
    assert delta.usage("qwen-plus", "cached_tokens") == cached
    assert delta.usage("qwen-plus", "reasoning_tokens") == reasoning


def test_usage_missing_upstream_is_estimated_and_labelled(gw: Gateway) -> None:
    gw.cloud.inject([{"fault": "no_usage", "count": 2}])
    delta = Delta(gw)
    with gw.client() as client:
        raw = client.chat.completions.with_raw_response.create(model="cloud", messages=HELLO)
        reply = raw.parse()
        chunks = list(
            client.chat.completions.create(
                model="cloud", messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
        )
    assert reply.usage is None and all(c.usage is None for c in chunks)  # the upstream really reported none

    delta.settle("qwen-plus", 2)

    estimated = {"deployment": "qwen-plus", "estimated": "true"}
    assert delta.metric(names.TOKENS_TOTAL, **{**estimated, "estimated": "false"}) == 0
    assert delta.metric(names.TOKENS_TOTAL, **estimated, type="input") > 0
    message = reply.choices[0].message  # qwen3.6-plus thinks by default: its reasoning is output too
    text = ((message.model_extra or {}).get("reasoning_content", "") + (message.content or "")).encode()
    from_body = math.ceil(len(text) / 4)  # the generated text, about four bytes a token
    from_stream = sum(  # about a token an event
        1 for c in chunks if c.choices and (c.choices[0].delta.content or (c.choices[0].delta.model_extra or {})
                                            .get("reasoning_content"))
    )
    assert from_body > 0 and from_stream > 0
    assert delta.metric(names.TOKENS_TOTAL, **estimated, type="output") == from_body + from_stream
    assert delta.usage("qwen-plus", "output_tokens") == from_body + from_stream
    assert float(raw.headers["x-polyroute-cost-usd"]) > 0


def test_stream_usage_is_requested_upstream_and_hidden_from_clients_that_did_not_ask(gw: Gateway) -> None:
    with gw.client() as client:
        asked = list(
            client.chat.completions.create(
                model="local", messages=HELLO, stream=True, stream_options={"include_usage": True}
            )
        )
        delta = Delta(gw)
        plain = list(client.chat.completions.create(model="local", messages=HELLO, stream=True))

    assert asked[-1].usage is not None and asked[-1].choices == []
    assert all(c.usage is None for c in plain)
    assert gw.vllm.stats()["last_body"]["stream_options"] == {"include_usage": True}

    delta.settle("qwen-local", 1)

    reported = {"deployment": "qwen-local", "estimated": "false"}
    assert delta.metric(names.TOKENS_TOTAL, **reported, type="output") == asked[-1].usage.completion_tokens
    assert delta.metric(names.TOKENS_TOTAL, **reported, type="input") == asked[-1].usage.prompt_tokens


def test_first_token_time_and_gateway_overhead_exclude_upstream_time(gw: Gateway) -> None:
    wait = 0.3
    gw.vllm.inject([{"fault": "slow_first_token", "delay": wait, "count": 2}])
    delta = Delta(gw)
    with gw.client() as client:
        client.chat.completions.create(model="local", messages=HELLO)
        list(client.chat.completions.create(model="local", messages=HELLO, stream=True))
    delta.settle("qwen-local", 2)

    ttft = names.TIME_TO_FIRST_TOKEN_SECONDS
    assert delta.metric(f"{ttft}_count", alias="local") == 1  # streams only
    assert delta.metric(f"{ttft}_sum", alias="local") >= wait
    duration = delta.metric(f"{names.REQUEST_DURATION_SECONDS}_sum", alias="local")
    overhead = delta.metric(f"{names.OVERHEAD_SECONDS}_sum")
    assert delta.metric(f"{names.OVERHEAD_SECONDS}_count") == 2
    assert 0 < overhead <= duration - 2 * wait  # both requests waited `wait` on the upstream, not in the gateway


def polyroute_usage(gw: Gateway, *args: str, admin_key: str = "adm") -> subprocess.CompletedProcess[str]:
    """`polyroute usage` with no Redis configured: it asks the gateway at POLYROUTE_HOST:POLYROUTE_PORT."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYROUTE_")}
    env.update(POLYROUTE_HOST=HOST, POLYROUTE_PORT=str(gw.process.port), POLYROUTE_ADMIN_KEY=admin_key)
    command = [sys.executable, "-m", "gateway.cli", "usage", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_polyroute_usage_reports_each_vendor_and_hosting_share(gw: Gateway) -> None:
    delta = Delta(gw)
    with gw.client() as client:
        for alias in ("cloud", "local", "local", "mini"):
            client.chat.completions.create(model=alias, messages=HELLO)
    delta.settle("mini", 1)
    delta.settle("qwen-local", 2)

    done = polyroute_usage(gw, "--json", "--group-by", "vendor,hosting")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == admin_usage(gw, "vendor,hosting")
    vendors, hostings = report["share_by_vendor"], report["share_by_hosting"]
    assert set(vendors) == {"alibaba", "self", "openai"} and set(hostings) == {"cloud", "self_hosted"}
    requests, spend = report["total"]["requests"], report["total"]["cost_usd"]
    for shares in (vendors, hostings):
        assert sum(s["requests"] for s in shares.values()) == requests
        assert sum(s["request_share"] for s in shares.values()) == pytest.approx(1, abs=1e-3)
        assert sum(s["cost_usd"] for s in shares.values()) == pytest.approx(spend, abs=1e-6)
    for group in report["groups"]:
        share = vendors[group["vendor"]]
        assert share["request_share"] == pytest.approx(share["requests"] / requests, abs=1e-4)
    self_hosted = sum(g["requests"] for g in report["groups"] if g["hosting"] == "self_hosted")
    assert hostings["self_hosted"]["requests"] == self_hosted > 0

    table = polyroute_usage(gw, "--group-by", "vendor")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].split() == [
        "vendor",
        "requests",
        "errors",
        "fallbacks",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "cost_usd",
    ]
    by_vendor = {line.split()[0]: line.split() for line in lines[2:] if not line.startswith("share by")}
    assert set(by_vendor) == {"alibaba", "self", "openai", "TOTAL"}
    assert int(by_vendor["TOTAL"][1]) == requests
    assert float(by_vendor["TOTAL"][-1]) == pytest.approx(spend, abs=1e-6)
    assert any(line.startswith("share by vendor: ") and "openai" in line for line in lines)
    assert any(line.startswith("share by hosting: ") and "self_hosted" in line for line in lines)


def test_polyroute_usage_says_why_the_gateway_refused(gw: Gateway) -> None:
    done = polyroute_usage(gw, admin_key="wrong")

    assert done.returncode == 1
    assert "401" in done.stderr and "Traceback" not in done.stderr
    assert "wrong" not in done.stderr
