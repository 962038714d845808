"""The span exporter process: builds the SDK's spans from a gateway worker's span records and exports them over OTLP.

A worker starts it (observability/span_pipe.py) as `python -m gateway.observability.span_exporter --protocol P
--queue N [--cpus LIST]` and writes span records to its stdin, one JSON array of a request's spans per line; what
became of them goes back on stdout as `exported N`, `export_failed N` and `queue_full N` lines. Encoding and sending
happen here, in the SDK's BatchSpanProcessor and OTLPSpanExporter (http/protobuf or grpc), which read their OTEL_*
variables themselves (endpoint, headers, timeout, compression, certificates, OTEL_BSP_*); the resource comes from
OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES. The process exits when its stdin closes: when its worker stops or
dies.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import IO, Any

import orjson
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

log = logging.getLogger("polyroute.span_exporter")

_KINDS = {2: SpanKind.SERVER, 3: SpanKind.CLIENT}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_ERROR = Status(StatusCode.ERROR)
_UNSET = Status(StatusCode.UNSET)
_TRACESTATE_MAX = 512  # what the SDK's W3C propagator keeps of a client's tracestate
SHUTDOWN_S = 4.0  # once its worker is gone, what is still queued may take this long to export


class Reports:
    """The lines that tell the worker what became of its spans (written from two threads)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def __call__(self, outcome: str, count: int) -> None:
        if count:
            with self._lock:
                self._out.write(f"{outcome} {count}\n".encode())
                self._out.flush()


class CountingExporter(SpanExporter):
    """The OTLP exporter, reporting each batch's outcome and counting the spans queued for it."""

    def __init__(self, inner: SpanExporter, report: Reports) -> None:
        self._inner = inner
        self._report = report
        self.lock = threading.Lock()
        self.queued = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.lock:
            self.queued = max(0, self.queued - len(spans))
        result = self._inner.export(spans)
        self._report("exported" if result is SpanExportResult.SUCCESS else "export_failed", len(spans))
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def otlp_exporter(protocol: str) -> SpanExporter:
    """The SDK's OTLP span exporter for `protocol` (it reads OTEL_EXPORTER_OTLP_* itself)."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


class SteadyResource(Resource):
    """A resource that computes its hash once: the SDK's encoder hashes the resource of every span it encodes (a
    JSON dump of its attributes each time, an eighth of the encoding), and this process has one for its life."""

    def __init__(self, found: Resource) -> None:
        super().__init__(found.attributes, found.schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash


def resource() -> Resource:
    """OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES over the SDK's defaults; service.name "polyroute" if unnamed."""
    found = Resource.create()
    if str(found.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        found = found.merge(Resource({SERVICE_NAME: "polyroute"}))
    return SteadyResource(found)


class SpanBuilder:
    """Span records (observability/span_pipe.py's SpanRecord) to the SDK's ReadableSpan."""

    def __init__(self, resource: Resource) -> None:
        self._resource = resource
        self._scope = InstrumentationScope("polyroute")
        self._states: dict[str, TraceState] = {}

    def _state(self, header: str | None) -> TraceState | None:
        if not header or len(header) > _TRACESTATE_MAX:
            return None
        state = self._states.get(header)
        if state is None:
            if len(self._states) > 1024:  # clients' tracestates vary; keep only a few parsed
                self._states.clear()
            state = self._states[header] = TraceState.from_header([header])
        return state

    def span(self, record: list[Any]) -> ReadableSpan:
        trace_hex, span_hex, parent_hex, remote, tracestate, kind, name, start, end, attributes, events, error = record
        trace_id = int(trace_hex, 16)
        state = self._state(tracestate)
        parent = None
        if parent_hex is not None:
            parent = SpanContext(trace_id, int(parent_hex, 16), bool(remote), _SAMPLED, state)
        return ReadableSpan(
            name=name,
            context=SpanContext(trace_id, int(span_hex, 16), False, _SAMPLED, state),
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            events=[Event(event_name, timestamp=at) for event_name, at in events],
            kind=_KINDS.get(kind, SpanKind.INTERNAL),
            status=_ERROR if error else _UNSET,
            start_time=start,
            end_time=end,
            instrumentation_scope=self._scope,
        )


def _pin(cpus: str) -> None:
    chosen: set[int] = set()
    for part in cpus.split(","):
        first, _, last = part.partition("-")
        chosen.update(range(int(first), int(last or first) + 1))
    try:
        os.sched_setaffinity(0, chosen)
    except OSError as err:
        log.warning("could not run on CPUs %s: %s", cpus, err)


def serve(source: IO[bytes], report: Reports, exporter: SpanExporter, queue: int) -> None:
    """Export the spans read from `source` until it ends, then what is still queued (for at most SHUTDOWN_S)."""
    counting = CountingExporter(exporter, report)
    # The SDK's batch processor reads OTEL_BSP_SCHEDULE_DELAY, _MAX_EXPORT_BATCH_SIZE and _EXPORT_TIMEOUT itself.
    processor = BatchSpanProcessor(counting, max_queue_size=queue)
    builder = SpanBuilder(resource())
    for line in source:
        try:
            records = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.error("skipped a line that is not a list of span records")
            continue
        full = 0
        for record in records:
            with counting.lock:  # the SDK drops the oldest span when its queue is full: count one either way
                if counting.queued >= queue:
                    full += 1
                else:
                    counting.queued += 1
            processor.on_end(builder.span(record))
        report("queue_full", full)
    stopping = threading.Thread(target=processor.shutdown, name="span-exporter-shutdown", daemon=True)
    stopping.start()
    stopping.join(SHUTDOWN_S)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.observability.span_exporter")
    parser.add_argument("--protocol", choices=("http/protobuf", "grpc"), default="http/protobuf")
    parser.add_argument("--queue", type=int, default=2048, help="spans waiting for export at most")
    parser.add_argument("--cpus", help="run on these CPUs (a list such as 0,2-3)")
    args = parser.parse_args(argv)
    # Reports leave on a private copy of stdout; anything a library prints goes to stderr (the worker's log).
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # A full queue is reported to the worker (polyroute_trace_spans_dropped_total); the SDK's warning per dropped
    # span would only add work while a collector is down.
    logging.getLogger("opentelemetry.sdk._shared_internal").setLevel(logging.ERROR)
    if args.cpus:
        _pin(args.cpus)
    serve(sys.stdin.buffer, Reports(out), otlp_exporter(args.protocol), args.queue)
    out.flush()
    os._exit(0)  # the exporter's threads (grpc's among them) are not waited for: the worker is gone or stopping


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
