"""Traced requests recorded as plain data on the request path: random ids, wall-clock times, attributes at hand.

No OpenTelemetry object is built while a request is served: a finished request becomes a few lists (one per span,
`SpanRecord` below) appended to its worker's span pipe (observability/span_pipe.py), and the exporter process builds
the SDK's spans from them (observability/span_exporter.py). Attribute names follow the OpenTelemetry GenAI semantic
conventions (semantic-conventions v1.41.0, the last release before they moved to semantic-conventions-genai;
`gen_ai.provider.name` replaced `gen_ai.system` in v1.37.0).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from random import getrandbits
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.datastructures import Headers

from gateway.observability.sampling import Sampler
from gateway.observability.span_pipe import SpanPipe, SpanRecord
from gateway.observability.tracing import AttemptTrace, FinishedTrace, RequestTrace, Tracer
from gateway.policy.table import Deployment
from gateway.providers.base import Endpoint

SERVER, CLIENT = 2, 3  # OTLP's span kinds
FIRST_TOKEN_EVENT = "polyroute.first_token"
# gen_ai.operation.name by endpoint (else "chat"); images, transcription and speech are the conventions'
# multimodal `generate_content`.
_OPERATIONS = {
    Endpoint.COMPLETION: "text_completion", Endpoint.EMBEDDING: "embeddings", Endpoint.IMAGE: "generate_content",
    Endpoint.IMAGE_EDIT: "generate_content", Endpoint.TRANSCRIPTION: "generate_content",
    Endpoint.SPEECH: "generate_content",
}
# W3C traceparent exactly as the SDK's TraceContextTextMapPropagator accepts it.
_TRACEPARENT = re.compile(r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$")
_TRACEPARENT_MAX = 512
_NO_TRACE_ID, _NO_SPAN_ID = "0" * 32, "0" * 16


class RemoteParent:
    """A client's valid `traceparent` (and its `tracestate`, kept as sent)."""

    __slots__ = ("sampled", "span_id", "trace_id", "tracestate")

    def __init__(self, trace_id: str, span_id: str, sampled: bool, tracestate: str | None) -> None:
        self.trace_id, self.span_id, self.sampled, self.tracestate = trace_id, span_id, sampled, tracestate


def remote_parent(headers: Headers) -> RemoteParent | None:
    """The trace a client's W3C `traceparent` names, with the SDK propagator's rules; None if absent or invalid."""
    header = headers.get("traceparent")
    if not header or len(header) > _TRACEPARENT_MAX:
        return None
    match = _TRACEPARENT.match(header)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if trace_id == _NO_TRACE_ID or span_id == _NO_SPAN_ID or version == "ff" or (version == "00" and rest):
        return None
    states = headers.getlist("tracestate")
    return RemoteParent(trace_id, span_id, bool(int(flags, 16) & 1), ",".join(states) if states else None)


class RecordedAttempt(AttemptTrace):
    """One upstream attempt of a sampled request: its client span's id, times and outcome."""

    __slots__ = ("_headers", "deployment", "end_ns", "error_type", "first_token_ns", "span_id", "start_ns")

    def __init__(self, trace_id: str, deployment: Deployment) -> None:
        self.span_id = f"{getrandbits(64):016x}"
        self.deployment = deployment
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self.error_type: str | None = None
        self.first_token_ns = 0
        # What TraceContextTextMapPropagator.inject writes; tracestate stays with the client's span.
        self._headers = (("traceparent", f"00-{trace_id}-{self.span_id}-01"),)

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return self._headers

    def failed(self, error_type: str) -> None:
        self.error_type = error_type
        self.end_ns = time.time_ns()


class UnsampledAttempt(AttemptTrace):
    """An attempt of a request the sampler left out: nothing is recorded, the trace context still goes upstream."""

    __slots__ = ("_headers",)

    def __init__(self, trace_id: str) -> None:
        self._headers = (("traceparent", f"00-{trace_id}-{getrandbits(64):016x}-00"),)

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return self._headers


class UnsampledRequest(RequestTrace):
    """A request the sampler left out (`on` is False: nothing is built for it); its attempts still propagate."""

    __slots__ = ("_trace_id",)

    def __init__(self, trace_id: str) -> None:
        self._trace_id = trace_id

    def attempt(self, deployment: Deployment) -> AttemptTrace:
        return UnsampledAttempt(self._trace_id)


