"""Retries: a transient failure is retried on the same deployment after a backoff that honours Retry-After."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.processes import GatewayProcess, Upstream, start_gateway, start_simulated
from tests.support.resilience import HELLO

POLICY = """
version: 1
providers:
  local: {{type: openai, base_url: "{local}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  only: {{provider: local, model: Qwen/Qwen3-32B}}
aliases:
  solo: {{targets: [only], strategy: priority}}
fallback:
  retries: {{attempts: 2, backoff: 50ms, max_backoff: 1s}}
  timeouts: {{connect: 1s, first_token: 2s, total: 10s}}
"""


@pytest.fixture(scope="module")
def retrying(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, Upstream]]:
    local = start_simulated("vllm", name="sim-local", chunks=4)
    path: Path = tmp_path_factory.mktemp("retries") / "policy.yaml"
    path.write_text(POLICY.format(local=local.base_url))
    try:
        gateway = start_gateway(path)
        try:
            yield gateway, local
        finally:
            gateway.stop()
    finally:
        local.stop()


def client(gateway: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url("/v1"), api_key="any", max_retries=0)


@pytest.mark.parametrize("stream", [False, True], ids=["once", "stream"])
def test_a_throttled_request_is_retried_after_retry_after(
    retrying: tuple[GatewayProcess, Upstream], stream: bool
) -> None:
    gateway, local = retrying
    local.reset_stats()
    local.inject([{"fault": "throttling", "count": 2, "retry_after": "0.2"}])
    with client(gateway) as c:
        if stream:
            with c.chat.completions.with_streaming_response.create(
                model="solo", messages=HELLO, stream=True
            ) as response:
                headers = response.headers
                assert any(line == "data: [DONE]" for line in response.iter_lines())
        else:
            headers = c.chat.completions.with_raw_response.create(model="solo", messages=HELLO).headers
    assert headers["x-polyroute-attempts"] == "3"  # two throttled rounds, then the answer
    assert headers["x-polyroute-deployment"] == "only"
    assert headers["x-polyroute-fallback-reason"] == "rate_limit"
    assert local.stats()["faults_served"]["throttling"] == 2


def test_a_retry_after_longer_than_max_backoff_is_not_waited_for(retrying: tuple[GatewayProcess, Upstream]) -> None:
    gateway, local = retrying
    local.inject([{"fault": "throttling", "count": 1, "retry_after": "30"}])
    with client(gateway) as c, pytest.raises(openai.APIStatusError) as info:
        c.chat.completions.create(model="solo", messages=HELLO)
    assert info.value.status_code == 429  # every target is rate-limited: the client should wait, as asked
    assert "only: rate_limit (upstream status 429)" in str(info.value)
    assert info.value.response.headers["x-polyroute-attempts"] == "1"
    assert info.value.response.headers["retry-after"] == "30"  # passed on to the client
