"""`polyroute demo` as a newcomer runs it: it ends by itself, with the lock-in report of the tour's traffic and one
shadow comparison."""

from __future__ import annotations

import os
import subprocess
import sys


def test_the_demo_ends_by_itself_with_the_lockin_report() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POLYROUTE_")}
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    report = done.stdout[done.stdout.index("`polyroute lockin`"):]
    assert "8 requests" in report.splitlines()[1]  # every request of the tour was recorded with its routing facts
    assert "vendor concentration (HHI, 0-10000)" in report
    assert "coder: 6 requests, dominant vendor self" in report
    assert "embed: 0 requests, dominant vendor alibaba, vendors alibaba; stranded 100.0%" in report
    shadow = done.stdout[done.stdout.index("`polyroute shadow report`"):]
    assert "alias chat" in shadow and "(compared 1)" in shadow and "similarity " in shadow
    assert done.stdout.rstrip().splitlines()[-1].startswith("Demo finished.")
    images = done.stdout[done.stdout.index("--> 9. images.generate"):]
    assert "answered by deployment : local-image" in images and "fallback reason: server_error" in images
