"""OpenTelemetry traces exported to a real OTLP receiver: span tree, GenAI attributes, propagation, content capture,
sampling, a collector that is down, and the span exporter process's lifetime (it lives and dies with its worker)."""

from __future__ import annotations

import os
import signal
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from tests.support.otlp import OtlpGrpcReceiver, OtlpReceiver, ReceivedSpan, alive, span_exporters, until
from tests.support.processes import GatewayProcess, Upstream, free_port, start_gateway, start_simulated
from tests.support.resilience import metric

CLOUD_KEY = "sk-sim-cloud-secret"
TEAM_KEY = "sk-team-a-trace-secret"
SERVER, CLIENT = 2, 3
POLICY = """
version: 1
sensitive_data_classes: [pii]
providers:
  modelstudio: {{type: openai, base_url: "{cloud}", api_key: "${{SIM_CLOUD_KEY}}", hosting: cloud,
                 jurisdiction: sg, vendor: alibaba}}
  vllm: {{type: openai, base_url: "{vllm}", hosting: self_hosted, jurisdiction: onprem, vendor: self}}
  vllm-litellm: {{type: litellm, litellm_prefix: openai, base_url: "{vllm}", api_key: unused,
                  hosting: self_hosted, jurisdiction: onprem, vendor: self}}
deployments:
  primary: {{provider: modelstudio, model: qwen3.6-plus}}
  backup:  {{provider: vllm, model: Qwen/Qwen3-32B}}
  translated: {{provider: vllm-litellm, model: Qwen/Qwen3-32B}}
aliases:
  chain: {{targets: [primary, backup], strategy: priority}}
  via-litellm: {{targets: [translated], strategy: priority}}
fallback:
  on: [rate_limit, timeout, server_error, connection_error]
  retries: {{attempts: 0, backoff: 10ms, max_backoff: 50ms}}
  timeouts: {{connect: 2s, first_token: 5s, total: 20s}}
tenants:
  team-a: {{api_keys: ["${{TEAM_KEY}}"]}}
"""
PROMPT = "tell me about the secret project falcon"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@dataclass
class Traced:
    receiver: OtlpReceiver
    captured: GatewayProcess  # POLYROUTE_OTEL_CAPTURE_CONTENT=true
    plain: GatewayProcess  # tracing on, content capture left at its default
    cloud: Upstream
    vllm: Upstream

    def __post_init__(self) -> None:
        self._clients: list[openai.OpenAI] = []

    def client(self, gateway: GatewayProcess) -> openai.OpenAI:
        client = openai.OpenAI(base_url=gateway.url("/v1"), api_key=TEAM_KEY, max_retries=0)
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()


def _env(endpoint: str, **more: str) -> dict[str, str]:
    return {
        "SIM_CLOUD_KEY": CLOUD_KEY, "TEAM_KEY": TEAM_KEY, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_SERVICE_NAME": "polyroute-under-test", **more,
    }


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Upstream, Upstream]]:
    cloud = start_simulated("modelstudio", name="sim-cloud", api_key=CLOUD_KEY, chunks=3)
    vllm = start_simulated("vllm", name="sim-local", chunks=3)
    path: Path = tmp_path_factory.mktemp("tracing") / "policy.yaml"
    path.write_text(POLICY.format(cloud=cloud.base_url, vllm=vllm.base_url))
    try:
        yield path, cloud, vllm
    finally:
        cloud.stop()
        vllm.stop()


@pytest.fixture(scope="module")
def traced(policy: tuple[Path, Upstream, Upstream]) -> Iterator[Traced]:
    path, cloud, vllm = policy
    with OtlpReceiver() as receiver:
        captured = start_gateway(path, env=_env(receiver.endpoint, POLYROUTE_OTEL_CAPTURE_CONTENT="true"))
        plain = start_gateway(path, env=_env(receiver.endpoint))
        stack = Traced(receiver, captured, plain, cloud, vllm)
        try:
            yield stack
        finally:
            stack.close()
            captured.stop()
            plain.stop()


