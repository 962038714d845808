"""Tracing with the OpenTelemetry SDK: a server span per request, a client span per upstream attempt, OTLP export.

Attribute names follow the OpenTelemetry GenAI semantic conventions (semantic-conventions v1.41.0, the last release
before they moved to semantic-conventions-genai; `gen_ai.provider.name` replaced `gen_ai.system` in v1.37.0).
Imported only when the settings turn tracing on (observability/tracing.py's `build_tracer`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import orjson
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Span, SpanKind, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.datastructures import Headers

from gateway.observability.metrics import Metrics
from gateway.observability.tracing import AttemptTrace, FinishedTrace, RequestTrace, Tracer
from gateway.policy.table import Deployment
from gateway.providers.base import Endpoint
from gateway.settings import Settings

_OPERATIONS = {Endpoint.COMPLETION: "text_completion", Endpoint.EMBEDDING: "embeddings"}  # else "chat"
_W3C = TraceContextTextMapPropagator()  # W3C traceparent/tracestate only, whatever OTEL_PROPAGATORS says
FIRST_TOKEN_EVENT = "polyroute.first_token"


class _CountingExporter(SpanExporter):
    """The OTLP exporter, counting spans the collector did not take and those waiting to be exported."""

    def __init__(self, inner: SpanExporter, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self.lock = threading.Lock()
        self.queued = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.lock:
            self.queued = max(0, self.queued - len(spans))
        result = self._inner.export(spans)
        if result is not SpanExportResult.SUCCESS:
            self._metrics.spans_dropped(reason="export_failed", count=len(spans))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class _CountingProcessor(BatchSpanProcessor):
    """The SDK's batch processor (bounded queue, export off the event loop); a span that finds the queue full is
    dropped by the SDK and counted here."""

    def __init__(self, exporter: _CountingExporter, metrics: Metrics, max_queue_size: int) -> None:
        super().__init__(exporter, max_queue_size=max_queue_size)
        self._exporter = exporter
        self._metrics = metrics
        self._max = max_queue_size

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            exporter = self._exporter
            with exporter.lock:
                full = exporter.queued >= self._max
                if not full:
                    exporter.queued += 1
            if full:
                self._metrics.spans_dropped(reason="queue_full", count=1)
        super().on_end(span)


def _server(base_url: str | None) -> dict[str, Any]:
    if not base_url:
        return {}
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {"server.address": parts.hostname or "", "server.port": port}


class OtelAttempt(AttemptTrace):
    __slots__ = ("_headers", "span")

    def __init__(self, span: Span) -> None:
        self.span = span
        # W3C traceparent written directly (what TraceContextTextMapPropagator.inject writes, without its lookups);
        # tracestate is not sent: polyroute adds no entries, and the client's stays with the client's span.
        ctx = span.get_span_context()
        self._headers = (("traceparent", f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"),)

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return self._headers

    def failed(self, error_type: str) -> None:
        self.span.set_attribute("error.type", error_type)
        self.span.set_status(StatusCode.ERROR)
        self.span.end()


class OtelRequest(RequestTrace):
    __slots__ = ("_answer", "_attempt", "_endpoint", "_owner", "_span")
    on = True

    def __init__(self, owner: OtelTracer, span: Span, endpoint: Endpoint) -> None:
        self._owner, self._span, self._endpoint = owner, span, endpoint
        self._attempt: OtelAttempt | None = None
        self._answer: dict[str, Any] | None = None

    def attempt(self, deployment: Deployment) -> AttemptTrace:
        op = _OPERATIONS.get(self._endpoint, "chat")
        attributes = {
            "gen_ai.operation.name": op,
            "gen_ai.provider.name": deployment.provider.vendor,
            "gen_ai.request.model": deployment.model,
            "polyroute.deployment": deployment.name,
            "polyroute.provider": deployment.provider.name,
            **self._owner.server_of(deployment),
        }
        span = self._owner.tracer.start_span(
            f"{op} {deployment.model}", context=set_span_in_context(self._span), kind=SpanKind.CLIENT,
            attributes=attributes,
        )
        self._attempt = OtelAttempt(span)
        return self._attempt

    def first_token(self) -> None:
        self._span.add_event(FIRST_TOKEN_EVENT)
        if self._attempt is not None:
            self._attempt.span.add_event(FIRST_TOKEN_EVENT)

    def answered(self, body: bytes) -> None:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if isinstance(parsed, dict):
            self._answer = parsed

    def refused(self, status: int, error_type: str, *, tenant: str, alias: str) -> None:
        span = self._span
        span.update_name(f"{_OPERATIONS.get(self._endpoint, 'chat')} {alias}")
        span.set_attributes({"polyroute.tenant": tenant, "gen_ai.request.model": alias, "error.type": error_type,
                             "http.response.status_code": status})
        span.set_status(StatusCode.ERROR)
        span.end()

    def finish(self, status: int, summary: FinishedTrace) -> None:
        span, attempt = self._span, self._attempt
        span.update_name(f"{_OPERATIONS.get(self._endpoint, 'chat')} {summary.alias}")
        attributes: dict[str, Any] = {
            "gen_ai.request.model": summary.alias,
            "http.response.status_code": status,
            "polyroute.route": summary.route,
            "polyroute.tenant": summary.tenant,
            "polyroute.attempts": summary.attempts,
        }
        if summary.data_class is not None:
            attributes["polyroute.data_class"] = summary.data_class
        if summary.fallback_reason is not None and summary.attempts > 1:
            attributes["polyroute.fallback_reason"] = summary.fallback_reason
        if summary.cost_usd is not None:
            attributes["polyroute.cost_usd"] = summary.cost_usd
        deployment = summary.deployment
        answer: dict[str, Any] = {}
        if deployment is not None:
            attributes["polyroute.deployment"] = deployment.name
            attributes["gen_ai.provider.name"] = deployment.provider.vendor
            answer = _answer_attributes(self._answer, deployment, summary)
            attributes.update(answer)
        if status >= 400:
            attributes["error.type"] = summary.error_type or str(status)
            span.set_status(StatusCode.ERROR)
        if summary.record_content and self._owner.capture_content:
            attributes.update(_content(summary.body, self._answer))
        span.set_attributes(attributes)
        if attempt is not None and attempt.span.is_recording():
            attempt.span.set_attributes(answer)
            attempt.span.end()
        span.end()


def _answer_attributes(answer: dict[str, Any] | None, deployment: Deployment, s: FinishedTrace) -> dict[str, Any]:
    attributes: dict[str, Any] = {"gen_ai.response.model": deployment.model}
    if answer is not None:
        model = answer.get("model")
        if isinstance(model, str):
            attributes["gen_ai.response.model"] = model
        choices = answer.get("choices")
        if isinstance(choices, list):
            reasons = [r for c in choices if isinstance(c, dict) and isinstance(r := c.get("finish_reason"), str)]
            if reasons:
                attributes["gen_ai.response.finish_reasons"] = reasons
        if isinstance(answer.get("id"), str):
            attributes["gen_ai.response.id"] = answer["id"]
    if s.usage is not None:
        attributes["gen_ai.usage.input_tokens"] = s.usage.input_tokens
        attributes["gen_ai.usage.output_tokens"] = s.usage.output_tokens
    return attributes


def _content(body: Any, answer: dict[str, Any] | None) -> dict[str, str]:
    """Prompt and completion text (only when captured and the data class is not sensitive)."""
    content: dict[str, str] = {}
    prompt = body.get("messages", body.get("prompt", body.get("input")))
    if prompt is not None:
        content["gen_ai.input.messages"] = orjson.dumps(prompt).decode()
    choices = answer.get("choices") if answer is not None else None
    if isinstance(choices, list):
        output = [c.get("message", c.get("text")) for c in choices if isinstance(c, dict)]
        content["gen_ai.output.messages"] = orjson.dumps(output).decode()
    return content


class OtelTracer(Tracer):
    """The SDK's tracer provider (sampler from OTEL_TRACES_SAMPLER, resource from OTEL_SERVICE_NAME and
    OTEL_RESOURCE_ATTRIBUTES) with an OTLP exporter over http/protobuf or grpc."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.capture_content = settings.otel_capture_content
        resource = Resource.create({} if settings.otel_service_name else {SERVICE_NAME: "polyroute"})
        self._provider = TracerProvider(resource=resource)
        exporter: SpanExporter
        if settings.otel_protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

            exporter = GrpcExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

            exporter = HttpExporter()
        self._processor = _CountingProcessor(_CountingExporter(exporter, metrics), metrics,
                                             settings.otel_bsp_max_queue_size)
        self._provider.add_span_processor(self._processor)
        # A full queue is counted in polyroute_trace_spans_dropped_total; the SDK's warning per dropped span would
        # only add logging work to every request while a collector is down.
        logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)
        self.tracer = self._provider.get_tracer("polyroute")
        self._servers: dict[str, dict[str, Any]] = {}

    def server_of(self, deployment: Deployment) -> dict[str, Any]:
        provider = deployment.provider
        found = self._servers.get(provider.name)
        if found is None:
            found = self._servers[provider.name] = _server(provider.base_url)
        return found

    def request(self, headers: Headers, endpoint: Endpoint, started: float) -> RequestTrace:
        parent: Context | None = _W3C.extract(headers) if "traceparent" in headers else None
        start_ns = time.time_ns() - int((time.perf_counter() - started) * 1e9)
        op = _OPERATIONS.get(endpoint, "chat")
        span = self.tracer.start_span(op, context=parent, kind=SpanKind.SERVER, start_time=start_ns,
                                      attributes={"gen_ai.operation.name": op})
        return OtelRequest(self, span, endpoint)

    def shutdown(self) -> None:
        self._provider.shutdown()
