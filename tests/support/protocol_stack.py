"""A stack for the coding-agent protocols: a simulated Model Studio that speaks Messages and Responses natively,
a simulated vLLM that speaks only Chat (so polyroute translates), a litellm provider, one gateway in front."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.policies import CLOUD_PRICE, GPU_PRICE, MODELSTUDIO, VIA_LITELLM, VLLM
from tests.support.processes import GatewayProcess, Upstream, start_gateway, start_simulated

AGENT_KEY = "sk-agent-team"  # tenant `agents`: every alias
LIMITED_KEY = "sk-agent-limited"  # tenant `limited`: only the `translated` alias
TIGHT_KEY = "sk-agent-tight"  # tenant `tight`: one request per minute
CLOUD_KEY = "sk-sim-cloud-secret"

POLICY = """
version: 1
providers:
""" + MODELSTUDIO + """\
    protocols: [chat, responses, messages]
    base_urls: {{messages: {cloud_root}/apps/anthropic}}
""" + VLLM + VIA_LITELLM + """\
deployments:
  qwen-cloud:   {{provider: modelstudio, model: qwen3.6-plus, context_window: 1000000,
                 """ + CLOUD_PRICE + """}}
  qwen-coder:   {{provider: vllm, model: Qwen/Qwen3-Coder-30B-A3B-Instruct, context_window: 262144,
                 """ + GPU_PRICE + """}}
  qwen-litellm: {{provider: via-litellm, model: Qwen/Qwen3-Coder-30B-A3B-Instruct, context_window: 262144}}
aliases:
  native:       {{targets: [qwen-cloud]}}
  translated:   {{targets: [qwen-coder]}}
  native-first: {{targets: [qwen-cloud, qwen-coder]}}
  litellm:      {{targets: [qwen-litellm]}}
fallback:
  retries: {{attempts: 0}}
tenants:
  agents:  {{api_keys: ["{agent_key}"]}}
  limited: {{api_keys: ["{limited_key}"], models: [translated]}}
  tight:   {{api_keys: ["{tight_key}"], limits: {{rpm: 1}}}}
"""


@dataclass
class ProtocolStack:
    gateway: GatewayProcess
    cloud: Upstream  # speaks chat, Messages and Responses natively
    vllm: Upstream  # speaks chat only

    @property
    def anthropic_url(self) -> str:
        """What Claude Code takes as ANTHROPIC_BASE_URL."""
        return self.gateway.base_url

    @property
    def openai_url(self) -> str:
        """What an OpenAI SDK takes as base_url."""
        return self.gateway.base_url + "/v1"


@contextmanager
def protocol_stack(directory: Path) -> Iterator[ProtocolStack]:
    """Start both upstreams and the gateway; stop all of them afterwards."""
    cloud = start_simulated("modelstudio", name="sim-cloud", api_key=CLOUD_KEY, chunks=4)
    vllm = start_simulated("vllm", name="sim-vllm", chunks=4)
    try:
        policy = directory / "agents.yaml"
        policy.write_text(
            POLICY.format(
                cloud=cloud.base_url,
                cloud_root=cloud.root_url,
                vllm=vllm.base_url,
                agent_key=AGENT_KEY,
                limited_key=LIMITED_KEY,
                tight_key=TIGHT_KEY,
            )
        )
        gateway = start_gateway(policy, env={"SIM_CLOUD_KEY": CLOUD_KEY, "POLYROUTE_ADMIN_KEY": "adm"})
        try:
            yield ProtocolStack(gateway, cloud, vllm)
        finally:
            gateway.stop()
    finally:
        cloud.stop()
        vllm.stop()
