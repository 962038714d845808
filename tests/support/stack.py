"""The integration stack: simulated Model Studio / vLLM / Ollama upstreams behind one polyroute gateway."""

from __future__ import annotations

from dataclasses import dataclass

import openai

from tests.support.policies import CLOUD_PRICE, GPU_PRICE, MODELSTUDIO, VIA_LITELLM, VLLM
from tests.support.processes import GatewayProcess, Upstream

POLICY = """
version: 1
providers:
""" + MODELSTUDIO + VLLM + """\
  ollama:
    type: openai
    base_url: {ollama}
    hosting: self_hosted
    jurisdiction: onprem
    vendor: self
""" + VIA_LITELLM + """\
deployments:
  qwen-plus:  {{provider: modelstudio, model: qwen3.6-plus, context_window: 1000000,
               """ + CLOUD_PRICE + """}}
  qwen-local: {{provider: vllm, model: Qwen/Qwen3-32B, context_window: 32768,
               """ + GPU_PRICE + """}}
  qwen-ollama: {{provider: ollama, model: "qwen3:8b", context_window: 8192}}
  qwen-litellm: {{provider: via-litellm, model: Qwen/Qwen3-32B, context_window: 32768}}
  embed-local: {{provider: vllm, model: bge-m3}}
  embed-litellm: {{provider: via-litellm, model: bge-m3}}
aliases:
  coder:        {{targets: [qwen-plus, qwen-local], strategy: priority}}
  conf-openai:  {{targets: [qwen-local], strategy: priority}}
  conf-litellm: {{targets: [qwen-litellm], strategy: priority}}
  cloud-only:   {{targets: [qwen-plus], strategy: priority}}
  ollama:       {{targets: [qwen-ollama], strategy: priority}}
  embed-openai: {{targets: [embed-local], strategy: priority}}
  embed-litellm: {{targets: [embed-litellm], strategy: priority}}
rules:
  - name: pii-stays-home
    when: {{data_class: [pii]}}
    require: {{hosting: self_hosted}}
fallback:
  on: [rate_limit, timeout, server_error, connection_error, context_window, content_policy]
  retries: {{attempts: 0, backoff: 10ms, max_backoff: 50ms}}
  timeouts: {{connect: 2s, first_token: 5s, total: 20s}}
"""


@dataclass
class Stack:
    gateway: GatewayProcess
    cloud: Upstream
    vllm: Upstream
    ollama: Upstream

    def __post_init__(self) -> None:
        self._clients: list[openai.OpenAI] = []

    def client(self, **kw: object) -> openai.OpenAI:
        """A new client; its pooled connections are closed with the stack."""
        client = openai.OpenAI(base_url=self.gateway.url("/v1"), api_key="any", max_retries=0, **kw)  # type: ignore[arg-type]
        self._clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()


