"""Engine load read from real llama.cpp servers: the C++ `llama-server --metrics` (built from the pinned llama.cpp
sources) whose queue and running requests polyroute polls by their real names, and llama-cpp-python's server, which
has no /metrics, where polyroute falls back to its own in-flight count and says so."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.llamacpp import MODEL_ALIAS, LlamaServer, start_llama_server, start_llamacpp
from tests.support.processes import GatewayProcess, start_gateway
from tests.support.prometheus import scrape, total

pytestmark = pytest.mark.engine

ADMIN_KEY = "adm-llamacpp-load-secret"
CONTEXT = 512
POLICY = """
version: 1
providers:
  llamacpp: {{type: openai, base_url: "{base_url}", hosting: self_hosted, jurisdiction: onprem, vendor: self,
              engine: llamacpp, poll: 100ms}}
deployments:
  {name}: {{provider: llamacpp, model: {model}}}
aliases:
  {name}: {{targets: [{name}], strategy: spillover}}
fallback:
  retries: {{attempts: 0}}
  timeouts: {{connect: 2s, first_token: 60s, total: 120s}}
"""
ASK: Any = [{"role": "user", "content": "Count from one to a thousand."}]
NEVER_STOP = {"0": -100, "2": -100}  # SmolLM2's end-of-text and <|im_end|>: each generation runs to max_tokens


@dataclass(frozen=True)
class Gateway:
    """A gateway in front of one llama.cpp server, with the admin key for `route explain`."""

    engine: LlamaServer
    process: GatewayProcess

    def metric(self, name: str, **labels: str) -> float:
        return total(scrape(self.process.url("/metrics")), name, **labels)

    def has(self, name: str, **labels: str) -> bool:
        samples = scrape(self.process.url("/metrics"))
        return any(n == name and labels.items() <= lbl.items() for n, lbl, _ in samples)

    def explain(self, alias: str) -> list[str]:
        body = json.dumps({"model": alias, "messages": ASK}).encode()
        request = urllib.request.Request(
            self.process.url("/admin/routes/explain"),
            data=body,
            headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            trace: list[str] = json.loads(response.read())["trace"]
        return trace

    def deployment(self, alias: str) -> str:
        with openai.OpenAI(base_url=self.process.url("/v1"), api_key="any", max_retries=0, timeout=120) as client:
            raw = client.chat.completions.with_raw_response.create(model=alias, messages=ASK, max_tokens=4)
        name: str = raw.headers["x-polyroute-deployment"]
        return name


@contextlib.contextmanager
def gateway_for(engine: LlamaServer, name: str, tmp: pytest.TempPathFactory) -> Iterator[Gateway]:
    policy: Path = tmp.mktemp("llamacpp-load") / "policy.yaml"
    policy.write_text(POLICY.format(name=name, base_url=engine.base_url, model=MODEL_ALIAS))
    with start_gateway(policy, env={"POLYROUTE_ADMIN_KEY": ADMIN_KEY}) as process:
        yield Gateway(engine, process)


@pytest.fixture(scope="module")
def cpp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    # One slot: a second request at once waits (llama.cpp defers it until the slot is free).
    with start_llama_server(n_ctx=CONTEXT, slots=1) as engine, gateway_for(engine, "cpp", tmp_path_factory) as gw:
        yield gw


@pytest.fixture(scope="module")
def py(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with start_llamacpp(n_ctx=CONTEXT) as engine, gateway_for(engine, "py", tmp_path_factory) as gw:
        yield gw


def until(condition: Callable[[], bool], what: str, limit_s: float = 60.0) -> None:
    """Wait (bounded) for something the gateway learns from its pollers; never a timing assert."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {limit_s:.0f}s: {what}")
        time.sleep(0.05)


def line_of(trace: list[str], prefix: str) -> str:
    return next(line for line in trace if line.startswith(prefix))


def test_the_poller_reads_llama_servers_own_metric_names_while_requests_run(cpp: Gateway) -> None:
    until(lambda: cpp.metric("polyroute_engine_signal_fallback", deployment="cpp") == 0.0, "first read")
    assert cpp.metric("polyroute_engine_running", deployment="cpp") == 0.0
    assert cpp.metric("polyroute_engine_queue", deployment="cpp") == 0.0
    # This llama.cpp exports no KV-cache ratio (`llamacpp:kv_cache_usage_ratio` is gone): unknown, never a 0.
    assert not cpp.has("polyroute_engine_kv_usage", deployment="cpp")
    assert "kv=- (llamacpp metrics" in line_of(cpp.explain("cpp"), "  tier 0 cpp:")

    # Three long generations sent straight to the engine (other clients of a shared server): one runs, two wait.
    def generate(_: int) -> str:
        with openai.OpenAI(base_url=cpp.engine.base_url, api_key="none", max_retries=0, timeout=120) as client:
            reply = client.chat.completions.create(
                model=MODEL_ALIAS, messages=ASK, max_tokens=200, logit_bias=NEVER_STOP, temperature=0
            )
        return reply.choices[0].finish_reason or ""

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        replies = [pool.submit(generate, i) for i in range(3)]
        until(lambda: cpp.metric("polyroute_engine_running", deployment="cpp") == 1.0, "one request running")
        until(lambda: cpp.metric("polyroute_engine_queue", deployment="cpp") >= 1.0, "requests deferred")
        assert cpp.metric("polyroute_engine_signal_fallback", deployment="cpp") == 0.0
        assert cpp.metric("polyroute_engine_signal_age_seconds", deployment="cpp") < 3.0  # three polls: fresh
        # Seen full (requests waiting while its one slot runs): polyroute has learned its slots.
        line = line_of(cpp.explain("cpp"), "  tier 0 cpp:")
        assert line.startswith("  tier 0 cpp: queue=") and " running=1 kv=- (llamacpp metrics" in line
        assert "; slots 1," in line
        assert [r.result(timeout=300) for r in replies] == ["length"] * 3
    until(lambda: cpp.metric("polyroute_engine_running", deployment="cpp") == 0.0, "the engine idle again")
    assert cpp.metric("polyroute_engine_queue", deployment="cpp") == 0.0

    assert cpp.deployment("cpp") == "cpp"


def test_llama_cpp_python_has_no_metrics_and_its_load_is_polyroutes_in_flight_count(py: Gateway) -> None:
    until(lambda: py.metric("polyroute_engine_signal_fallback", deployment="py") == 1.0, "fallback shown")
    line = line_of(py.explain("py"), "  tier 0 py:")
    assert line == "  tier 0 py: load from polyroute's in-flight count (engine not answering (HTTP 404))"
    assert py.deployment("py") == "py"
    assert py.metric("polyroute_engine_signal_fallback", deployment="py") == 1.0
