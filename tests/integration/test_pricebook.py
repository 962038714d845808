"""The price book as a user meets it: cost in the price's currency on /metrics, the price entry in /admin/usage,
`polyroute what-if` against a gateway that served traffic, and model retirement in `policy check` and /metrics.

A gateway (in-process state) in front of a simulated Model Studio (vendor alibaba) and a simulated vLLM (vendor
self) serves requests from the official openai client; the CLI then runs as a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.observability import names
from tests.support.processes import (
    GatewayProcess,
    RedisServer,
    Upstream,
    have_redis,
    start_gateway,
    start_redis,
    start_simulated,
)
from tests.support.prometheus import scrape, total

TODAY = datetime.now(UTC).date()
POLICY = """
version: 1
providers:
  modelstudio: {{type: openai, base_url: {cloud}, hosting: cloud, jurisdiction: cn, vendor: alibaba}}
  vllm: {{type: openai, base_url: {vllm}, hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  qwen-plus:
    provider: modelstudio
    model: qwen3.6-plus
    context_window: 1000000
    retires_on: {retires}
    replaced_by: qwen-local
    price:
      - {{input_per_mtok: 2, output_per_mtok: 12, currency: CNY}}
      - {{effective_from: {future}, input_per_mtok: 20, output_per_mtok: 120, currency: CNY}}
  qwen-local: {{provider: vllm, model: Qwen/Qwen3-32B, context_window: 32768,
               price: {{input_per_mtok: 0.1, output_per_mtok: 0.2}}}}
aliases:
  coder: {{targets: [qwen-plus, qwen-local]}}
rules:
  - name: pii-stays-home
    when: {{data_class: [pii]}}
    require: {{hosting: self_hosted}}
fallback:
  retries: {{attempts: 0, backoff: 10ms, max_backoff: 50ms}}
"""
# The same deployments, Model Studio's international tiered USD price, and `coder` moved home first.
WHAT_IF = """
version: 1
providers:
  modelstudio: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: cloud, jurisdiction: sg, vendor: alibaba}
  vllm: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: self_hosted, jurisdiction: onprem, vendor: self}
deployments:
  qwen-plus:
    provider: modelstudio
    model: qwen3.6-plus
    price:
      tiers:
        - {max_input_tokens: 256000, input_per_mtok: 0.5, output_per_mtok: 3.0, cached_input_per_mtok: 0.05}
        - {input_per_mtok: 2.0, output_per_mtok: 6.0, cached_input_per_mtok: 0.2}
  qwen-local: {provider: vllm, model: Qwen/Qwen3-32B, context_window: 32768,
               price: {input_per_mtok: 0.1, output_per_mtok: 0.2}}
aliases:
  coder: {targets: TARGETS}
