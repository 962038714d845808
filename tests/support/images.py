"""A gateway before a simulated Model Studio (its native image API) and a simulated vLLM image server, for the
image tests; the policy names every kind of image target."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from tests.support.processes import GatewayProcess, Upstream, start_gateway, start_simulated

CLOUD_KEY = "sk-sim-images-secret"
ADMIN_KEY = "adm-images"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

POLICY = """
version: 1
providers:
  ms-images: {{type: dashscope, base_url: "{cloud}/api/v1", api_key: "${{SIM_CLOUD_KEY}}",
              hosting: cloud, jurisdiction: sg, vendor: alibaba}}
  local:     {{type: openai, base_url: "{local}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  wan-async:   {{provider: ms-images, model: wan2.2-t2i-flash, kind: image, price: {{per_image: 0.02}}}}
  qwen-preset: {{provider: ms-images, model: qwen-image-plus, kind: image,
                price: {{per_image: {{"1328x1328": 0.03, default: 0.05}}}}}}
  qwen-sync:   {{provider: ms-images, model: qwen-image-2.0, kind: image, price: {{per_image: 0.04}}}}
  qwen-edit:   {{provider: ms-images, model: qwen-image-edit-plus, kind: image, price: {{per_image: 0.03}}}}
  local-image: {{provider: local, model: sd-turbo, kind: image, price: {{per_image: 0.001}}}}
  local-chat:  {{provider: local, model: Qwen/Qwen3-32B}}
aliases:
  paint:        {{targets: [wan-async, local-image]}}
  paint-cloud:  {{targets: [wan-async]}}
  paint-preset: {{targets: [qwen-preset]}}
  paint-sync:   {{targets: [qwen-sync]}}
  paint-local:  {{targets: [local-image]}}
  edit:         {{targets: [qwen-edit]}}
  edit-local:   {{targets: [local-image]}}
  chat:         {{targets: [local-chat]}}
fallback:
  on: [rate_limit, timeout, server_error, connection_error, content_policy]
  retries: {{attempts: 0}}
  timeouts: {{connect: 1s, first_token: 3s, total: 3s}}
"""


@dataclass
class Stack:
    gateway: GatewayProcess
    cloud: Upstream
    local: Upstream
    client: openai.OpenAI

    def admin(self, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.gateway.url(path), data=data, method="POST" if data else "GET",
                                         headers={"authorization": f"Bearer {ADMIN_KEY}",
                                                  "content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(self.gateway.url("/metrics"), timeout=5) as response:
            text: str = response.read().decode()
            return text


@contextmanager
def image_stack(directory: Path) -> Iterator[Stack]:
    """Both simulators and a gateway with POLICY; everything is stopped at the end."""
    cloud = start_simulated("modelstudio", name="sim-cloud", api_key=CLOUD_KEY)
    local = start_simulated("vllm", name="sim-local")
    path = directory / "policy.yaml"
    path.write_text(POLICY.format(cloud=cloud.root_url, local=local.base_url))
    try:
        gateway = start_gateway(path, env={"SIM_CLOUD_KEY": CLOUD_KEY, "POLYROUTE_ADMIN_KEY": ADMIN_KEY})
    except BaseException:
        cloud.stop()
        local.stop()
        raise
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key="any", max_retries=0)
    try:
        yield Stack(gateway, cloud, local, client)
    finally:
        client.close()
        gateway.stop()
        cloud.stop()
        local.stop()


def error_of(exc: openai.APIStatusError) -> dict[str, Any]:
    body: dict[str, Any] = exc.response.json()["error"]
    return body


def sim_png(stack: Stack) -> bytes:
    """The PNG the simulators serve at their image URLs."""
    with urllib.request.urlopen(stack.cloud.root_url + "/_sim/images/probe.png", timeout=5) as response:
        data: bytes = response.read()
    return data
