"""The load tracker: tiers move with hysteresis, engines are read over real loopback HTTP, stale signals fall back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from gateway.demo.simulated import SIMULATED_UPSTREAM, create_simulated_app
from gateway.load.poller import EnginePoller
from gateway.load.tracker import LoadTracker
from gateway.observability.metrics import Metrics
from gateway.policy.loader import load_policy_text
from gateway.policy.plan import EngineLoad
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import PolicyTable

POLICY = """
version: 1
providers:
  gpu: {{type: openai, base_url: "{gpu}", hosting: self_hosted, jurisdiction: onprem, vendor: self, engine: {engine}}}
  cloud: {{type: openai, base_url: "http://127.0.0.1:9/v1", hosting: cloud, jurisdiction: sg, vendor: alibaba}}
deployments:
  local: {{provider: gpu, model: Qwen/Qwen3-32B}}
  plus: {{provider: cloud, model: qwen3.6-plus}}
aliases:
  chat: {{targets: [local, plus], strategy: spillover,
         spillover: {{high: {{queue: 2}}, low: {{queue: 0}}, dwell: 10s}}}}
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def table_for(gpu: str = "http://127.0.0.1:9/v1", engine: str = "none") -> PolicyTable:
    return load_policy_text(POLICY.format(gpu=gpu, engine=engine), {}, fx=CurrencyRates())


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    text = metrics.render()[0].decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_a_tier_spills_above_high_and_comes_back_only_after_dwell_under_low() -> None:
    inflight: dict[str, int] = {}
    clock, metrics = Clock(), Metrics()
    tracker = LoadTracker(metrics, lambda: inflight, clock=clock)
    table = table_for()
    metrics.set_known(aliases=table.aliases, deployments=table.deployments, providers=(), vendors=(), tenants=())
    tracker.configure(table)
    tracker.evaluate()
    assert tracker.snapshot().aliases["chat"].active_tier == 0
    assert sample(metrics, "polyroute_spill_active", alias="chat") == 0.0
    inflight["local"] = 3  # no engine metrics: polyroute's own in-flight count is the queue
    tracker.evaluate()
    assert tracker.snapshot().aliases["chat"].active_tier == 1
    assert tracker.snapshot().aliases["chat"].saturated == frozenset({0})
    assert sample(metrics, "polyroute_spill_active", alias="chat") == 1.0
    assert sample(metrics, "polyroute_spills_total", alias="chat", from_tier="0", to_tier="1") == 1.0
    inflight["local"] = 1  # under high, above low: no flapping back, however long it lasts
    for _ in range(10):
        clock.now += 10
        tracker.evaluate()
    assert tracker.snapshot().aliases["chat"].active_tier == 1
    inflight["local"] = 0
    tracker.evaluate()
    clock.now += 9.9
    tracker.evaluate()
    assert tracker.snapshot().aliases["chat"].active_tier == 1
    clock.now += 0.1
    tracker.evaluate()
    assert tracker.snapshot().aliases["chat"].active_tier == 0
    assert sample(metrics, "polyroute_spill_active", alias="chat") == 0.0
    assert sample(metrics, "polyroute_spills_total", alias="chat", from_tier="1", to_tier="0") == 1.0
    assert sample(metrics, "polyroute_engine_signal_fallback", deployment="local") == 1.0


async def wait_for(condition: Callable[[], bool]) -> None:
    for _ in range(500):  # bounded: 5 s at most
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached within 5 s")


async def test_pollers_read_what_the_engine_holds_and_fall_back_when_it_stops_answering() -> None:
    app = create_simulated_app("vllm", name="sim-vllm", chunks=2, engine_metrics="vllm", slots=1)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    clock, metrics = Clock(), Metrics()
    table = table_for(gpu=f"{url}/v1", engine="vllm")
    metrics.set_known(aliases=table.aliases, deployments=table.deployments, providers=(), vendors=(), tenants=())
    tracker = LoadTracker(metrics, dict, clock=clock)
    tracker.configure(table)
    await tracker.start()
    try:
        await _hold_and_stop(tracker, runner, url, metrics, clock)
    finally:
        await tracker.close()


