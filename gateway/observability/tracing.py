"""What a request tells its trace: the interface routing and the proxy call, no-op unless tracing is on.

This module never imports opentelemetry; observability/spans.py implements it (plain records on the request path,
exported by a separate process with the SDK, observability/span_exporter.py) and is imported only when the settings
turn tracing on, so an untraced gateway pays one method call per request and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.datastructures import Headers

from gateway.observability.metrics import Metrics
from gateway.policy.table import Deployment
from gateway.providers.base import Endpoint, Usage
from gateway.settings import Settings


class AttemptTrace:
    """One upstream attempt (a client span): no-op by default."""

    __slots__ = ()

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """The trace context to send upstream (`traceparent`), so the upstream's own spans join the trace."""
        return ()

    def failed(self, error_type: str) -> None:
        """The attempt failed with this error class: the span ends now."""


class RequestTrace:
    """One proxied request (the server span): no-op by default. `on` lets callers skip building arguments."""

    __slots__ = ()
    on = False

    def attempt(self, deployment: Deployment) -> AttemptTrace:
        """Start the span of one upstream attempt; the last one that did not fail ends with the request."""
        return NO_ATTEMPT

    def first_token(self) -> None:
        """A stream's first event reached the client."""

    def answered(self, body: bytes) -> None:
        """The non-stream answer's bytes (response model, finish reasons and, when captured, the completion)."""

    def refused(self, status: int, error_type: str, *, tenant: str, alias: str) -> None:
        """The request ended before any attempt (bad key, bad body, no target, a limit)."""

    def finish(self, status: int, summary: FinishedTrace) -> None:
        """The request ended: record what it did and end its spans."""


class FinishedTrace:
    """What the server span records of a finished request (built only when tracing is on)."""

    __slots__ = ("alias", "attempts", "body", "cost_usd", "data_class", "deployment", "error_type", "fallback_reason",
                 "record_content", "route", "tenant", "usage")

    def __init__(
        self, *, alias: str, route: str, tenant: str, data_class: str | None, deployment: Deployment | None,
        attempts: int, fallback_reason: str | None, usage: Usage | None, cost_usd: float | None,
        error_type: str | None, body: Mapping[str, Any], record_content: bool,
    ) -> None:
        self.alias, self.route, self.tenant, self.data_class = alias, route, tenant, data_class
        self.deployment, self.attempts, self.fallback_reason = deployment, attempts, fallback_reason
        self.usage, self.cost_usd, self.error_type = usage, cost_usd, error_type
        self.body, self.record_content = body, record_content


class Tracer:
    """Starts a request's trace; the no-op tracer of a gateway without OTEL_* settings."""

    capture_content = False

    def request(self, headers: Headers, endpoint: Endpoint, started: float) -> RequestTrace:
        """The trace of one request that began at perf_counter() `started`, continuing the client's traceparent."""
        return NO_TRACE

    async def start(self) -> None:
        """Start what exports the spans (before the first request)."""

    async def close(self) -> None:
        """Export what is queued (bounded in time) and stop."""


NO_ATTEMPT = AttemptTrace()
NO_TRACE = RequestTrace()


def build_tracer(settings: Settings, metrics: Metrics) -> Tracer:
    """The recording tracer when the settings turn tracing on, else the no-op one (neither imports opentelemetry:
    the SDK and its exporters run in the span exporter process)."""
    if not settings.tracing:
        return Tracer()
    from gateway.observability.sampling import sampler_from
    from gateway.observability.span_pipe import SpanPipe
    from gateway.observability.spans import RecordingTracer

    pipe = SpanPipe.exporter_process(metrics, protocol=settings.otel_protocol, queue=settings.otel_bsp_max_queue_size,
                                     cpus=settings.otel_exporter_cpus)
    sampler = sampler_from(settings.otel_traces_sampler, settings.otel_traces_sampler_arg)
    return RecordingTracer(sampler, pipe, capture_content=settings.otel_capture_content)