def _server_span(receiver: OtlpReceiver, trace_id: str) -> ReceivedSpan:
    receiver.wait_for(lambda: any(s.kind == SERVER for s in receiver.trace(trace_id)), f"server span of {trace_id}")
    return next(s for s in receiver.trace(trace_id) if s.kind == SERVER)


def _traceparent(trace_id: str) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01"}


def test_a_fallback_is_one_server_span_with_a_client_span_per_attempt(traced: Traced) -> None:
    traced.cloud.inject([{"fault": "internal", "count": 1, "model": "qwen3.6-plus"}])
    traced.vllm.reset_stats()
    raw = traced.client(traced.captured).chat.completions.with_raw_response.create(
        model="chain", messages=[{"role": "user", "content": PROMPT}], extra_headers=_traceparent(TRACE_ID),
    )
    assert raw.headers["x-polyroute-deployment"] == "backup"
    server = _server_span(traced.receiver, TRACE_ID)
    # The client's trace is continued: the gateway's span is a child of the span the client named.
    assert server.parent_span_id == CLIENT_SPAN
    assert server.name == "chat chain"
    assert server.service == "polyroute-under-test"
    attrs = server.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "chain"
    assert attrs["gen_ai.response.model"] == "Qwen/Qwen3-32B"
    assert attrs["gen_ai.provider.name"] == "self"
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["polyroute.deployment"] == "backup"
    assert attrs["polyroute.fallback_reason"] == "server_error"
    assert attrs["polyroute.tenant"] == "team-a"
    assert attrs["polyroute.attempts"] == 2
    assert "polyroute.cost_usd" in attrs
    assert all(TEAM_KEY not in str(v) and CLOUD_KEY not in str(v) for s in traced.receiver.spans
               for v in s.attributes.values())

    traced.receiver.wait_for(lambda: sum(s.kind == CLIENT for s in traced.receiver.trace(TRACE_ID)) == 2,
                             "two client spans")
    attempts = [s for s in traced.receiver.trace(TRACE_ID) if s.kind == CLIENT]
    assert all(s.parent_span_id == server.span_id for s in attempts)
    by_model = {s.attributes["gen_ai.request.model"]: s for s in attempts}
    failed, answered = by_model["qwen3.6-plus"], by_model["Qwen/Qwen3-32B"]
    assert failed.name == "chat qwen3.6-plus"
    assert failed.attributes["error.type"] == "server_error"
    assert failed.attributes["gen_ai.provider.name"] == "alibaba"
    assert "error.type" not in answered.attributes
    assert answered.attributes["server.address"] == "127.0.0.1"
    assert answered.attributes["server.port"] == traced.vllm.port
    assert answered.attributes["gen_ai.usage.output_tokens"] > 0
    # The upstream received the trace context of the attempt that reached it: its own spans join the trace.
    assert traced.vllm.stats()["traceparents"] == [f"00-{TRACE_ID}-{answered.span_id}-01"]


def test_a_stream_records_its_first_token(traced: Traced) -> None:
    trace_id = "5bf92f3577b34da6a3ce929d0e0e4737"
    stream = traced.client(traced.captured).chat.completions.create(
        model="chain", messages=[{"role": "user", "content": "hi"}], stream=True, extra_headers=_traceparent(trace_id),
    )
    with stream:
        assert [chunk for chunk in stream]
    server = _server_span(traced.receiver, trace_id)
    assert "polyroute.first_token" in server.events
    assert server.attributes["gen_ai.usage.output_tokens"] > 0


def test_content_is_captured_when_asked_except_for_sensitive_data_classes(traced: Traced) -> None:
    open_id, pii_id = "6bf92f3577b34da6a3ce929d0e0e4738", "7bf92f3577b34da6a3ce929d0e0e4739"
    client = traced.client(traced.captured)
    client.chat.completions.create(model="chain", messages=[{"role": "user", "content": PROMPT}],
                                   extra_headers={**_traceparent(open_id), "x-polyroute-data-class": "internal"})
    client.chat.completions.create(model="chain", messages=[{"role": "user", "content": PROMPT}],
                                   extra_headers={**_traceparent(pii_id), "x-polyroute-data-class": "pii"})
    recorded = _server_span(traced.receiver, open_id).attributes
    assert PROMPT in recorded["gen_ai.input.messages"]
    assert recorded["gen_ai.output.messages"]
    assert recorded["polyroute.data_class"] == "internal"
    sensitive = _server_span(traced.receiver, pii_id)
    assert sensitive.attributes["polyroute.data_class"] == "pii"
    assert all(PROMPT not in str(v) for s in traced.receiver.trace(pii_id) for v in s.attributes.values())