class RecordedRequest(RequestTrace):
    """A sampled request: its server span's ids and times, its attempts, and what the answer said."""

    __slots__ = ("_answer", "_attempts", "_first_token_ns", "_op", "_parent", "_span_id", "_start_ns", "_trace_id",
                 "_tracer")
    on = True

    def __init__(self, tracer: RecordingTracer, trace_id: str, parent: RemoteParent | None, op: str,
                 start_ns: int) -> None:
        self._tracer, self._trace_id, self._parent, self._op = tracer, trace_id, parent, op
        self._span_id = f"{getrandbits(64):016x}"
        self._start_ns = start_ns
        self._attempts: list[RecordedAttempt] = []
        self._first_token_ns = 0
        self._answer: dict[str, Any] | None = None

    def attempt(self, deployment: Deployment) -> AttemptTrace:
        attempt = RecordedAttempt(self._trace_id, deployment)
        self._attempts.append(attempt)
        return attempt

    def first_token(self) -> None:
        now = self._first_token_ns = time.time_ns()
        if self._attempts:
            self._attempts[-1].first_token_ns = now

    def answered(self, body: bytes) -> None:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return
        if isinstance(parsed, dict):
            self._answer = parsed

    def refused(self, status: int, error_type: str, *, tenant: str, alias: str) -> None:
        attributes = {"gen_ai.operation.name": self._op, "polyroute.tenant": tenant, "gen_ai.request.model": alias,
                      "error.type": error_type, "http.response.status_code": status}
        self._tracer.pipe.add([self._server(f"{self._op} {alias}", time.time_ns(), attributes, True)])

    def _server(self, name: str, end_ns: int, attributes: dict[str, Any], error: bool) -> SpanRecord:
        parent = self._parent
        events = [[FIRST_TOKEN_EVENT, self._first_token_ns]] if self._first_token_ns else []
        if parent is None:
            return [self._trace_id, self._span_id, None, False, None, SERVER, name, self._start_ns, end_ns, attributes,
                    events, error]
        return [self._trace_id, self._span_id, parent.span_id, True, parent.tracestate, SERVER, name, self._start_ns,
                end_ns, attributes, events, error]

    def finish(self, status: int, summary: FinishedTrace) -> None:
        end_ns = time.time_ns()
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": self._op,
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
        error = status >= 400
        if error:
            attributes["error.type"] = summary.error_type or str(status)
        if summary.record_content and self._tracer.capture_content:
            attributes.update(_content(summary.body, self._answer))
        spans = [self._server(f"{self._op} {summary.alias}", end_ns, attributes, error)]
        tracer, trace_id, span_id = self._tracer, self._trace_id, self._span_id
        state = self._parent.tracestate if self._parent is not None else None  # children carry their parent's
        for attempt in self._attempts:
            name, static = tracer.attempt_attributes(attempt.deployment, self._op)
            events = [[FIRST_TOKEN_EVENT, attempt.first_token_ns]] if attempt.first_token_ns else []
            if attempt.error_type is None:  # the attempt that answered (or the one the client left during)
                spans.append([trace_id, attempt.span_id, span_id, False, state, CLIENT, name, attempt.start_ns, end_ns,
                              {**static, **answer}, events, False])
            else:
                spans.append([trace_id, attempt.span_id, span_id, False, state, CLIENT, name, attempt.start_ns,
                              attempt.end_ns, {**static, "error.type": attempt.error_type}, events, True])
        tracer.pipe.add(spans)


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


def _content(body: Mapping[str, Any], answer: dict[str, Any] | None) -> dict[str, str]:
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


def _server_address(base_url: str | None) -> dict[str, Any]:
    if not base_url:
        return {}
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {"server.address": parts.hostname or "", "server.port": port}


class RecordingTracer(Tracer):
    """Samples each request as OTEL_TRACES_SAMPLER says and records the sampled ones for the exporter process."""

    def __init__(self, sampler: Sampler, pipe: SpanPipe, *, capture_content: bool) -> None:
        self.capture_content = capture_content
        self.pipe = pipe
        self._sampler = sampler
        # A deployment's client-span name and fixed attributes, built once per deployment and operation (the
        # deployment object is compared too: a reload may change what a name points at).
        self._attempts: dict[tuple[str, str], tuple[Deployment, str, dict[str, Any]]] = {}

    def attempt_attributes(self, deployment: Deployment, op: str) -> tuple[str, dict[str, Any]]:
        """The span name and fixed attributes of an attempt at `deployment`."""
        found = self._attempts.get((deployment.name, op))
        if found is None or found[0] is not deployment:
            attributes = {
                "gen_ai.operation.name": op,
                "gen_ai.provider.name": deployment.provider.vendor,
                "gen_ai.request.model": deployment.model,
                "polyroute.deployment": deployment.name,
                "polyroute.provider": deployment.provider.name,
                **_server_address(deployment.provider.base_url),
            }
            found = self._attempts[(deployment.name, op)] = (deployment, f"{op} {deployment.model}", attributes)
        return found[1], found[2]

    def request(self, headers: Headers, endpoint: Endpoint, started: float) -> RequestTrace:
        parent = remote_parent(headers) if "traceparent" in headers else None
        if parent is None:
            number = getrandbits(128)
            sampled = self._sampler.sampled(number, None)
            trace_id = f"{number:032x}"
        else:
            trace_id = parent.trace_id
            sampled = self._sampler.sampled(int(trace_id[16:], 16), parent.sampled)
        if not sampled:
            return UnsampledRequest(trace_id)
        start_ns = time.time_ns() - int((time.perf_counter() - started) * 1e9)
        return RecordedRequest(self, trace_id, parent, _OPERATIONS.get(endpoint, "chat"), start_ns)

    async def start(self) -> None:
        await self.pipe.start()

    async def close(self) -> None:
        await self.pipe.close()
