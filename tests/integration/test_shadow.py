"""Shadow evaluation as a user sees it: a real gateway before simulated upstreams, driven by the official openai client.

The alias `coder` answers from a simulated Model Studio (cloud) and shadows every request (`sample: 1`) to a
simulated vLLM (self-hosted) and a second simulated cloud; a pii rule keeps pii requests self-hosted. Clients get
the primary's answer unchanged and without waiting for the copies; pii requests are never copied to the cloud;
`polyroute shadow report` reports what was compared and dropped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.observability import names
from tests.support.processes import GatewayProcess, Upstream, start_gateway, start_simulated
from tests.support.prometheus import scrape, total

POLICY = """
version: 1
providers:
  modelstudio: {{type: openai, base_url: {cloud}, hosting: cloud, jurisdiction: sg, vendor: alibaba}}
  other-cloud: {{type: openai, base_url: {cloud2}, hosting: cloud, jurisdiction: us, vendor: other}}
  vllm: {{type: openai, base_url: {vllm}, hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  qwen-plus: {{provider: modelstudio, model: qwen3.6-plus, price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
  qwen-cloud2: {{provider: other-cloud, model: qwen-other, price: {{input_per_mtok: 1, output_per_mtok: 2}}}}
  qwen-local: {{provider: vllm, model: Qwen/Qwen3-32B, price: {{input_per_mtok: 0.1, output_per_mtok: 0.1}}}}
aliases:
  plain: {{targets: [qwen-plus, qwen-local]}}
  coder: {{targets: [qwen-plus, qwen-local],
          shadow: {{targets: [qwen-local, qwen-cloud2], sample: 1, budget_usd_per_day: 5}}}}
  tight: {{targets: [qwen-plus], shadow: {{targets: [qwen-local], sample: 1, max_concurrency: 1}}}}
  broke: {{targets: [qwen-plus], shadow: {{targets: [qwen-cloud2], sample: 1, budget_usd_per_day: 0}}}}
rules:
  - name: pii-stays-home
    when: {{data_class: [pii]}}
    require: {{hosting: self_hosted}}
sensitive_data_classes: [pii]
fallback:
  retries: {{attempts: 0, backoff: 10ms, max_backoff: 50ms}}
  timeouts: {{connect: 2s, first_token: 20s, total: 60s}}
"""
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "name three prime numbers"}]
PII = {"x-polyroute-data-class": "pii"}
WAIT_S = 30.0
SLOW_S = 8.0  # the slow shadow target's delay: far longer than a request and a report take


@dataclass
class Setup:
    process: GatewayProcess
    cloud: Upstream
    cloud2: Upstream
    vllm: Upstream

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.process.url("/v1"), api_key="any", max_retries=0)

    def report(self) -> dict[str, Any]:
        request = urllib.request.Request(self.process.url("/admin/shadow"), headers={"authorization": "Bearer adm"})
        with urllib.request.urlopen(request, timeout=10) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data

    def pair(self, alias: str, target: str) -> dict[str, Any]:
        found: dict[str, Any] = self.report()["aliases"].get(alias, {}).get(target, {"results": {}, "compared": 0})
        return found

    def wait_for(self, what: str, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + WAIT_S
        while not done():
            if time.monotonic() > deadline:
                pytest.fail(f"{what} did not happen within {WAIT_S:.0f}s")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    cloud = start_simulated("modelstudio", name="sim-cloud")
    cloud2 = start_simulated("modelstudio", name="sim-cloud2")
    vllm = start_simulated("vllm", name="sim-vllm")
    policy: Path = tmp_path_factory.mktemp("shadow") / "policy.yaml"
    policy.write_text(POLICY.format(cloud=cloud.base_url, cloud2=cloud2.base_url, vllm=vllm.base_url))
    process = start_gateway(policy, env={"POLYROUTE_ADMIN_KEY": "adm"})
    try:
        yield Setup(process, cloud, cloud2, vllm)
    finally:
        process.stop()
        for upstream in (cloud, cloud2, vllm):
            upstream.stop()


def test_a_sampled_request_is_answered_as_without_shadowing_and_before_its_slow_copy(gw: Setup) -> None:
    with gw.client() as client:
        unshadowed = client.chat.completions.with_raw_response.create(model="plain", messages=HELLO)
        gw.vllm.inject([{"fault": "delay", "delay": SLOW_S, "count": 1}])
        shadowed = client.chat.completions.with_raw_response.create(model="coder", messages=HELLO)
    # The client has its answer; the slow copy to qwen-local arrives at the simulator and has not come back yet.
    gw.wait_for("the copy to arrive", lambda: gw.vllm.stats()["faults_served"].get("delay", 0) == 1)
    assert gw.pair("coder", "qwen-local")["compared"] == 0
    assert shadowed.headers["x-polyroute-deployment"] == unshadowed.headers["x-polyroute-deployment"] == "qwen-plus"
    assert shadowed.parse().choices[0].message.content == unshadowed.parse().choices[0].message.content
    assert shadowed.parse().usage == unshadowed.parse().usage
    gw.wait_for("the slow copy to be compared", lambda: gw.pair("coder", "qwen-local")["compared"] == 1)
    copy = gw.vllm.stats()["last_body"]
    assert copy["model"] == "Qwen/Qwen3-32B" and copy["stream"] is False


def test_a_stream_is_copied_as_a_non_stream_request_and_compared(gw: Setup) -> None:
    gw.wait_for("the earlier copies", lambda: gw.pair("coder", "qwen-cloud2")["compared"] >= 1)
    before = gw.pair("coder", "qwen-cloud2")["compared"]
    with gw.client() as client:
        stream = client.chat.completions.create(model="coder", messages=HELLO, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    gw.wait_for("the stream's copy", lambda: gw.pair("coder", "qwen-cloud2")["compared"] == before + 1)
    copy = gw.cloud2.stats()["last_body"]
    assert copy["stream"] is False and "stream_options" not in copy
    pair = gw.pair("coder", "qwen-cloud2")
    assert 0 < pair["agreement"]["similarity"] <= 1


def test_pii_requests_are_never_copied_to_a_cloud_target(gw: Setup) -> None:
    gw.wait_for("the earlier copies", lambda: gw.pair("coder", "qwen-local")["compared"] >= 2)
    cloud2_before = gw.cloud2.stats()["total_requests"]
    excluded_before = gw.pair("coder", "qwen-cloud2")["results"].get("excluded", 0)
    with gw.client() as client:
        for _ in range(5):
            reply = client.chat.completions.with_raw_response.create(model="coder", messages=HELLO, extra_headers=PII)
            assert reply.headers["x-polyroute-deployment"] == "qwen-local"
    gw.wait_for("the exclusions", lambda: gw.pair("coder", "qwen-cloud2")["results"]["excluded"] == excluded_before + 5)
    assert gw.cloud2.stats()["total_requests"] == cloud2_before


def test_copies_over_the_budget_or_the_concurrency_cap_are_dropped_and_counted(gw: Setup) -> None:
    with gw.client() as client:
        for _ in range(3):
            client.chat.completions.create(model="broke", messages=HELLO)
        # `tight` allows one copy at a time: while a slow copy to qwen-local runs, the next ones are dropped.
        served = gw.vllm.stats()["faults_served"].get("delay", 0)
        gw.vllm.inject([{"fault": "delay", "delay": SLOW_S, "count": 1}])
        client.chat.completions.create(model="tight", messages=HELLO)
        gw.wait_for("the slow copy to arrive", lambda: gw.vllm.stats()["faults_served"].get("delay", 0) > served)
        for _ in range(2):
            client.chat.completions.create(model="tight", messages=HELLO)
    assert gw.pair("broke", "qwen-cloud2")["results"]["dropped_budget"] == 3
    assert gw.pair("tight", "qwen-local")["results"]["dropped_concurrency"] == 2
    metrics = scrape(gw.process.url("/metrics"))
    shadow = names.SHADOW_REQUESTS_TOTAL
    assert total(metrics, shadow, alias="broke", target="qwen-cloud2", result="dropped_budget") == 3
    assert total(metrics, shadow, alias="tight", target="qwen-local", result="dropped_concurrency") == 2
    assert total(metrics, shadow, alias="coder", target="qwen-cloud2", result="excluded") == 5


def test_polyroute_shadow_report_prints_the_numbers(gw: Setup) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYROUTE_")}
    env["POLYROUTE_ADMIN_KEY"] = "adm"
    command = [sys.executable, "-m", "gateway.cli", "shadow", "report", "--url", gw.process.url(""), "--json"]
    done = subprocess.run([*command, "--alias", "broke"], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert list(report["aliases"]) == ["broke"]
    broke = report["aliases"]["broke"]["qwen-cloud2"]
    assert (broke["results"]["dropped_budget"], broke["compared"], broke["passed"]) == (3, 0, False)
    assert report["thresholds"] == {"min_pairs": 50, "min_similarity": 0.9}
    text = subprocess.run(command[:-1], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert text.returncode == 0, text.stderr
    assert "alias coder" in text.stdout and "qwen-cloud2: not passed" in text.stdout
    unknown = subprocess.run([*command, "--alias", "nope"], env=env, capture_output=True, text=True, timeout=60,
                             check=False)
    assert unknown.returncode == 1 and "'nope' is not an alias of the policy" in unknown.stderr
