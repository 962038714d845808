"""A simulated engine's load: requests held fill a fixed number of slots, the rest wait; served as its /metrics.

The metric names are the engines' own (vLLM, SGLang, llama.cpp `--metrics`), written by prometheus-client, so what
polyroute's pollers read here is what they read from a real server: waiting = held beyond the slots, running = held
within them, KV-cache use = the share of slots in use.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest

ENGINE_METRICS: Final = ("vllm", "sglang", "llamacpp")
_NAMES: Final = {
    "vllm": ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"),
    "sglang": ("sglang:num_queue_reqs", "sglang:num_running_reqs", "sglang:token_usage"),
    "llamacpp": ("llamacpp:requests_deferred", "llamacpp:requests_processing", "llamacpp:kv_cache_usage_ratio"),
}
_LABELS: Final = {"vllm": ("model_name", "engine"), "sglang": ("model_name",), "llamacpp": ()}


class SimulatedEngineLoad:
    """Counts the requests a simulated server holds right now; renders them under one engine's metric names."""

    def __init__(self, engine: str, *, slots: int, model: str) -> None:
        if engine not in _NAMES:
            raise ValueError(f"unknown engine metrics {engine!r}; known: {', '.join(ENGINE_METRICS)}")
        self.engine = engine
        self.slots = max(1, slots)
        self.held = 0
        self._registry = CollectorRegistry()
        labels = _LABELS[engine]
        values = {"model_name": model, "engine": "0"}
        waiting, running, kv = (Gauge(n, f"simulated {n}", labels, registry=self._registry) for n in _NAMES[engine])
        self._gauges = tuple(g.labels(*(values[k] for k in labels)) if labels else g for g in (waiting, running, kv))

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1

    async def metrics(self, request: web.Request) -> web.Response:
        running = min(self.held, self.slots)
        waiting, running_gauge, kv = self._gauges
        waiting.set(self.held - running)
        running_gauge.set(running)
        kv.set(running / self.slots)
        return web.Response(body=generate_latest(self._registry), content_type="text/plain", charset="utf-8")
