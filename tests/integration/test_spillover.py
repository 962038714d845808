"""Own GPUs first: a gateway reads a simulated vLLM's own /metrics and spills to the cloud while other clients fill it.

Real processes on loopback: the gateway, two simulated vLLM servers that serve vLLM's metric names with values
following the requests they hold, and a simulated Model Studio as the cloud tier.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.processes import GatewayProcess, Upstream, free_port, start_gateway, start_simulated
from tests.support.prometheus import scrape, total

ADMIN_KEY = "adm-spill-secret"
CLOUD_KEY = "sk-spill-cloud-secret"
MODEL = "Qwen/Qwen3-32B"
HOLD_S = 3.0  # how long the other clients' requests occupy the engine
MARKS = "high: {{queue: 1}}, low: {{queue: 0}}, dwell: 1s"

POLICY = f"""
version: 1
providers:
  gpu-a: {{{{type: openai, base_url: "{{gpu_a}}", hosting: self_hosted, jurisdiction: onprem, vendor: self,
           engine: vllm, poll: 100ms}}}}
  gpu-b: {{{{type: openai, base_url: "{{gpu_b}}", hosting: self_hosted, jurisdiction: onprem, vendor: self,
           engine: vllm, poll: 100ms}}}}
  gpu-c: {{{{type: openai, base_url: "{{gpu_c}}", hosting: self_hosted, jurisdiction: onprem, vendor: self,
           engine: vllm, poll: 2s}}}}
  gone:  {{{{type: openai, base_url: "http://127.0.0.1:{{dead}}/v1", hosting: self_hosted, jurisdiction: onprem,
           vendor: self, engine: sglang, poll: 100ms}}}}
  cloud: {{{{type: openai, base_url: "{{cloud}}", api_key: "{CLOUD_KEY}", hosting: cloud, jurisdiction: sg,
           vendor: alibaba}}}}
deployments:
  local:   {{{{provider: gpu-a, model: "{MODEL}"}}}}
  local-b: {{{{provider: gpu-b, model: "{MODEL}"}}}}
  silent:  {{{{provider: gone, model: "{MODEL}"}}}}
  burst-local: {{{{provider: gpu-c, model: "{MODEL}"}}}}
  plus:    {{{{provider: cloud, model: qwen3.6-plus}}}}
aliases:
  chat:    {{{{targets: [local, plus], strategy: spillover, spillover: {{{{{MARKS}}}}}}}}}
  strict:  {{{{targets: [local, plus], strategy: spillover, on_saturation: reject, spillover: {{{{{MARKS}}}}}}}}}
  waiting: {{{{targets: [local, plus], strategy: spillover, spillover: {{{{{MARKS}, max_wait: 300ms}}}}}}}}
  pair:    {{{{targets: [local, local-b], strategy: spillover}}}}
  dark:    {{{{targets: [silent, plus], strategy: spillover}}}}
  burst:   {{{{targets: [burst-local, plus], strategy: spillover,
             spillover: {{{{high: {{{{queue: 0}}}}, low: {{{{queue: 0}}}}, dwell: 1s}}}}}}}}
rules:
  - name: pii-stays-home
    when: {{{{data_class: [pii]}}}}
    require: {{{{hosting: self_hosted}}}}
fallback:
  retries: {{{{attempts: 0}}}}
