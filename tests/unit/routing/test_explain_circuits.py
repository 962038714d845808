"""`polyroute route explain` shows the circuits that gateways sharing Redis opened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.settings import Settings
from gateway.state.factory import create_state_store
from tests.support.processes import RedisServer, have_redis, start_redis

POLICY = """
version: 1
providers:
  p: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: cloud, jurisdiction: sg, vendor: v}
deployments:
  flaky:  {provider: p, model: a}
  steady: {provider: p, model: b}
aliases:
  chat: {targets: [flaky, steady], strategy: priority}
fallback:
  circuit_breaker: {failures: 2, window: 30s, cooldown: 60s}
"""


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    if not have_redis():
        pytest.skip("redis-server is not installed")
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


def explain(tmp_path: Path, redis_url: str | None) -> str:
    policy, body = tmp_path / "policy.yaml", tmp_path / "body.json"
    policy.write_text(POLICY)
    body.write_text(json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYROUTE_")}
    if redis_url is not None:
        env["POLYROUTE_REDIS_URL"] = redis_url
    command = [sys.executable, "-m", "gateway.cli", "route", "explain", str(policy), "--request", str(body)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_an_open_circuit_in_redis_is_skipped_and_named(tmp_path: Path, redis: RedisServer) -> None:
    assert "attempts=flaky > steady" in explain(tmp_path, redis.url)
    store = create_state_store(Settings(redis_url=redis.url), on_error=lambda _op: None)
    await store.start()
    try:
        for _ in range(2):
            await store.record_outcome("flaky", False, failures=2, window_s=30, cooldown_s=60, now=time.time())
    finally:
        await store.close()
    out = explain(tmp_path, redis.url)
    assert "attempts=steady" in out and "circuit open" in out
    assert "attempts=flaky > steady" in explain(tmp_path, None)  # without Redis there is nothing shared to read
