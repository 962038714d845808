"""A setting given as an empty environment variable is taken as unset, as a deployment's templates write them."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import openai

from tests.support.processes import start_gateway, start_simulated

POLICY = """
version: 1
providers:
  vllm: {{type: openai, base_url: "{base}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  qwen-local: {{provider: vllm, model: Qwen/Qwen3-32B}}
aliases:
  local: {{targets: [qwen-local], strategy: priority}}
"""
HELLO: Any = [{"role": "user", "content": "hello"}]
# What `POLYROUTE_REDIS_URL=${REDIS_URL:-}` and the like give when the deployment leaves them out.
EMPTY = (
    "POLYROUTE_REDIS_URL", "POLYROUTE_STATE_DIR", "POLYROUTE_ADMIN_KEY", "POLYROUTE_MAX_BODY_BYTES",
    "POLYROUTE_CORS_ORIGINS", "POLYROUTE_DOCS", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_SDK_DISABLED", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_TRACES_SAMPLER", "HTTPS_PROXY",
)


def test_a_gateway_whose_optional_settings_are_empty_variables_starts_with_their_defaults(tmp_path: Path) -> None:
    upstream = start_simulated("vllm", name="sim-local")
    try:
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY.format(base=upstream.base_url))
        with start_gateway(policy, env=dict.fromkeys(EMPTY, "")) as gateway:  # each would have failed the start
            with openai.OpenAI(base_url=gateway.url("/v1"), api_key="any", max_retries=0, timeout=30) as client:
                reply = client.chat.completions.create(model="local", messages=HELLO)
                assert reply.choices[0].message.content
                assert client.with_raw_response.models.list().headers.get("access-control-allow-origin") is None
            with urllib.request.urlopen(gateway.url("/openapi.json"), timeout=10) as resp:
                assert json.loads(resp.read())["openapi"].startswith("3.")  # POLYROUTE_DOCS= leaves the docs on
    finally:
        upstream.stop()
