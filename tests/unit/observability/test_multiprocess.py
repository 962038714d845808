"""Tests of gateway.observability.multiprocess: each process writes its own metric files, also after a fork."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability import names
from gateway.observability.multiprocess import merged_registry, prepare_multiprocess_dir

REPO = Path(__file__).resolve().parents[3]

# A worker that records requests, forks, and records more in both processes; prints "parent child" pids.
FORKING_WORKER = """
import os, sys
from pathlib import Path
from gateway.observability.metrics import Metrics

m = Metrics(multiprocess_dir=Path(sys.argv[1]))
m.set_known(aliases=["coder"], deployments=["qwen-plus"], providers=["qwen-cloud"], vendors=["alibaba"],
            tenants=["team-a"])

def served(n):
    for _ in range(n):
        m.request_done(alias="coder", deployment="qwen-plus", provider="qwen-cloud", vendor="alibaba",
                       hosting="cloud", tenant="team-a", status=200, duration_s=1.0, overhead_s=0.001, ttft_s=None,
                       stream=False)

served(3)
child = os.fork()
if child == 0:
    served(5)
    os._exit(0)
_, status = os.waitpid(child, 0)
served(2)
print(os.getpid(), child, os.waitstatus_to_exitcode(status), flush=True)
"""


def requests_served(directory: Path) -> float:
    text = generate_latest(merged_registry(directory)).decode()
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == names.REQUESTS_TOTAL
    )


def test_a_process_forked_after_its_metrics_were_created_counts_in_its_own_files(tmp_path: Path) -> None:
    directory = tmp_path / "prom"
    prepare_multiprocess_dir(directory)
    done = subprocess.run(
        [sys.executable, "-c", FORKING_WORKER, str(directory)],
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    parent, child, child_status = (int(x) for x in done.stdout.split())
    assert child_status == 0

    assert requests_served(directory) == 3 + 5 + 2  # neither process overwrote the other's counts
    assert (directory / f"counter_{parent}.db").is_file()
    assert (directory / f"counter_{child}.db").is_file()


def test_a_metric_file_another_worker_is_still_creating_does_not_fail_the_exposition(tmp_path: Path) -> None:
    """prometheus_client opens a new metric file (empty) and only then sizes it: a /metrics read in between found
    a file too short for its header and answered 500. Such a file holds no values yet: it is left out."""
    directory = tmp_path / "prom"
    prepare_multiprocess_dir(directory)
    done = subprocess.run(
        [sys.executable, "-c", FORKING_WORKER, str(directory)],
        env={"PROMETHEUS_MULTIPROC_DIR": str(directory), "PYTHONPATH": str(REPO)},
        cwd=REPO, capture_output=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    (directory / "histogram_4194301.db").write_bytes(b"")  # opened by a worker, not yet sized
    (directory / "counter_4194302.db").write_bytes(b"\x00\x00")
    assert requests_served(directory) == 3 + 5 + 2