def test_content_is_not_captured_by_default(traced: Traced) -> None:
    trace_id = "8bf92f3577b34da6a3ce929d0e0e4740"
    traced.client(traced.plain).chat.completions.create(
        model="chain", messages=[{"role": "user", "content": PROMPT}], extra_headers=_traceparent(trace_id),
    )
    server = _server_span(traced.receiver, trace_id)
    assert server.attributes["gen_ai.request.model"] == "chain"
    assert all(PROMPT not in str(v) for s in traced.receiver.trace(trace_id) for v in s.attributes.values())


def test_a_client_trace_that_is_not_sampled_is_not_recorded_but_still_propagated(traced: Traced) -> None:
    unsampled, sampled = "0cf92f3577b34da6a3ce929d0e0e4746", "1cf92f3577b34da6a3ce929d0e0e4747"
    traced.cloud.reset_stats()
    client = traced.client(traced.plain)  # OTEL_TRACES_SAMPLER unset: parentbased_always_on
    client.chat.completions.create(model="chain", messages=[{"role": "user", "content": "hi"}],
                                   extra_headers={"traceparent": f"00-{unsampled}-{CLIENT_SPAN}-00"})
    client.chat.completions.create(model="chain", messages=[{"role": "user", "content": "hi"}],
                                   extra_headers=_traceparent(sampled))
    _server_span(traced.receiver, sampled)  # spans leave in order: the first request's would have come first
    assert traced.receiver.trace(unsampled) == []
    first, second = traced.cloud.stats()["traceparents"]
    assert first.startswith(f"00-{unsampled}-") and first.endswith("-00")
    assert second.startswith(f"00-{sampled}-") and second.endswith("-01")


def test_a_litellm_provider_sends_the_trace_context_upstream_too(traced: Traced) -> None:
    trace_id = "9bf92f3577b34da6a3ce929d0e0e4741"
    traced.vllm.reset_stats()
    traced.client(traced.plain).chat.completions.create(
        model="via-litellm", messages=[{"role": "user", "content": "hi"}], extra_headers=_traceparent(trace_id),
    )
    server = _server_span(traced.receiver, trace_id)
    traced.receiver.wait_for(lambda: any(s.kind == CLIENT for s in traced.receiver.trace(trace_id)), "client span")
    attempt = next(s for s in traced.receiver.trace(trace_id) if s.kind == CLIENT)
    assert attempt.parent_span_id == server.span_id
    assert traced.vllm.stats()["traceparents"] == [f"00-{trace_id}-{attempt.span_id}-01"]


def test_a_dead_collector_fails_no_request_and_drops_are_counted(policy: tuple[Path, Upstream, Upstream]) -> None:
    path, _, _ = policy
    gateway = start_gateway(path, env=_env(f"http://127.0.0.1:{free_port()}", OTEL_EXPORTER_OTLP_TIMEOUT="1"))
    try:
        with openai.OpenAI(base_url=gateway.url("/v1"), api_key=TEAM_KEY, max_retries=0) as client:
            for _ in range(20):
                reply = client.chat.completions.create(model="chain", messages=[{"role": "user", "content": "hi"}])
                assert reply.choices[0].message.content
        until(lambda: _dropped(gateway) > 0, "dropped spans counted", limit_s=30)
    finally:
        gateway.stop()


def _dropped(gateway: GatewayProcess) -> float:
    with urllib.request.urlopen(gateway.url("/metrics"), timeout=5) as resp:
        return metric(resp.read().decode(), "polyroute_trace_spans_dropped_total")



