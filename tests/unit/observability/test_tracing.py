"""Tracing is opt-in: without OTEL_* settings nothing of it is imported; with them, a worker records spans without
the SDK (its exporter process imports it), and samples as OTEL_TRACES_SAMPLER says."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from gateway.settings import Settings

_PROBE = """
import asyncio, sys
import gateway.app, gateway.runtime, gateway.api.proxy, gateway.routing.proxied
from gateway.observability.metrics import Metrics
from gateway.observability.tracing import build_tracer
from gateway.settings import Settings
tracer = build_tracer(Settings(), Metrics())
async def run():
    await tracer.start()
    await tracer.close()
asyncio.run(run())
print(type(tracer).__name__)
print(sorted(m for m in sys.modules if m.startswith(
    ("opentelemetry.sdk.trace", "opentelemetry.exporter", "grpc", "gateway.observability.span"))))
"""


def _probe(env: dict[str, str]) -> list[str]:
    done = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60,
                          check=True)
    return done.stdout.splitlines()


def test_without_an_otlp_endpoint_the_sdk_is_never_imported() -> None:
    tracer, modules = _probe({"PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert tracer == "Tracer"
    assert modules == "[]"


def test_an_otlp_endpoint_turns_tracing_on() -> None:
    env = {"PATH": "/usr/bin:/bin", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    tracer, modules = _probe(env)
    assert tracer == "RecordingTracer"
    # The SDK and its exporters run in the span exporter process.
    assert modules == "['gateway.observability.span_pipe', 'gateway.observability.spans']"


def test_tracing_follows_the_standard_variables() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    on = Settings.model_validate(endpoint)
    assert on.tracing and on.otel_protocol == "http/protobuf"
    assert not Settings.model_validate({**endpoint, "OTEL_SDK_DISABLED": "true"}).tracing
    assert not Settings.model_validate({**endpoint, "OTEL_TRACES_EXPORTER": "none"}).tracing
    with pytest.raises(ValidationError, match="http/protobuf or grpc"):
        Settings.model_validate({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
