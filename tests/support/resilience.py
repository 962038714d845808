"""A gateway before a simulated Model Studio (reached by both provider types) and a vLLM backup, for fault tests."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import openai

from tests.support.processes import GatewayProcess, Upstream, free_port, start_gateway, start_simulated

T = TypeVar("T")
CLOUD_KEY = "sk-sim-cloud-secret"
ADMIN_KEY = "adm-resilience"
HELLO = [{"role": "user", "content": "hello"}]
PROVIDER_TYPES = ("openai", "litellm")
# Each provider type reaches the simulated cloud with its own model name, so a fault can target one of them.
PRIMARY_MODEL = {"openai": "qwen3.6-plus", "litellm": "qwen-plus"}

POLICY = """
version: 1
providers:
  cloud-openai:  {{type: openai, base_url: "{cloud}", api_key: "${{SIM_CLOUD_KEY}}",
                  hosting: cloud, jurisdiction: sg, vendor: alibaba}}
  cloud-litellm: {{type: litellm, litellm_prefix: openai, base_url: "{cloud}", api_key: "${{SIM_CLOUD_KEY}}",
                  hosting: cloud, jurisdiction: sg, vendor: alibaba}}
  local:         {{type: openai, base_url: "{local}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
  gone-openai:   {{type: openai, base_url: "{gone}", hosting: cloud, jurisdiction: sg, vendor: alibaba}}
  gone-litellm:  {{type: litellm, litellm_prefix: openai, base_url: "{gone}", api_key: unused,
                  hosting: cloud, jurisdiction: sg, vendor: alibaba}}
  hang-openai:   {{type: openai, base_url: "{hang}", hosting: cloud, jurisdiction: sg, vendor: alibaba}}
  hang-litellm:  {{type: litellm, litellm_prefix: openai, base_url: "{hang}", api_key: unused,
                  hosting: cloud, jurisdiction: sg, vendor: alibaba}}
deployments:
  primary-openai:  {{provider: cloud-openai, model: qwen3.6-plus, context_window: 8000}}
  primary-litellm: {{provider: cloud-litellm, model: qwen-plus, context_window: 8000}}
  backup:          {{provider: local, model: Qwen/Qwen3-32B, context_window: 32768}}
  backup-small:    {{provider: local, model: Qwen/Qwen3-32B, context_window: 4000}}
  gone-openai:     {{provider: gone-openai, model: qwen3.6-plus}}
  gone-litellm:    {{provider: gone-litellm, model: qwen-plus}}
  hang-openai:     {{provider: hang-openai, model: qwen3.6-plus}}
  hang-litellm:    {{provider: hang-litellm, model: qwen-plus}}
aliases:
  chain-openai:  {{targets: [primary-openai, backup], strategy: priority}}
  chain-litellm: {{targets: [primary-litellm, backup], strategy: priority}}
  solo-openai:   {{targets: [primary-openai], strategy: priority}}
  solo-litellm:  {{targets: [primary-litellm], strategy: priority}}
  narrow-openai:  {{targets: [primary-openai, backup-small, backup], strategy: priority}}
  narrow-litellm: {{targets: [primary-litellm, backup-small, backup], strategy: priority}}
  gone-openai:    {{targets: [gone-openai, backup], strategy: priority}}
  gone-litellm:   {{targets: [gone-litellm, backup], strategy: priority}}
  hang-openai:    {{targets: [hang-openai, backup], strategy: priority}}
  hang-litellm:   {{targets: [hang-litellm, backup], strategy: priority}}
  stuck-openai:   {{targets: [hang-openai], strategy: priority}}
  stuck-litellm:  {{targets: [hang-litellm], strategy: priority}}
fallback:
  on: [{on}]
  retries: {{attempts: {retries}, backoff: 20ms, max_backoff: 200ms}}
  timeouts: {{connect: 1s, first_token: {first_token}, total: {total}}}
  circuit_breaker: {{failures: {failures}, window: 10s, cooldown: {cooldown}}}
"""
FALLBACK_ON = "rate_limit, timeout, server_error, connection_error, context_window, content_policy, auth"


@dataclass
class Resilience:
    gateway: GatewayProcess
    cloud: Upstream
    local: Upstream
    policy_path: Path

    def __post_init__(self) -> None:
        self._client: openai.OpenAI | None = None

    def client(self) -> openai.OpenAI:
        """One client for the stack's life (its pooled connections are closed with the stack)."""
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def new_client(self, **kw: Any) -> openai.OpenAI:
        """A client of its own (close it: `with rs.new_client(timeout=...) as client:`)."""
        return openai.OpenAI(base_url=self.gateway.url("/v1"), api_key="any", max_retries=0, **kw)

    def close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def metrics(self) -> str:
        with urllib.request.urlopen(self.gateway.url("/metrics"), timeout=5) as resp:
            text: str = resp.read().decode()
            return text

    def admin(self, method: str, path: str, body: Any = None, key: str = ADMIN_KEY) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.gateway.url(path), data=data, method=method,
                                     headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, json.loads(err.read())


def write_policy(path: Path, cloud: Upstream, local: Upstream, **overrides: Any) -> None:
    values = {"on": FALLBACK_ON, "retries": 0, "first_token": "1s", "total": "3s", "failures": 100,
              "cooldown": "1s"} | overrides
    gone = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connections are refused
    path.write_text(
        POLICY.format(cloud=cloud.base_url, local=local.base_url, gone=gone, hang=unanswered_url(), **values)
    )


@cache
def unanswered_url() -> str:
    """A loopback address where a TCP connect hangs: a listener whose backlog is full and never accepted.

    Linux drops the SYNs of further connections then, so the client waits as it would for a host that does not
    answer; only a connect timeout ends the wait. The sockets live as long as the test process.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)  # let the handshakes that will complete fill the backlog
    _KEEP_OPEN.extend([listener, *fillers])
    return f"http://127.0.0.1:{port}/v1"


_KEEP_OPEN: list[socket.socket] = []


@contextmanager
def resilience_stack(directory: Path, env: dict[str, str] | None = None, **policy: Any) -> Iterator[Resilience]:
    """Simulated cloud (8 frames per stream) and vLLM upstreams, and a gateway with the policy above."""
    cloud = start_simulated("modelstudio", name="sim-cloud", api_key=CLOUD_KEY, chunks=8)
    local = start_simulated("vllm", name="sim-local", chunks=8)
    path = directory / "policy.yaml"
    write_policy(path, cloud, local, **policy)
    try:
        gateway = start_gateway(path, env={"SIM_CLOUD_KEY": CLOUD_KEY, "POLYROUTE_ADMIN_KEY": ADMIN_KEY, **(env or {})})
    except BaseException:
        cloud.stop()
        local.stop()
        raise
    stack = Resilience(gateway, cloud, local, path)
    try:
        yield stack
    finally:
        stack.close_client()
        gateway.stop()
        cloud.stop()
        local.stop()


def stream_lines(client: openai.OpenAI, model: str, **kw: Any) -> tuple[dict[str, str], list[str]]:
    """The SSE `data:` payloads of one streamed chat completion, exactly as the gateway sent them."""
    with client.chat.completions.with_streaming_response.create(model=model, messages=HELLO, stream=True,
                                                                **kw) as response:
        headers = dict(response.headers)
        lines = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
    return headers, lines


def error_of(line: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(line)["error"]
    return payload


def content_of(lines: list[str]) -> str:
    text = ""
    for line in lines:
        if line == "[DONE]":
            continue
        data = json.loads(line)
        for choice in data.get("choices") or []:
            text += (choice.get("delta") or {}).get("content") or ""
    return text


def output_of(lines: list[str]) -> str:
    """Everything the model said in a stream: its reasoning (qwen3.6-plus thinks by default) and its content."""
    text = ""
    for line in lines:
        if line == "[DONE]":
            continue
        for choice in json.loads(line).get("choices") or []:
            delta = choice.get("delta") or {}
            text += (delta.get("reasoning_content") or "") + (delta.get("content") or "")
    return text


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (0 when there are none)."""
    total = 0.0
    for match in re.finditer(rf"^{re.escape(name)}\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def eventually(check: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """Poll `check()` until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result
