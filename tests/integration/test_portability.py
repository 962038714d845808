"""Lock-in report and vendor drill as a user runs them: mixed traffic through a real gateway, then the CLI commands.

One gateway (in-process state, then Redis) in front of a simulated Model Studio (vendor alibaba) and a simulated vLLM
(vendor self) gets traffic from the official openai client: tenants, a pii data class, a prompt too long for the
self-hosted window, and Model Studio's `enable_thinking`. `polyroute lockin` and `polyroute drill` then run as
processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.observability import names
from tests.support.processes import (
    GatewayProcess,
    Upstream,
    have_redis,
    start_gateway,
    start_redis,
    start_simulated,
)
from tests.support.prometheus import scrape, total

POLICY = """
version: 1
providers:
  modelstudio: {{type: openai, base_url: {cloud}, hosting: cloud, jurisdiction: sg, vendor: alibaba}}
  vllm: {{type: openai, base_url: {vllm}, hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  qwen-plus: {{provider: modelstudio, model: qwen3.6-plus, context_window: 1000000,
              price: {{input_per_mtok: 0.8, output_per_mtok: 4.8, currency: CNY}}}}
  qwen-local: {{provider: vllm, model: Qwen/Qwen3-32B, context_window: 32768,
               price: {{gpu_hour: 2.5, tokens_per_second: 1200}}}}
aliases:
  coder: {{targets: [qwen-plus, qwen-local], critical: true}}
  chat: {{targets: [qwen-plus]}}
rules:
  - name: pii-stays-home
    when: {{data_class: [pii]}}
    require: {{hosting: self_hosted}}
tenants:
  team-a: {{api_keys: [key-team-a]}}
  team-b: {{api_keys: [key-team-b]}}
fallback:
  retries: {{attempts: 0, backoff: 10ms, max_backoff: 50ms}}
  timeouts: {{connect: 2s, first_token: 20s, total: 60s}}
"""
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
LONG: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x" * 140_000}]  # ~35,000 tokens > 32,768
PII = {"x-polyroute-data-class": "pii"}
THINKING_OFF = {"enable_thinking": False}
WAIT_S = 30.0


@dataclass
class Gateway:
    process: GatewayProcess
    cloud: Upstream
    vllm: Upstream

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.process.url("/v1"), api_key=key, max_retries=0)

    def admin(self, path: str) -> Any:
        request = urllib.request.Request(self.process.url(path), headers={"authorization": "Bearer adm"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module", params=["memory", "redis"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    if request.param == "redis" and not have_redis():
        pytest.skip("redis-server is not installed")
    cloud = start_simulated("modelstudio", name="sim-cloud")
    vllm = start_simulated("vllm", name="sim-vllm")
    redis = start_redis() if request.param == "redis" else None
    policy: Path = tmp_path_factory.mktemp("portability") / "policy.yaml"
    policy.write_text(POLICY.format(cloud=cloud.base_url, vllm=vllm.base_url))
    env = {"POLYROUTE_ADMIN_KEY": "adm", "POLYROUTE_LOCKIN_REFRESH_SECONDS": "0.2"}
    if redis is not None:
        env["POLYROUTE_REDIS_URL"] = redis.url
    process = start_gateway(policy, env=env)
    try:
        gateway = Gateway(process, cloud, vllm)
        send_mixed_traffic(gateway)
        yield gateway
    finally:
        process.stop()
        for other in (cloud, vllm, *([redis] if redis is not None else [])):
            other.stop()


def send_mixed_traffic(gw: Gateway) -> None:
    with gw.client("key-team-a") as a, gw.client("key-team-b") as b:
        a.chat.completions.create(model="coder", messages=HELLO)
        for _ in range(2):  # Model Studio's own parameter: application code that would need changing
            a.chat.completions.create(model="coder", messages=HELLO, extra_body=THINKING_OFF)
        for _ in range(2):
            reply = a.chat.completions.with_raw_response.create(model="coder", messages=HELLO, extra_headers=PII)
            assert reply.headers["x-polyroute-deployment"] == "qwen-local"
        stream = a.chat.completions.create(model="coder", messages=LONG, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        for _ in range(2):
            b.chat.completions.create(model="chat", messages=HELLO, extra_body=THINKING_OFF)
        with pytest.raises(openai.BadRequestError):  # refused before any upstream: no usage, no routing fact
            b.chat.completions.create(model="chat", messages=HELLO, extra_headers=PII)
    deadline = time.monotonic() + WAIT_S
    while gw.admin("/admin/lockin?days=1")["facts"]["requests"] < 8:
        if time.monotonic() > deadline:
            pytest.fail(f"routing facts did not arrive within {WAIT_S:.0f}s")
        time.sleep(0.05)


def polyroute(gw: Gateway, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYROUTE_")}
    env["POLYROUTE_ADMIN_KEY"] = "adm"
    command = [sys.executable, "-m", "gateway.cli", *args, "--url", gw.process.url("")]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_polyroute_lockin_reports_shares_concentration_and_what_each_alias_may_do(gw: Gateway) -> None:
    done = polyroute(gw, "lockin", "--days", "1", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    vendor = report["share"]["vendor"]
    assert (vendor["alibaba"]["requests"], vendor["self"]["requests"]) == (6, 2)
    assert (vendor["alibaba"]["request_share"], vendor["self"]["request_share"]) == (0.75, 0.25)
    assert report["share"]["hosting"]["self_hosted"]["requests"] == 2
    assert report["share"]["jurisdiction"]["sg"]["request_share"] == 0.75
    usage = gw.admin("/admin/usage?days=1&group_by=vendor")
    tokens = {g["vendor"]: g["input_tokens"] + g["output_tokens"] for g in usage["groups"]}
    total_tokens = sum(tokens.values())
    assert report["hhi"]["tokens"] == round(sum((100 * t / total_tokens) ** 2 for t in tokens.values()), 1)
    assert 5000 < report["hhi"]["tokens"] < 10_000 and report["hhi"]["spend"] > 0

    coder, chat = report["aliases"]["coder"], report["aliases"]["chat"]
    assert coder["critical"] is True and coder["dominant_vendor"] == "alibaba"
    assert coder["served_by_vendor"] == {"alibaba": 4, "self": 2}
    # Only the long prompt has no target outside alibaba; the pii requests already run self-hosted.
    assert (coder["requests"], coder["stranded_requests"], coder["stranded_share"]) == (6, 1, 0.1667)
    assert coder["self_hosted_share"] == 0.8333
    assert coder["provider_params"]["params"] == {
        "enable_thinking": {"vendor": "alibaba", "requests": 2, "share": 0.3333}
    }
    assert (chat["requests"], chat["stranded_share"], chat["other_vendor_allowed"]) == (2, 1.0, False)
    assert chat["provider_params"]["share"] == 1.0

    text = polyroute(gw, "lockin", "--days", "1")
    assert text.returncode == 0, text.stderr
    assert "chat: 2 requests, dominant vendor alibaba" in text.stdout
    assert "enable_thinking (alibaba, 33.3%)" in text.stdout


def test_polyroute_drill_without_alibaba_names_refusals_and_fails_for_the_critical_alias(gw: Gateway) -> None:
    done = polyroute(gw, "drill", "--without", "alibaba", "--days", "1", "--json")
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert report["removed_deployments"] == ["qwen-plus"]
    assert (report["requests"], report["refused"]) == (8, 3)
    coder, chat = report["aliases"]["coder"], report["aliases"]["chat"]
    assert coder["refused_by"] == {"context window": 1}
    assert coder["served_by_before"] == {"qwen-local": 2, "qwen-plus": 4}
    assert coder["served_by_after"] == {"qwen-local": 5}
    assert coder["cost"]["requests"] == 5 and coder["cost"]["change_usd"] != 0
    assert coder["latency"]["requests"] == 5 and coder["latency"]["mean_after_s"] > 0
    assert (coder["failed"], chat["failed"]) == (True, False)  # chat loses everything but is not critical
    assert chat["refused_by"] == {"no target left": 2}
    assert report["failed_aliases"] == ["coder"]

    tolerant = polyroute(gw, "drill", "--without", "alibaba", "--days", "1", "--max-stranded", "0.2")
    assert tolerant.returncode == 0, tolerant.stderr
    assert "refused by context window: 1" in tolerant.stdout and "drill passed" in tolerant.stdout


def test_a_drill_of_an_unknown_vendor_says_which_vendors_exist(gw: Gateway) -> None:
    done = polyroute(gw, "drill", "--without", "alibba", "--days", "1")
    assert done.returncode == 1
    assert "no provider in the policy has vendor 'alibba'; its vendors are ['alibaba', 'self']" in done.stderr


def test_lockin_needs_the_admin_key(gw: Gateway) -> None:
    request = urllib.request.Request(gw.process.url("/admin/lockin"), headers={"authorization": "Bearer key-team-a"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    with refused.value as error:
        assert error.code == 401
        assert json.loads(error.read())["error"]["type"] == "authentication_error"


def test_a_bad_days_value_is_a_400_naming_the_parameter(gw: Gateway) -> None:
    request = urllib.request.Request(gw.process.url("/admin/lockin?days=99"), headers={"authorization": "Bearer adm"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    with refused.value as error:
        assert error.code == 400
        body = json.loads(error.read())["error"]
        assert body["param"] == "days" and "between 1 and 35" in body["message"]


def test_lockin_gauges_are_exported(gw: Gateway) -> None:
    deadline = time.monotonic() + WAIT_S
    while True:
        metrics = scrape(gw.process.url("/metrics"))
        if total(metrics, names.ALIAS_STRANDED_SHARE, alias="chat") == 1.0:
            break
        if time.monotonic() > deadline:
            pytest.fail("the lock-in gauges were not refreshed")
        time.sleep(0.1)
    assert total(metrics, names.ALIAS_PORTABLE, alias="chat") == 0.0
    assert total(metrics, names.ALIAS_STRANDED_SHARE, alias="coder") == pytest.approx(0.1667)
    assert total(metrics, names.VENDOR_SHARE, by="requests", vendor="alibaba") == 0.75
    assert total(metrics, names.VENDOR_HHI, by="spend") > 0
