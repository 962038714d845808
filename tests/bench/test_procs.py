"""The benchmark's wait for a gateway to finish the work a load run left in flight."""

from __future__ import annotations

import subprocess
import sys

from bench.procs import wait_idle


def _child(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code])


def test_an_idle_process_counts_as_settled() -> None:
    child = _child("import time; time.sleep(60)")
    try:
        assert wait_idle(child.pid, timeout_s=10.0) is not None
    finally:
        child.kill()
        child.wait()


def test_a_busy_process_is_waited_for_and_reported_busy() -> None:
    child = _child("while True: pass")
    try:
        assert wait_idle(child.pid, timeout_s=0.6) is None
    finally:
        child.kill()
        child.wait()


def test_a_busy_child_of_the_gateway_counts() -> None:
    # uvicorn and LiteLLM's proxy serve from a child process: the tree's CPU is what is watched.
    parent = _child("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'while True: pass']); "
                    "time.sleep(60)")
    try:
        assert wait_idle(parent.pid, timeout_s=1.0) is None
    finally:
        subprocess.run(["pkill", "-KILL", "-P", str(parent.pid)], check=False)
        parent.kill()
        parent.wait()
