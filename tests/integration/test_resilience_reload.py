"""Hot reload (file watch, POST /admin/reload, SIGHUP) and graceful shutdown (SIGTERM drains, then exits 0)."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.processes import HOST, GatewayProcess, Upstream, start_gateway, start_simulated
from tests.support.resilience import ADMIN_KEY, HELLO, content_of, error_of, eventually, metric

POLICY = """
version: 1
providers:
  cloud: {{type: openai, base_url: "{cloud}", api_key: "${{SIM_KEY}}", hosting: cloud, jurisdiction: sg,
          vendor: alibaba}}
  local: {{type: openai, base_url: "{local}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  on-cloud: {{provider: cloud, model: qwen3.6-plus}}
  on-local: {{provider: local, model: Qwen/Qwen3-32B}}
aliases:
  moving: {{targets: [{moving}], strategy: priority}}
  {extra}: {{targets: [on-local], strategy: priority}}
fallback:
  timeouts: {{connect: 1s, first_token: 2s, total: 10s}}
"""
SIM_KEY = "sk-sim-reload-secret"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    cloud = start_simulated("modelstudio", name="sim-cloud", api_key=SIM_KEY, chunks=8)
    local = start_simulated("vllm", name="sim-local", chunks=8)
    try:
        yield cloud, local
    finally:
        cloud.stop()
        local.stop()


class Reloadable:
    def __init__(self, path: Path, upstreams: tuple[Upstream, Upstream], gateway: GatewayProcess | None = None):
        self.path = path
        self.cloud, self.local = upstreams
        self.gateway = gateway

    def write(self, *, moving: str = "on-cloud", extra: str = "first") -> None:
        self.path.write_text(POLICY.format(cloud=self.cloud.base_url, local=self.local.base_url,
                                           moving=moving, extra=extra))

    def start(self, workers: int = 1, **env: str) -> GatewayProcess:
        self.gateway = start_gateway(
            self.path, env={"SIM_KEY": SIM_KEY, "POLYROUTE_ADMIN_KEY": ADMIN_KEY, **env}, workers=workers
        )
        return self.gateway

    @property
    def gw(self) -> GatewayProcess:
        assert self.gateway is not None
        return self.gateway

    def client(self, **kw: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gw.url("/v1"), api_key="any", max_retries=0, **kw)

    def aliases(self) -> set[str]:
        with self.client() as client:
            return {m.id for m in client.models.list().data}

    def reload(self, key: str = ADMIN_KEY) -> tuple[int, Any]:
        import json
        import urllib.error
        import urllib.request

        req = urllib.request.Request(self.gw.url("/admin/reload"), data=b"", method="POST",
                                     headers={"authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, json.loads(err.read())

    def metrics(self) -> str:
        import urllib.request

        with urllib.request.urlopen(self.gw.url("/metrics"), timeout=5) as resp:
            text: str = resp.read().decode()
            return text


@pytest.fixture(scope="module")
def unwatched(tmp_path_factory: pytest.TempPathFactory, upstreams: tuple[Upstream, Upstream]) -> Iterator[Reloadable]:
    """A gateway that reloads only when asked (so a test knows what made it reload)."""
    r = Reloadable(tmp_path_factory.mktemp("reload") / "policy.yaml", upstreams)
    r.write()
    r.start(POLYROUTE_WATCH_POLICY="false")
    try:
        yield r
    finally:
        r.gw.stop()


@pytest.fixture(autouse=True)
def _first_policy_again(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "unwatched" in request.fixturenames:
        r: Reloadable = request.getfixturevalue("unwatched")
        r.write()
        assert r.reload()[0] == 200


def test_post_admin_reload_swaps_the_policy(unwatched: Reloadable) -> None:
    r = unwatched
    successes = metric(r.metrics(), "polyroute_policy_reloads_total", result="success")
    r.write(extra="fresh")
    assert "fresh" not in r.aliases()
    assert r.reload(key="wrong")[0] == 401
    status, body = r.reload()
    assert status == 200 and "fresh" in body["aliases"]
    assert "fresh" in r.aliases()
    with r.client() as client:
        assert client.chat.completions.create(model="fresh", messages=HELLO).choices[0].message.content
    assert metric(r.metrics(), "polyroute_policy_reloads_total", result="success") == successes + 1


def test_sighup_reloads_the_policy(unwatched: Reloadable) -> None:
    r = unwatched
    r.write(extra="hup")
    r.gw.send_signal(signal.SIGHUP)
    eventually(lambda: "hup" in r.aliases(), "SIGHUP to reload the policy", timeout=5)


def test_an_invalid_policy_is_rejected_logged_counted_and_the_old_one_stays(unwatched: Reloadable) -> None:
    r = unwatched
    errors = metric(r.metrics(), "polyroute_policy_reloads_total", result="error")
    r.write(extra="broken")
    text = r.path.read_text().replace("strategy: priority}", "strategy: priority, bogus_key: sk-leak-123}", 1)
    r.path.write_text(text)
    status, body = r.reload()
    assert status == 422
    assert body["error"]["code"] == "invalid_policy" and "bogus_key" in body["error"]["message"]
    r.gw.send_signal(signal.SIGHUP)
    eventually(lambda: metric(r.metrics(), "polyroute_policy_reloads_total", result="error") == errors + 2,
               "the SIGHUP reload to be rejected too", timeout=5)
    logs = r.gw.logs()
    assert "rejected, keeping the previous policy" in logs and "bogus_key" in logs
    assert "sk-leak-123" not in logs and SIM_KEY not in logs
    assert "broken" not in r.aliases() and "first" in r.aliases()
    with r.client() as client:
        assert client.chat.completions.create(model="moving", messages=HELLO).choices[0].message.content


def test_a_stream_in_flight_finishes_on_the_old_policy(unwatched: Reloadable) -> None:
    r = unwatched
    r.cloud.inject([{"fault": "delay", "delay": 0.15, "count": 1}])
    with r.client() as client, client.chat.completions.with_streaming_response.create(
        model="moving", messages=HELLO, stream=True
    ) as response:
        assert response.headers["x-polyroute-deployment"] == "on-cloud"
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        r.write(moving="on-local")
        assert r.reload()[0] == 200  # swapped while the stream is still running
        rest = [line[len("data: "):] for line in lines if line.startswith("data: ")]
    payloads = [first[len("data: "):], *rest]
    assert payloads[-1] == "[DONE]"
    assert not any(p.startswith('{"error"') for p in payloads)
    assert "sim-cloud" in content_of(payloads)
    with r.client() as client:
        raw = client.chat.completions.with_raw_response.create(model="moving", messages=HELLO)
        assert raw.headers["x-polyroute-deployment"] == "on-local"


def test_an_edited_file_is_picked_up_by_the_watcher(
    tmp_path: Path, upstreams: tuple[Upstream, Upstream]
) -> None:
    r = Reloadable(tmp_path / "policy.yaml", upstreams)
    r.write()
    r.start()
    try:
        r.write(extra="watched-change")
        eventually(lambda: "watched-change" in r.aliases(), "the watcher to reload the edited file", timeout=8)
        assert metric(r.metrics(), "polyroute_policy_reloads_total", result="success") >= 1
    finally:
        r.gw.stop()


def refused(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return False
    except OSError:
        return True


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_a_stream_in_flight_then_exits_cleanly(
    tmp_path: Path, upstreams: tuple[Upstream, Upstream], workers: int
) -> None:
    r = Reloadable(tmp_path / "policy.yaml", upstreams)
    r.write()
    gateway = r.start(workers, POLYROUTE_SHUTDOWN_GRACE_SECONDS="10")
    r.cloud.inject([{"fault": "delay", "delay": 0.2, "count": 1}])
    try:
        with r.client() as client, client.chat.completions.with_streaming_response.create(
            model="moving", messages=HELLO, stream=True
        ) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            gateway.send_signal(signal.SIGTERM)
            eventually(lambda: refused(gateway.port), "the gateway to stop accepting connections", timeout=5)
            rest = [line[len("data: "):] for line in lines if line.startswith("data: ")]
        payloads = [first[len("data: "):], *rest]
        assert payloads[-1] == "[DONE]"
        assert not any(p.startswith('{"error"') for p in payloads)
        assert "sim-cloud" in content_of(payloads)
        assert gateway.process.popen.wait(timeout=10) == 0
    finally:
        gateway.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_what_outlives_the_drain_deadline_is_ended_with_an_error(
    tmp_path: Path, upstreams: tuple[Upstream, Upstream], workers: int
) -> None:
    r = Reloadable(tmp_path / "policy.yaml", upstreams)
    r.write()
    gateway = r.start(workers, POLYROUTE_SHUTDOWN_GRACE_SECONDS="1.5")
    r.cloud.inject([{"fault": "delay", "delay": 0.8, "count": 1}])  # 8 frames: about 6 s, past the deadline
    r.local.inject([{"fault": "delay", "delay": 6, "count": 1}])  # a non-stream answer that comes too late
    r.local.reset_stats()
    outcome: dict[str, Any] = {}

    def slow_non_stream() -> None:
        with r.client() as client:
            try:
                client.chat.completions.create(model="first", messages=HELLO)
            except openai.APIStatusError as exc:
                outcome["status"], outcome["body"] = exc.status_code, exc.body

    try:
        with r.client() as client, client.chat.completions.with_streaming_response.create(
            model="moving", messages=HELLO, stream=True
        ) as response:
            lines = response.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            waiter = threading.Thread(target=slow_non_stream)
            waiter.start()
            eventually(lambda: r.local.stats()["total_requests"] > 0, "the non-stream request to be upstream")
            gateway.send_signal(signal.SIGTERM)
            rest = [line[len("data: "):] for line in lines if line.startswith("data: ")]
        waiter.join(timeout=10)
        assert rest and rest[-1] == "[DONE]", gateway.logs()
        assert error_of(rest[-2])["code"] == "gateway_shutting_down"
        assert outcome.get("status") == 503 and outcome["body"]["code"] == "gateway_shutting_down"
        assert gateway.process.popen.wait(timeout=10) == 0
    finally:
        gateway.stop()