"""
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


@dataclass
class Spill:
    gateway: GatewayProcess
    gpu: Upstream
    gpu_b: Upstream
    gpu_c: Upstream
    cloud: Upstream

    def client(self, **kw: object) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.url("/v1"), api_key="any", max_retries=0, **kw)  # type: ignore[arg-type]

    def deployment(self, alias: str, **kw: object) -> str:
        with self.client() as client:
            raw = client.chat.completions.with_raw_response.create(model=alias, messages=HELLO, **kw)  # type: ignore[call-overload]
        name: str = raw.headers["x-polyroute-deployment"]
        return name

    def metric(self, name: str, **labels: str) -> float:
        return total(scrape(self.gateway.url("/metrics")), name, **labels)

    def explain(self, alias: str) -> list[str]:
        body = json.dumps({"model": alias, "messages": HELLO}).encode()
        request = urllib.request.Request(
            self.gateway.url("/admin/routes/explain"),
            data=body,
            headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            trace: list[str] = json.loads(response.read())["trace"]
        return trace


@pytest.fixture(scope="module")
def spill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spill]:
    gpu = start_simulated("vllm", name="sim-gpu-a", models=[MODEL], chunks=2, engine_metrics="vllm", slots=1)
    gpu_b = start_simulated("vllm", name="sim-gpu-b", models=[MODEL], chunks=2, engine_metrics="vllm", slots=1)
    gpu_c = start_simulated("vllm", name="sim-gpu-c", models=[MODEL], chunks=2, engine_metrics="vllm", slots=2)
    cloud = start_simulated("modelstudio", name="sim-cloud", api_key=CLOUD_KEY, chunks=2)
    path: Path = tmp_path_factory.mktemp("spill") / "policy.yaml"
    text = POLICY.format(
        gpu_a=gpu.base_url, gpu_b=gpu_b.base_url, gpu_c=gpu_c.base_url, cloud=cloud.base_url, dead=free_port()
    )
    path.write_text(text)
    gateway = start_gateway(path, env={"POLYROUTE_ADMIN_KEY": ADMIN_KEY})
    try:
        yield Spill(gateway, gpu, gpu_b, gpu_c, cloud)
    finally:
        for process in (gateway, gpu, gpu_b, gpu_c, cloud):
            process.stop()


def until(condition: Callable[[], bool], what: str, limit_s: float = 15.0) -> None:
    """Wait (bounded) for something the gateway learns from its pollers; never a timing assert."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit_s:.0f}s: {what}")
        time.sleep(0.05)


