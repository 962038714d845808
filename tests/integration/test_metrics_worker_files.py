"""`polyroute serve --workers 2` without Redis: each worker counts in metric files of its own pid, restarts included.

Every request opens a new connection, so that the kernel hands requests to both workers.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from gateway.observability import names
from tests.support.processes import GatewayProcess, Upstream, healthy, start_gateway, start_simulated, worker_pids
from tests.support.prometheus import scrape, total

POLICY = """
version: 1
providers:
  vllm: {{type: openai, base_url: {vllm}, hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  local: {{provider: vllm, model: Qwen/Qwen3-32B}}
aliases:
  chat: {{targets: [local]}}
fallback:
  retries: {{attempts: 0}}
tenants:
  team-a: {{api_keys: [sk-team-a], limits: {{rpm: 1000}}}}
"""
HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello from one of two workers"}]
WAIT_S = 30.0


@dataclass
class Workers:
    gateway: GatewayProcess
    vllm: Upstream
    metrics_dir: Path

    def call(self, n: int) -> None:
        """`n` chat completions, each on a new connection, 8 at a time."""

        def one(_: int) -> None:
            fresh = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=60)
            with openai.OpenAI(
                base_url=self.gateway.url("/v1"), api_key="sk-team-a", max_retries=0, http_client=fresh
            ) as c:
                c.chat.completions.create(model="chat", messages=HELLO, max_tokens=20)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(one, range(n)))

    def served(self) -> float:
        return total(scrape(self.gateway.url("/metrics")), names.REQUESTS_TOTAL, alias="chat", status_class="2xx")

    def file_pids(self) -> set[int]:
        return files(self.metrics_dir)


def files(metrics_dir: Path) -> set[int]:
    """The pids in the names of the metric files (`counter_<pid>.db`, `gauge_livesum_<pid>.db`, ...)."""
    return {int(path.stem.rpartition("_")[2]) for path in metrics_dir.glob("*.db")}


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    vllm = start_simulated("vllm", name="sim-vllm", chunks=3)
    here = tmp_path_factory.mktemp("metrics-files")
    policy = here / "policy.yaml"
    policy.write_text(POLICY.format(vllm=vllm.base_url))
    metrics_dir = here / "metrics"
    gateway = start_gateway(policy, env={"POLYROUTE_MULTIPROC_DIR": str(metrics_dir)}, workers=2)
    try:
        # A worker creates its metric files when its app starts, before it accepts a connection.
        wait_for("both workers to start", lambda: len(pids := worker_pids(gateway)) == 2 and files(metrics_dir) == pids)
        yield Workers(gateway, vllm, metrics_dir)
    finally:
        gateway.stop()
        vllm.stop()


def wait_for(what: str, check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out after {WAIT_S:.0f}s waiting for {what}"
        time.sleep(0.05)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find the worker processes")
def test_two_workers_count_every_request_and_a_restarted_worker_writes_files_of_its_own_pid(workers: Workers) -> None:
    first = worker_pids(workers.gateway)
    before = workers.served()
    workers.call(20)
    assert workers.served() == before + 20  # whichever worker served them, whichever answers /metrics
    assert workers.file_pids() == first  # each worker writes files named with its own pid, no one else's

    killed = next(iter(first))
    os.kill(killed, signal.SIGKILL)
    wait_for(
        "a new worker", lambda: len(worker_pids(workers.gateway)) == 2 and killed not in worker_pids(workers.gateway)
    )
    (replacement,) = worker_pids(workers.gateway) - first
    wait_for("the new worker to start", lambda: replacement in workers.file_pids() and healthy(workers.gateway))
    workers.call(20)

    assert workers.served() == before + 40  # the killed worker's counts stay, the new one's add up
    assert workers.file_pids() <= first | {replacement}  # its files are named with its own pid, no one else's
