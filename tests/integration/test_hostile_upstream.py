"""A gateway in front of an upstream that sends a gzip bomb: it keeps serving, stays small and falls over."""

from __future__ import annotations

import re
import threading
import urllib.request
from pathlib import Path
from typing import Any

import openai

from tests.support.hostile_upstream import WAIT_S, hostile_upstream_in_thread
from tests.support.processes import start_gateway, start_simulated

POLICY = """
version: 1
providers:
  hostile: {{type: openai, base_url: "{hostile}", hosting: cloud, jurisdiction: sg, vendor: alibaba}}
  local:   {{type: openai, base_url: "{local}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  hostile: {{provider: hostile, model: qwen3.6-plus}}
  backup:  {{provider: local, model: Qwen/Qwen3-32B}}
aliases:
  chain:  {{targets: [hostile, backup], strategy: priority}}
  direct: {{targets: [backup], strategy: priority}}
fallback:
  on: [server_error]
  retries: {{attempts: 0}}
  timeouts: {{connect: 2s, first_token: 20s, total: 20s}}
"""
HELLO = [{"role": "user", "content": "hello"}]
MIB = 1024 * 1024
BODY_LIMIT = 8 * MIB
MARGIN = 24 * MIB  # the allocator's slack and whatever else the process touches while this runs


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    assert match is not None
    return int(match[1]) * 1024


def test_a_gzip_bomb_fails_over_while_the_gateway_keeps_serving_within_its_body_limit(tmp_path: Path) -> None:
    local = start_simulated("vllm", name="sim-local")
    try:
        with hostile_upstream_in_thread(first_part=BODY_LIMIT // 2, second_part=256 * MIB) as hostile:
            policy = tmp_path / "policy.yaml"
            policy.write_text(POLICY.format(hostile=hostile.base_url, local=local.base_url))
            gateway = start_gateway(policy, env={"POLYROUTE_MAX_UPSTREAM_BODY_BYTES": str(BODY_LIMIT)})
            try:
                with openai.OpenAI(base_url=gateway.url("/v1"), api_key="any", max_retries=0, timeout=60) as client:
                    client.chat.completions.create(model="direct", messages=HELLO)  # type: ignore[arg-type]
                    before = peak_rss(gateway.process.pid)

                    outcome: dict[str, Any] = {}

                    def ask() -> None:
                        try:
                            outcome["reply"] = client.chat.completions.with_raw_response.create(
                                model="chain", messages=HELLO  # type: ignore[arg-type]
                            )
                        except Exception as exc:  # reported by the assertions below
                            outcome["error"] = exc

                    asking = threading.Thread(target=ask)
                    asking.start()
                    try:
                        assert hostile.first_part_sent.wait(WAIT_S)
                        with urllib.request.urlopen(gateway.url("/healthz"), timeout=WAIT_S) as health:
                            assert health.status == 200
                        assert not hostile.bomb_dropped.is_set()  # the bomb was still on its way meanwhile
                    finally:
                        hostile.send_the_rest()
                        asking.join(WAIT_S * 2)
                    assert "error" not in outcome, outcome.get("error")
                    raw = outcome["reply"]
                    assert raw.headers["x-polyroute-deployment"] == "backup"
                    assert "server_error" in raw.headers["x-polyroute-fallback-reason"]
                    assert raw.parse().choices[0].message.content
                    grown = peak_rss(gateway.process.pid) - before
                    assert grown < BODY_LIMIT + MARGIN, f"peak RSS grew by {grown / MIB:.0f} MiB"
                    assert hostile.bomb_dropped.wait(WAIT_S)  # not kept for another request

                    again = client.chat.completions.with_raw_response.create(
                        model="chain", messages=HELLO  # type: ignore[arg-type]
                    )
                    assert again.headers["x-polyroute-deployment"] == "hostile"  # its pool took a new connection
                    assert "behaving" in (again.parse().choices[0].message.content or "")
            finally:
                gateway.stop()
            assert "Traceback" not in gateway.process.logs()
    finally:
        local.stop()
