"""A gateway started with HTTP_PROXY reaches its upstreams through that proxy, and NO_PROXY ones directly."""

from __future__ import annotations

from pathlib import Path

import openai

from tests.support.forward_proxy import proxy_in_thread
from tests.support.processes import start_gateway, start_simulated

POLICY = """
version: 1
providers:
  gpu: {{type: openai, base_url: "{vllm}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  local: {{provider: gpu, model: qwen-local, price: {{input_per_mtok: 0, output_per_mtok: 0}}}}
aliases:
  chat: {{targets: [local]}}
"""
HELLO = [{"role": "user", "content": "hello"}]


def test_upstreams_go_through_the_proxy_unless_no_proxy_names_them(tmp_path: Path) -> None:
    vllm = start_simulated("vllm", name="sim-vllm")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(vllm=vllm.base_url))
    try:
        with proxy_in_thread() as proxy:
            proxied = f"http://127.0.0.1:{proxy.port}"
            for no_proxy, expected in (("", 1), ("127.0.0.1", 0)):  # "": even loopback goes through the proxy
                before = len(proxy.request_lines)
                gateway = start_gateway(policy, env={"HTTP_PROXY": proxied, "NO_PROXY": no_proxy})
                try:
                    with openai.OpenAI(base_url=gateway.url("/v1"), api_key="any", max_retries=0) as client:
                        reply = client.chat.completions.create(model="chat", messages=HELLO)  # type: ignore[arg-type]
                    assert "sim-vllm" in (reply.choices[0].message.content or "")
                finally:
                    gateway.stop()
                seen = proxy.request_lines[before:]
                assert len(seen) == expected, seen
                if expected:
                    assert seen[0] == f"POST {vllm.base_url}/chat/completions HTTP/1.1"
    finally:
        vllm.stop()
