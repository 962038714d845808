"""Requests beyond a provider's max_connections wait for a connection, and how long they waited is exported."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path
from typing import Any

import openai

from tests.support.processes import start_gateway, start_simulated
from tests.support.resilience import eventually, metric

POLICY = """
version: 1
providers:
  vllm: {{type: openai, base_url: "{base}", hosting: self_hosted, jurisdiction: onprem, vendor: self,
          max_connections: 1}}
deployments:
  qwen-local: {{provider: vllm, model: Qwen/Qwen3-32B}}
aliases:
  local: {{targets: [qwen-local], strategy: priority}}
"""
HELLO: Any = [{"role": "user", "content": "hello"}]
WAIT = "polyroute_upstream_connection_wait_seconds"


def _metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text: str = resp.read().decode()
        return text


def test_a_request_beyond_max_connections_waits_for_a_streams_connection_and_the_wait_is_exported(
    tmp_path: Path,
) -> None:
    upstream = start_simulated("vllm", name="sim-local", chunks=8)
    try:
        upstream.inject([{"fault": "delay", "delay": 0.2, "count": 1}])  # the stream: a frame every 0.2 s
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY.format(base=upstream.base_url))
        gateway = start_gateway(policy)
        try:
            with openai.OpenAI(base_url=gateway.url("/v1"), api_key="any", max_retries=0, timeout=60) as client:
                assert metric(_metrics(gateway.url("/metrics")), WAIT + "_count") == 0
                stream = client.chat.completions.create(model="local", messages=HELLO, stream=True)
                chunks = [next(stream)]  # the stream holds the provider's one connection from here
                answered: dict[str, Any] = {}

                def ask() -> None:
                    answered["reply"] = client.chat.completions.create(model="local", messages=HELLO)

                second = threading.Thread(target=ask)
                second.start()
                eventually(
                    lambda: metric(_metrics(gateway.url("/metrics")), "polyroute_inflight_requests") >= 2,
                    "the second request to be in flight",
                )
                chunks += list(stream)  # the stream ends, and its connection goes to the waiting request
                second.join(60)
                assert not second.is_alive()
                assert any(c.choices and c.choices[0].delta.content for c in chunks)
                assert answered["reply"].choices[0].message.content
            text = _metrics(gateway.url("/metrics"))
            assert metric(text, WAIT + "_count", provider="vllm") == 1  # the stream itself did not wait
            assert metric(text, WAIT + "_sum", provider="vllm") > 0
        finally:
            gateway.stop()
    finally:
        upstream.stop()