def other_clients(upstream: Upstream, count: int) -> concurrent.futures.Future[list[int]]:
    """`count` slow requests sent straight to the engine, as other applications sharing the GPU server would."""
    body = json.dumps({"model": MODEL, "messages": HELLO}).encode()

    def one(_: int) -> int:
        request = urllib.request.Request(
            upstream.base_url + "/chat/completions",
            data=body,
            headers={"Content-Type": "application/json", "x-sim-fault": f"slow_first_token;delay={HOLD_S}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            status: int = response.status
            return status

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=count)
    sent = [pool.submit(one, i) for i in range(count)]
    pool.shutdown(wait=False)
    gather = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    done = gather.submit(lambda: [f.result() for f in sent])
    gather.shutdown(wait=False)
    return done


def test_the_gateway_spills_to_the_cloud_while_the_engine_queues_and_comes_back_after(spill: Spill) -> None:
    until(lambda: spill.metric("polyroute_engine_signal_fallback", deployment="local") == 0.0, "first engine read")
    assert spill.deployment("chat") == "local"
    held = other_clients(spill.gpu, 4)  # one slot: one runs, three wait; polyroute itself sends nothing
    until(lambda: spill.metric("polyroute_engine_queue", deployment="local") == 3.0, "the engine's queue is read")
    assert spill.metric("polyroute_engine_running", deployment="local") == 1.0
    assert spill.metric("polyroute_engine_kv_usage", deployment="local") == 1.0
    until(lambda: spill.metric("polyroute_spill_active", alias="chat") == 1.0, "the alias spills")
    assert spill.deployment("chat") == "plus"
    assert spill.metric("polyroute_spills_total", alias="chat", from_tier="0", to_tier="1") == 1.0
    trace = spill.explain("chat")
    assert "spillover: active tier 1, tiers above high: 0, under low: none" in trace
    assert any(line.startswith("  tier 0 local: queue=3 running=1 kv=1.00 (vllm metrics") for line in trace)

    # A pii request may not spill: `reject` answers 429 at once, `queue` waits its bounded time, then 503.
    with pytest.raises(openai.RateLimitError) as rejected:
        spill.deployment("strict", extra_headers={"x-polyroute-data-class": "pii"})
    assert rejected.value.response.headers["retry-after"] == "1"
    assert rejected.value.code == "tier_saturated"
    with pytest.raises(openai.InternalServerError) as queued:
        spill.deployment("waiting", extra_headers={"x-polyroute-data-class": "pii"})
    assert queued.value.status_code == 503 and queued.value.response.headers["retry-after"] == "1"
    assert "saturated" in queued.value.message

    assert held.result(timeout=30) == [200, 200, 200, 200]
    until(lambda: spill.metric("polyroute_spill_active", alias="chat") == 0.0, "the alias comes back after dwell")
    assert spill.deployment("chat") == "local"
    assert spill.metric("polyroute_spills_total", alias="chat", from_tier="1", to_tier="0") == 1.0


def test_a_burst_within_one_poll_fills_the_free_slots_and_sends_the_rest_to_the_cloud(spill: Spill) -> None:
    # The engine is read every 2 s. Once seen full (two slots busy, one request waiting), polyroute knows its slots.
    held = other_clients(spill.gpu_c, 3)
    until(lambda: spill.metric("polyroute_engine_queue", deployment="burst-local") == 1.0, "the engine seen full")
    assert held.result(timeout=30) == [200, 200, 200]
    until(lambda: spill.metric("polyroute_engine_running", deployment="burst-local") == 0.0, "the engine seen idle")
    until(lambda: spill.metric("polyroute_spill_active", alias="burst") == 0.0, "the alias back home after dwell")
    assert any("tier 0 burst-local: queue=0 running=0" in line and "slots 2" in line for line in spill.explain("burst"))

    # Four requests at once, all before the next read: two start on the engine's free slots, two go to the cloud at
    # once instead of waiting in its queue (which the alias's `high: {queue: 0}` forbids).
    spill.gpu_c.inject([{"fault": "slow_first_token", "count": 4, "delay": 1.5}])
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        placed = sorted(pool.map(lambda _: spill.deployment("burst"), range(4)))
    spill.gpu_c.clear()
    assert placed == ["burst-local", "burst-local", "plus", "plus"]


def test_an_engine_that_does_not_answer_falls_back_to_the_in_flight_count(spill: Spill) -> None:
    until(lambda: spill.metric("polyroute_engine_signal_fallback", deployment="silent") == 1.0, "fallback shown")
    trace = spill.explain("dark")
    line = next(line for line in trace if line.startswith("  tier 0 silent:"))
    assert "polyroute's in-flight count (engine not" in line


def test_a_conversation_stays_on_one_replica_turn_after_turn(spill: Spill) -> None:
    conversation: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Plan a trip to Kyoto"},
    ]
    chosen: set[str] = set()
    with spill.client() as client:
        for turn in range(4):
            raw = client.chat.completions.with_raw_response.create(model="pair", messages=conversation)
            chosen.add(raw.headers["x-polyroute-deployment"])
            conversation += [
                {"role": "assistant", "content": raw.parse().choices[0].message.content or ""},
                {"role": "user", "content": f"and on day {turn + 2}?"},
            ]
    assert len(chosen) == 1  # the leading messages hash alike on every turn
    by_session = {spill.deployment("pair", extra_headers={"x-polyroute-session": f"user-{i}"}) for i in range(12)}
    assert by_session == {"local", "local-b"}  # sessions spread over both replicas
    assert spill.metric("polyroute_affinity_total", alias="pair", result="hit") >= 16


def test_a_bad_session_id_is_a_400_naming_it(spill: Spill) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        spill.deployment("pair", extra_headers={"x-polyroute-session": "x" * 200})
    assert bad.value.status_code == 400 and "session id" in bad.value.message
    with pytest.raises(openai.BadRequestError) as bad_meta:
        spill.deployment("pair", metadata={"session_id": "has spaces"})
    body = bad_meta.value.body
    assert isinstance(body, dict) and body.get("param") == "metadata.session_id"
