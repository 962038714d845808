"""Policy fragments the integration stacks share: the simulated upstreams as providers, and their prices.

Each fragment is a `str.format` template (literal braces doubled) that takes the upstream URLs as `{cloud}` and
`{vllm}`; the simulated Model Studio's key comes from the gateway's environment as `SIM_CLOUD_KEY`.
"""

from __future__ import annotations

MODELSTUDIO = """\
  modelstudio:
    type: openai
    base_url: {cloud}
    api_key: ${{SIM_CLOUD_KEY}}
    hosting: cloud
    jurisdiction: sg
    vendor: alibaba
"""
VLLM = """\
  vllm:
    type: openai
    base_url: {vllm}
    hosting: self_hosted
    jurisdiction: onprem
    vendor: self
"""
VIA_LITELLM = """\
  via-litellm:
    type: litellm
    litellm_prefix: openai
    base_url: {vllm}
    api_key: unused
    hosting: self_hosted
    jurisdiction: onprem
    vendor: self
"""
CLOUD_PRICE = "price: {{input_per_mtok: 0.8, output_per_mtok: 4.8, currency: CNY}}"
GPU_PRICE = "price: {{gpu_hour: 2.5, tokens_per_second: 1200, currency: USD}}"