def test_spans_go_over_grpc_when_asked(policy: tuple[Path, Upstream, Upstream]) -> None:
    path, _, _ = policy
    trace_id = "abf92f3577b34da6a3ce929d0e0e4742"
    with OtlpGrpcReceiver() as receiver:
        gateway = start_gateway(path, env=_env(receiver.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL="grpc"))
        try:
            with openai.OpenAI(base_url=gateway.url("/v1"), api_key=TEAM_KEY, max_retries=0) as client:
                client.chat.completions.create(model="chain", messages=[{"role": "user", "content": "hi"}],
                                               extra_headers=_traceparent(trace_id))
            server = _server_span(receiver, trace_id)
            assert server.name == "chat chain"
            assert server.attributes["polyroute.deployment"] == "primary"
        finally:
            gateway.stop()


def _exporter_of(gateway: GatewayProcess) -> int:
    until(lambda: len(span_exporters(gateway.process.pid)) == 1, "one span exporter process")
    return span_exporters(gateway.process.pid)[0]


def _ask(gateway: GatewayProcess, trace_id: str | None = None) -> None:
    with openai.OpenAI(base_url=gateway.url("/v1"), api_key=TEAM_KEY, max_retries=0) as client:
        reply = client.chat.completions.create(model="chain", messages=[{"role": "user", "content": "hi"}],
                                               extra_headers=_traceparent(trace_id) if trace_id else None)
        assert reply.choices[0].message.content


def test_the_exporter_process_exits_with_its_gateway(policy: tuple[Path, Upstream, Upstream]) -> None:
    path, _, _ = policy
    trace_id = "bbf92f3577b34da6a3ce929d0e0e4743"
    with OtlpReceiver() as receiver:
        killed = start_gateway(path, env=_env(receiver.endpoint))
        # Spans wait for a full batch or a minute: only the exporter's shutdown sends this one.
        stopped = start_gateway(path, env=_env(receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="60000"))
        try:
            orphan = _exporter_of(killed)
            os.kill(killed.process.pid, signal.SIGKILL)  # the gateway alone, not its process group
            until(lambda: not alive(orphan), "the exporter process of a killed gateway exits", limit_s=30)

            exporter = _exporter_of(stopped)
            _ask(stopped, trace_id)
            assert receiver.trace(trace_id) == []
            stopped.stop()
            assert not alive(exporter)
            # What the exporter process held when its gateway stopped was exported first.
            assert _server_span(receiver, trace_id).name == "chat chain"
        finally:
            killed.stop()
            stopped.stop()


def test_a_killed_exporter_process_fails_no_request_and_is_replaced(policy: tuple[Path, Upstream, Upstream]) -> None:
    path, _, _ = policy
    trace_id = "dbf92f3577b34da6a3ce929d0e0e4744"
    with OtlpReceiver() as receiver:
        gateway = start_gateway(path, env=_env(receiver.endpoint))
        try:
            first = _exporter_of(gateway)
            os.kill(first, signal.SIGKILL)
            for _ in range(20):
                _ask(gateway)
            until(lambda: span_exporters(gateway.process.pid) not in ([], [first]), "a new exporter process")
            _ask(gateway, trace_id)
            assert _server_span(receiver, trace_id).attributes["polyroute.deployment"] == "primary"
            assert "exited with code -9; starting a new one" in gateway.logs()
        finally:
            gateway.stop()


def test_each_worker_has_its_own_exporter_process(policy: tuple[Path, Upstream, Upstream]) -> None:
    path, _, _ = policy
    trace_id = "ebf92f3577b34da6a3ce929d0e0e4745"
    with OtlpReceiver() as receiver:
        gateway = start_gateway(path, env=_env(receiver.endpoint), workers=2, timeout=60)  # a busy machine
        try:
            until(lambda: len(span_exporters(gateway.process.pid)) == 2, "two span exporter processes")
            parents = {_parent(pid) for pid in span_exporters(gateway.process.pid)}
            assert len(parents) == 2 and gateway.process.pid not in parents  # one under each worker
            _ask(gateway, trace_id)
            assert _server_span(receiver, trace_id).name == "chat chain"
        finally:
            gateway.stop()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