"""
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
PII = {"x-polyroute-data-class": "pii"}
NO_THINKING = {"enable_thinking": False}
CLOUD_REQUESTS, LOCAL_REQUESTS = 4, 2
WAIT_S = 30.0


@dataclass
class Served:
    process: GatewayProcess
    cloud: Upstream
    vllm: Upstream
    policy: Path
    redis: RedisServer | None = None

    def admin(self, path: str) -> Any:
        request = urllib.request.Request(self.process.url(path), headers={"authorization": "Bearer adm"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())


def policy_text(cloud: str, vllm: str, retires: str) -> str:
    future = (TODAY + timedelta(days=365)).isoformat()
    return POLICY.format(cloud=cloud, vllm=vllm, retires=retires, future=future)


@pytest.fixture(scope="module", params=["memory", "redis"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if request.param == "redis" and not have_redis():
        pytest.skip("redis-server is not installed")
    cloud = start_simulated("modelstudio", name="sim-cloud")
    vllm = start_simulated("vllm", name="sim-vllm")
    redis = start_redis() if request.param == "redis" else None
    policy = tmp_path_factory.mktemp("pricebook") / "policy.yaml"
    policy.write_text(policy_text(cloud.base_url, vllm.base_url, (TODAY + timedelta(days=20)).isoformat()))
    env = {"POLYROUTE_ADMIN_KEY": "adm", "POLYROUTE_USD_PER_CNY": "0.14"}
    if redis is not None:
        env["POLYROUTE_REDIS_URL"] = redis.url
    process = start_gateway(policy, env=env)
    try:
        gateway = Served(process, cloud, vllm, policy, redis)
        with openai.OpenAI(base_url=process.url("/v1"), api_key="any", max_retries=0) as client:
            for _ in range(CLOUD_REQUESTS):
                reply = client.chat.completions.with_raw_response.create(
                    model="coder", messages=HELLO, extra_body=NO_THINKING
                )
                assert reply.headers["x-polyroute-deployment"] == "qwen-plus"
            for _ in range(LOCAL_REQUESTS):
                reply = client.chat.completions.with_raw_response.create(model="coder", messages=HELLO,
                                                                         extra_headers=PII)
                assert reply.headers["x-polyroute-deployment"] == "qwen-local"
        deadline = time.monotonic() + WAIT_S
        while len(gateway.admin("/admin/recorded?days=1")["facts"]["rows"]) < 2:
            assert time.monotonic() < deadline, "usage records did not arrive"
            time.sleep(0.05)
        yield gateway
    finally:
        process.stop()
        for other in (cloud, vllm, *([redis] if redis is not None else [])):
            other.stop()


def polyroute(*args: str, redis_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYROUTE_")}
    env["POLYROUTE_ADMIN_KEY"] = "adm"
    if redis_url is not None:
        env["POLYROUTE_REDIS_URL"] = redis_url
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


def usage_groups(served: Served) -> dict[str, dict[str, Any]]:
    report = served.admin("/admin/usage?days=1&group_by=deployment")
    return {g["deployment"]: g for g in report["groups"]}


def test_a_cny_price_is_exported_in_cny_beside_usd_and_usage_names_the_entry(served: Served) -> None:
    cloud = usage_groups(served)["qwen-plus"]
    cny = (cloud["input_tokens"] * 2 + cloud["output_tokens"] * 12) / 1e6  # the first entry: the second is a year off
    samples = scrape(served.process.url("/metrics"))
    assert total(samples, names.COST_TOTAL, deployment="qwen-plus", currency="CNY") == pytest.approx(cny, rel=1e-9)
    assert total(samples, names.COST_USD_TOTAL, deployment="qwen-plus") == pytest.approx(cny * 0.14, rel=1e-9)
    assert total(samples, names.COST_TOTAL, deployment="qwen-local", currency="USD") > 0
    assert list(cloud["cost_usd_by_price"]) == ["policy[0]"]
    assert cloud["cost_usd_by_price"]["policy[0]"] == cloud["cost_usd"]  # both summed in micro-USD per request


def test_what_if_prices_recorded_usage_under_another_policy_and_replays_its_routing(
    served: Served, tmp_path: Path
) -> None:
    groups = usage_groups(served)
    cloud, local = groups["qwen-plus"], groups["qwen-local"]
    moved_home = tmp_path / "home.yaml"
    moved_home.write_text(WHAT_IF.replace("TARGETS", "[qwen-local, qwen-plus]"))

    # from the gateway's /admin/recorded, or with Redis straight from the shared store
    source = ["--url", served.process.url("")] if served.redis is None else []
    redis_url = None if served.redis is None else served.redis.url
    done = polyroute("what-if", "--policy", str(moved_home), "--days", "1", "--json", *source, redis_url=redis_url)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    prices = report["prices"]["aliases"]["coder"]
    recorded = cloud["cost_usd"] + local["cost_usd"]
    assert prices["requests"] == CLOUD_REQUESTS + LOCAL_REQUESTS
    assert prices["then_usd"] == pytest.approx(recorded, abs=1e-6)
    # short prompts: the first tier, in USD; the local deployment's price did not change
    now = (cloud["input_tokens"] * 0.5 + cloud["output_tokens"] * 3.0) / 1e6 + local["cost_usd"]
    assert prices["now_usd"] == pytest.approx(now, abs=1e-6)
    vendors = report["prices"]["vendors"]
    assert vendors["alibaba"]["then_usd"] == pytest.approx(cloud["cost_usd"], abs=1e-6)

    routing = report["routing"]["aliases"]["coder"]
    assert routing["served_by_now"] == {"qwen-local": CLOUD_REQUESTS + LOCAL_REQUESTS}
    assert routing["refused_requests"] == 0
    tokens_in = cloud["input_tokens"] + local["input_tokens"]
    tokens_out = cloud["output_tokens"] + local["output_tokens"]
    assert routing["now_usd"] == pytest.approx((tokens_in * 0.1 + tokens_out * 0.2) / 1e6, abs=1e-6)
    assert report["routing"]["vendors"]["alibaba"]["now_usd"] == 0
    assert report["routing"]["vendors"]["self"]["requests"] == CLOUD_REQUESTS + LOCAL_REQUESTS

    text = polyroute("what-if", "--policy", str(moved_home), "--days", "1", "--url", served.process.url(""))
    assert text.returncode == 0, text.stderr
    assert "at its prices and with its routing" in text.stdout
    assert f"coder: ${prices['then_usd']:.6f} -> ${prices['now_usd']:.6f}" in text.stdout


def test_what_if_refuses_a_bad_policy_and_a_bad_days_value(served: Served, tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(WHAT_IF.replace("TARGETS", "[qwen-lcoal]"))
    done = polyroute("what-if", "--policy", str(broken), "--url", served.process.url(""))
    assert done.returncode == 2
    assert "aliases.coder.targets[0]: unknown deployment 'qwen-lcoal'" in done.stderr
    ok = tmp_path / "ok.yaml"
    ok.write_text(WHAT_IF.replace("TARGETS", "[qwen-plus]"))
    done = polyroute("what-if", "--policy", str(ok), "--days", "0", "--url", served.process.url(""))
    assert done.returncode == 1 and "days must be between 1 and" in done.stderr


def test_days_to_retirement_is_exported(served: Served) -> None:
    samples = scrape(served.process.url("/metrics"))
    assert total(samples, names.DEPLOYMENT_DAYS_TO_RETIREMENT, deployment="qwen-plus") == 20


@pytest.mark.parametrize(
    ("days", "status", "says"),
    [
        (45, 0, None),
        (10, 0, "warning: deployments.qwen-plus: qwen3.6-plus retires on {date} (10 days); move its traffic to "
                "'qwen-local'"),
        (0, 1, "error: deployments.qwen-plus: qwen3.6-plus retired on {date}; move its traffic to 'qwen-local'"),
    ],
)
def test_policy_check_warns_within_30_days_of_retirement_and_fails_from_the_day(
    tmp_path: Path, days: int, status: int, says: str | None
) -> None:
    when = (TODAY + timedelta(days=days)).isoformat()
    path = tmp_path / "policy.yaml"
    path.write_text(policy_text("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", when))
    done = polyroute("policy", "check", str(path))
    assert done.returncode == status, done.stdout + done.stderr
    if says is None:
        assert "retire" not in done.stderr
    else:
        assert says.format(date=when) in done.stderr
    assert ("FAILED" in done.stdout) is bool(status)
