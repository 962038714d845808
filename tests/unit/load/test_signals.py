"""Engine signals read from each engine's own Prometheus text (the names its sources export)."""

from __future__ import annotations

import pytest

from gateway.load.signals import EngineReading, SignalMissingError, learn_slots, read_signals
from gateway.policy.table import Engine

VLLM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen3-32B"} 8.0
vllm:num_requests_running{engine="1",model_name="Qwen/Qwen3-32B"} 6.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="Qwen/Qwen3-32B"} 3.0
vllm:num_requests_waiting{engine="1",model_name="Qwen/Qwen3-32B"} 1.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="Qwen/Qwen3-32B"} 0.93
vllm:kv_cache_usage_perc{engine="1",model_name="Qwen/Qwen3-32B"} 0.41
# HELP vllm:e2e_request_latency_seconds Histogram of e2e request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="0.3",model_name="Qwen/Qwen3-32B"} 0.0
vllm:e2e_request_latency_seconds_count{model_name="Qwen/Qwen3-32B"} 4.0
"""


def test_vllm_waiting_and_running_add_up_over_ranks_and_kv_is_the_fullest_rank() -> None:
    reading = read_signals(Engine.VLLM, VLLM)
    assert (reading.queue, reading.running, reading.kv) == (4.0, 14.0, 0.93)


def test_an_older_vllm_reports_kv_under_its_older_name() -> None:
    old = VLLM.replace("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
    assert read_signals(Engine.VLLM, old).kv == 0.93


def test_sglang_llamacpp_and_tgi_names() -> None:
    sglang = (
        '# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{model_name="m"} 5\n'
        '# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs{model_name="m"} 2\n'
        '# TYPE sglang:token_usage gauge\nsglang:token_usage{model_name="m"} 0.28\n'
    )
    assert read_signals(Engine.SGLANG, sglang).queue == 5 and read_signals(Engine.SGLANG, sglang).kv == 0.28
    llamacpp = (
        "# HELP llamacpp:requests_processing Number of requests processing.\n"
        "# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 1\n"
        "# HELP llamacpp:requests_deferred Number of requests deferred.\n"
        "# TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred 3\n"
    )
    reading = read_signals(Engine.LLAMACPP, llamacpp)  # recent builds export no KV ratio: unknown, not zero
    assert (reading.queue, reading.running, reading.kv) == (3, 1, None)
    tgi = "# TYPE tgi_queue_size gauge\ntgi_queue_size 7\n# TYPE tgi_batch_current_size gauge\n"
    tgi += "tgi_batch_current_size 2\n"
    assert (read_signals(Engine.TGI, tgi).queue, read_signals(Engine.TGI, tgi).running) == (7, 2)


def test_metrics_of_another_engine_or_not_prometheus_are_refused() -> None:
    with pytest.raises(SignalMissingError, match="no sglang:num_queue_reqs"):
        read_signals(Engine.SGLANG, VLLM)
    with pytest.raises(ValueError):
        read_signals(Engine.VLLM, "vllm:num_requests_waiting{engine=\"0\" 3\n")


def test_slots_are_learned_from_readings_where_requests_wait() -> None:
    assert learn_slots(None, EngineReading(queue=0, running=3, kv=None)) is None  # not full: slots unknown
    assert learn_slots(None, EngineReading(queue=2, running=4, kv=None)) == 4  # requests wait: every slot is busy
    assert learn_slots(4, EngineReading(queue=1, running=3, kv=None)) == 4  # fewer (KV-bound) never lowers it
    assert learn_slots(4, EngineReading(queue=1, running=8, kv=None)) == 8
