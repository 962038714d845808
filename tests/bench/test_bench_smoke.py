"""The benchmark keeps working: a smoke run of `bench/run` (a few seconds per scenario) ends with a full report.

Only that the harness runs end to end and that no request failed is checked here; never a timing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIOS = (
    "direct", "nginx", "passthrough", "polyroute", "polyroute-sqlite", "polyroute-redis", "polyroute-shadow",
    "polyroute-traced", "polyroute-traced-1core", "polyroute-2w",
)
AGENT_SCENARIOS = {"direct", "nginx", "passthrough", "polyroute"}
AGENT_WORKLOADS = {"chat-100k", "chat-1m", "messages-100k", "messages-100k-relayed", "stream-2000"}


@pytest.mark.timeout(420)
def test_smoke_run_reports_every_scenario_without_failed_requests(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(REPO / "bench" / "run"), "--smoke", "--skip-litellm", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

    [table] = tmp_path.glob("smoke-*.md")
    text = table.read_text()
    summary = text.split("## Summary", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in summary.splitlines() if line.startswith("| ")}
    for name in SCENARIOS:
        assert name in rows, f"no summary row for {name}:\n{summary}"
        assert rows[name].rstrip().endswith("| 0 / 0 |"), rows[name]
    for section in ("## Coding-agent workloads", "## Long-lived streams", "## Targets"):
        assert section in text

    [raw] = tmp_path.glob("smoke-*.json")
    results = json.loads(raw.read_text())
    scenarios = results["scenarios"]
    assert [r["name"] for r in scenarios] == list(SCENARIOS)
    for result in scenarios:
        assert result["error"] is None
        workloads = {load["workload"] for load in result["loads"]}
        assert {"non-stream", "stream"} <= workloads
        if result["name"] in AGENT_SCENARIOS:
            assert workloads >= AGENT_WORKLOADS, workloads
        for load in result["loads"]:
            assert load["requests"] > 0
            assert load["non_2xx"] == 0 and load["socket_errors"] == 0, load
        for kind in ("plain", "ttft"):  # latency at concurrency 1, measured in every round
            assert list(result[kind]) == ["0"], result[kind]
            assert all(x["failures"] == 0 and x["samples"] > 0 for x in result[kind].values()), result[kind]
    streams = results["long_streams"]
    assert {s["scenario"] for s in streams} == AGENT_SCENARIOS
    for level in streams:
        assert level["failed"] == 0 and level["completed"] == level["streams"], level
        assert level["chunks"] > 0
