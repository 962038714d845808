"""polyroute samples exactly the requests the OpenTelemetry SDK would, for every OTEL_TRACES_SAMPLER it knows, and
continues exactly the traceparent headers the SDK's W3C propagator accepts."""

from __future__ import annotations

import random

import pytest
from opentelemetry.sdk.trace import TracerProvider, sampling
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.datastructures import Headers

from gateway.observability.sampling import sampler_from
from gateway.observability.spans import remote_parent

SAMPLERS = [
    ("always_on", None), ("always_off", None), ("parentbased_always_on", None), ("parentbased_always_off", None),
    ("traceidratio", "0.25"), ("parentbased_traceidratio", "0.25"), ("traceidratio", "0"), ("traceidratio", "1"),
    ("TraceIdRatio", "0.5"), ("traceidratio", "1.5"), ("traceidratio", "half"), ("parentbased_traceidratio", None),
    ("jaeger_remote", None), (None, None),
]


def _sdk(name: str | None, argument: str | None, monkeypatch: pytest.MonkeyPatch) -> sampling.Sampler:
    """The sampler the SDK builds from the same variables."""
    for variable, value in (("OTEL_TRACES_SAMPLER", name), ("OTEL_TRACES_SAMPLER_ARG", argument)):
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            monkeypatch.setenv(variable, value)
    return TracerProvider(shutdown_on_exit=False).sampler


@pytest.mark.parametrize(("name", "argument"), SAMPLERS)
def test_the_same_requests_are_sampled_as_the_sdk_samples(
    name: str | None, argument: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdk = _sdk(name, argument, monkeypatch)
    ours = sampler_from(name, argument)
    draw = random.Random(19)
    for _ in range(2000):
        trace_id = draw.getrandbits(128)
        parent: bool | None = draw.choice((None, True, False))
        context = None
        if parent is not None:
            flags = TraceFlags(TraceFlags.SAMPLED if parent else TraceFlags.DEFAULT)
            span = NonRecordingSpan(SpanContext(trace_id, draw.getrandbits(64) | 1, True, flags))
            context = set_span_in_context(span)
        expected = sdk.should_sample(context, trace_id, "chat").decision.is_sampled()
        assert ours.sampled(trace_id, parent) == expected, (name, argument, hex(trace_id), parent)


@pytest.mark.parametrize("header", [
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\t",
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" + " " * 600,
    "garbage",
])
def test_a_traceparent_is_continued_when_the_sdk_would_continue_it(header: str) -> None:
    headers = Headers(raw=[(b"traceparent", header.encode()), (b"tracestate", b"vendor=opaque")])
    context = TraceContextTextMapPropagator().extract({"traceparent": header, "tracestate": "vendor=opaque"})
    expected = NonRecordingSpan(SpanContext(0, 0, False)).get_span_context()
    for value in context.values():
        expected = value.get_span_context()
    found = remote_parent(headers)
    if not expected.is_valid:
        assert found is None
        return
    assert found is not None
    assert (int(found.trace_id, 16), int(found.span_id, 16), found.sampled) == (
        expected.trace_id, expected.span_id, expected.trace_flags.sampled)
    assert found.tracestate == "vendor=opaque"