async def _hold_and_stop(tracker: LoadTracker, runner: web.AppRunner, url: str, metrics: Metrics, clock: Clock) -> None:
    try:
        async with aiohttp.ClientSession() as client:
            body = {"model": "Qwen/Qwen3-32B", "messages": [{"role": "user", "content": "hi"}]}
            slow = {"x-sim-fault": "slow_first_token;delay=1.5"}
            chat = f"{url}/v1/chat/completions"
            held = [asyncio.create_task(client.post(chat, json=body, headers=slow)) for _ in "abcd"]

            def engine() -> EngineLoad:
                return tracker.snapshot().engines["local"]

            await wait_for(lambda: engine().queue == 3)  # one slot: one runs, three wait
            assert (engine().running, engine().kv, engine().source) == (1.0, 1.0, "vllm")
            assert engine().slots == 1.0  # requests wait while one runs: the engine runs one at a time
            # Requests placed between two reads count until the next read shows them; a cloud's are not counted.
            marks = [tracker.placed(name) for name in ("local", "local", "local", "plus")]
            assert marks[3] is None and tracker.snapshot().sent == {"local": 3}
            first = marks[0]
            assert first is not None
            tracker.done(first)  # one ended before the next read: it loads the engine no more
            assert tracker.snapshot().sent == {"local": 2}
            await wait_for(lambda: "local" not in tracker.snapshot().sent)  # the next read shows the others
            second = marks[1]
            assert second is not None
            tracker.done(second)  # counted by that read already: nothing to take back
            assert "local" not in tracker.snapshot().sent
            await wait_for(lambda: tracker.snapshot().aliases["chat"].active_tier == 1)  # queue 3 > high 2
            assert sample(metrics, "polyroute_engine_queue", deployment="local") == 3.0
            for response in await asyncio.gather(*held):
                response.release()
            await wait_for(lambda: engine().queue == 0 and engine().running == 0)
    finally:
        await runner.cleanup()
    await asyncio.sleep(0.3)  # at least one poll finds nobody answering
    clock.now += 0.76  # more than three polls of 250 ms since the last good read
    await wait_for(lambda: tracker.snapshot().engines["local"].source == "inflight")
    assert tracker.snapshot().engines["local"].reason.startswith("engine not answering (Cannot connect")
    assert sample(metrics, "polyroute_engine_signal_fallback", deployment="local") == 1.0
    assert sample(metrics, "polyroute_engine_signal_age_seconds", deployment="local") == pytest.approx(0.76)


@pytest.mark.parametrize("engine", ["sglang", "llamacpp"])
async def test_a_poller_reads_sglang_and_llamacpp_names_from_a_simulated_engine(engine: str) -> None:
    app = create_simulated_app("vllm", name=f"sim-{engine}", chunks=2, engine_metrics=engine, slots=2)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    provider = table_for(gpu=f"{url}/v1", engine=engine).providers["gpu"]
    try:
        async with aiohttp.ClientSession() as client:
            poller = EnginePoller(provider, client, clock=Clock())
            body = {"model": "Qwen/Qwen3-32B", "messages": [{"role": "user", "content": "hi"}]}
            slow = {"x-sim-fault": "slow_first_token;delay=1"}
            chat = f"{url}/v1/chat/completions"
            held = [asyncio.create_task(client.post(chat, json=body, headers=slow)) for _ in "abc"]
            engine_load = app[SIMULATED_UPSTREAM].engine_load
            assert engine_load is not None
            await wait_for(lambda: engine_load.held == 3)
            await poller.read_once()
            for response in await asyncio.gather(*held):
                response.release()
    finally:
        await runner.cleanup()
    assert poller.error is None and poller.reading is not None
    assert (poller.reading.queue, poller.reading.running, poller.reading.kv) == (1.0, 2.0, 1.0)
