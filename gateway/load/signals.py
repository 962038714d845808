"""Read an engine's load (waiting, running, KV-cache use) from its Prometheus text, by the engine's own names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from math import fsum, isnan

from prometheus_client.parser import text_string_to_metric_families

from gateway.policy.table import Engine


@dataclass(frozen=True)
class EngineNames:
    """The metric families that carry an engine's load; the first name found of each tuple is used."""

    queue: tuple[str, ...]
    running: tuple[str, ...]
    kv: tuple[str, ...]


# Checked against each engine's sources and docs (README, "Own GPUs first"): vLLM renamed its KV gauge
# (`gpu_cache_usage_perc` is what older servers export); recent llama.cpp builds no longer export the KV ratio.
NAMES: dict[Engine, EngineNames] = {
    Engine.VLLM: EngineNames(
        queue=("vllm:num_requests_waiting",),
        running=("vllm:num_requests_running",),
        kv=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    ),
    Engine.SGLANG: EngineNames(
        queue=("sglang:num_queue_reqs",), running=("sglang:num_running_reqs",), kv=("sglang:token_usage",)
    ),
    Engine.LLAMACPP: EngineNames(
        queue=("llamacpp:requests_deferred",),
        running=("llamacpp:requests_processing",),
        kv=("llamacpp:kv_cache_usage_ratio",),
    ),
    Engine.TGI: EngineNames(queue=("tgi_queue_size",), running=("tgi_batch_current_size",), kv=()),
}


@dataclass(frozen=True)
class EngineReading:
    queue: float
    running: float
    kv: float | None


class SignalMissingError(ValueError):
    """The text parsed, but it has none of the engine's queue metrics (wrong engine, or metrics turned off)."""


def read_signals(engine: Engine, text: str) -> EngineReading:
    """Sum waiting and running over every series (all models and data-parallel ranks of one server); KV use is the
    highest of them (the fullest rank is the one that queues). Raises ValueError on text that is not Prometheus."""
    names = NAMES[engine]
    wanted = {*names.queue, *names.running, *names.kv}
    found: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(_only(text, wanted)):
        if family.name in wanted:
            found[family.name] = [s.value for s in family.samples if s.name == family.name]
    queue = _first(found, names.queue)
    if queue is None:
        raise SignalMissingError(f"no {' or '.join(names.queue)} in the engine's metrics")
    running = _first(found, names.running)
    kv = _first(found, names.kv, max)
    return EngineReading(queue=queue, running=running or 0.0, kv=kv)


def learn_slots(previous: float | None, reading: EngineReading) -> float | None:
    """How many requests the engine runs at once (vLLM `max_num_seqs`, llama.cpp `--parallel`, or fewer when its KV
    cache is the limit), learned without configuration: while requests wait, the running ones fill every slot. The
    highest such count seen is kept; None until the engine was first seen full."""
    if reading.queue <= 0 or reading.running <= 0:
        return previous
    return reading.running if previous is None else max(previous, reading.running)


def _only(text: str, wanted: set[str]) -> str:
    """The lines of the wanted families: parsing a vLLM server's histograms whole would hold the event loop for
    milliseconds four times a second; a prefix test per line does not."""
    prefixes = tuple(p for name in wanted for p in (f"{name}{{", f"{name} ", f"# TYPE {name} ", f"# HELP {name} "))
    return "".join(line + "\n" for line in text.splitlines() if line.startswith(prefixes))


def _first(
    found: dict[str, list[float]], names: tuple[str, ...], combine: Callable[[list[float]], float] = fsum
) -> float | None:
    for name in names:
        values = [v for v in found.get(name, ()) if not isnan(v)]  # NaN: a gauge never set carries no load
        if values:
            return float(combine(values))
    return None
