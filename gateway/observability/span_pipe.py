"""A worker's span exporter process, seen from the worker: started with it, fed span records in batches over a pipe,
restarted when it dies. What it cannot take is dropped and counted, never waited for.

A finished request's spans become one JSON line at once (bytes: nothing for the garbage collector to track while
they wait), and the lines go down the pipe together when they hold `BATCH_SPANS` spans or `BATCH_DELAY_S` after
the first, whichever comes first. The process (observability/span_exporter.py)
answers on its stdout with what became of them, so that spans lost with a process that died are counted too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

import orjson

from gateway.observability.metrics import Metrics

log = logging.getLogger("polyroute.tracing")

# One span, as the exporter process reads it: [trace_id, span_id, parent_span_id | None, parent_is_remote,
# tracestate | None, kind (2 server, 3 client), name, start_ns, end_ns, attributes, events [[name, ns]], error].
SpanRecord = list[Any]

BATCH_SPANS = 256
BATCH_DELAY_S = 0.05  # the SDK's batch processor waits OTEL_BSP_SCHEDULE_DELAY (5 s) anyway: no one sees this
# Spans written but not yet read by the exporter process (it stalled): past this many bytes a batch is dropped.
MAX_BACKLOG_BYTES = 4 * 1024 * 1024
STOP_TIMEOUT_S = 8.0  # a stopping worker waits this long for its exporter process to send what it holds
_RESTART_DELAY_S = (0.1, 30.0)  # first and longest wait before restarting an exporter process that exited
_STEADY_S = 30.0  # a process that ran this long before exiting is restarted after the first delay again
_OUTCOMES = {b"exported": None, b"export_failed": "export_failed", b"queue_full": "queue_full"}


class SpanPipe:
    """Hands span records to this worker's exporter process (one per worker: it lives and dies with its worker)."""

    def __init__(self, metrics: Metrics, command: Sequence[str]) -> None:
        self._metrics = metrics
        self._command = tuple(command)
        self._pending: list[bytes] = []  # one JSON line per request
        self._pending_spans = 0
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._in_flight = 0  # spans written to the current process that it has not reported on yet
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False

    @classmethod
    def exporter_process(cls, metrics: Metrics, *, protocol: str, queue: int, cpus: str | None) -> SpanPipe:
        """The pipe to `python -m gateway.observability.span_exporter` (see there for the arguments)."""
        command = [sys.executable, "-m", "gateway.observability.span_exporter", "--protocol", protocol,
                   "--queue", str(queue)]
        return cls(metrics, [*command, "--cpus", cpus] if cpus else command)

    async def start(self) -> None:
        """Start the exporter process (before the worker serves: no early request's spans are lost)."""
        self._loop = asyncio.get_running_loop()
        first = await self._spawn()
        self._watcher = asyncio.create_task(self._run(first), name="polyroute-span-exporter")

    def add(self, spans: list[SpanRecord]) -> None:
        """Queue one request's spans (the request path's whole cost: one JSON dump, at times a write)."""
        self._pending.append(orjson.dumps(spans, option=orjson.OPT_APPEND_NEWLINE))
        self._pending_spans += len(spans)
        if self._pending_spans >= BATCH_SPANS:
            self._flush()
        elif self._timer is None and self._loop is not None:
            self._timer = self._loop.call_later(BATCH_DELAY_S, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, spans = self._pending, self._pending_spans
        if not lines:
            return
        self._pending, self._pending_spans = [], 0
        process = self._process
        stdin = process.stdin if process is not None else None
        if stdin is None or stdin.is_closing():
            self._metrics.spans_dropped(reason="exporter_exited", count=spans)
        elif stdin.transport.get_write_buffer_size() > MAX_BACKLOG_BYTES:
            self._metrics.spans_dropped(reason="queue_full", count=spans)
        else:
            stdin.write(b"".join(lines))
            self._in_flight += spans

    async def _spawn(self) -> asyncio.subprocess.Process | None:
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
        except OSError as err:
            log.error("could not start the span exporter process: %s", err)
            return None
        self._process = process
        return process

    async def _run(self, process: asyncio.subprocess.Process | None) -> None:
        """Follow the exporter process, and start a new one whenever it exits, until the worker stops."""
        delay = _RESTART_DELAY_S[0]
        while True:
            began = time.monotonic()
            if process is not None:
                await self._follow(process)
                self._process = None
                if self._in_flight:
                    self._metrics.spans_dropped(reason="exporter_exited", count=self._in_flight)
                    self._in_flight = 0
                if self._closing:
                    return
                log.warning("the span exporter process exited with code %s; starting a new one", process.returncode)
            delay = _RESTART_DELAY_S[0] if time.monotonic() - began > _STEADY_S else min(delay * 2, _RESTART_DELAY_S[1])
            await asyncio.sleep(delay)
            process = await self._spawn()

    async def _follow(self, process: asyncio.subprocess.Process) -> None:
        """Count what the process reports until it closes its stdout, then reap it."""
        assert process.stdout is not None
        while line := await process.stdout.readline():
            outcome, _, count = line.partition(b" ")
            if outcome not in _OUTCOMES or not count.strip().isdigit():
                continue
            spans = int(count)
            self._in_flight = max(0, self._in_flight - spans)
            reason = _OUTCOMES[outcome]
            if reason is not None:
                self._metrics.spans_dropped(reason=reason, count=spans)
        await process.wait()

    async def close(self) -> None:
        """Send what is queued, let the process export it (at most STOP_TIMEOUT_S), and stop it."""
        self._closing = True
        self._flush()
        process, watcher = self._process, self._watcher
        if watcher is None:
            return
        if process is None or process.stdin is None:  # between two processes: nothing to wait for
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            return
        process.stdin.close()  # the process exports what it holds and exits
        try:
            await asyncio.wait_for(asyncio.shield(watcher), STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("the span exporter process did not finish within %.0fs; stopping it", STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await watcher
