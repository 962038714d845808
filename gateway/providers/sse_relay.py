"""The relay of an OpenAI-compatible upstream's event stream: its bytes passed on, watched for usage and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gateway.error_classes import ErrorClass
from gateway.errors import UpstreamError
from gateway.providers.base import BodyWriter, Usage
from gateway.providers.failures import TRANSPORT_ERRORS, inband_error, stream_event, transport_failure
from gateway.providers.http1_response import Response

DONE_EVENT = b"data: [DONE]\n\n"


def _ends_event(joint: bytes) -> bool:
    """Whether the last two bytes of one read and the first two of the next hold an empty line."""
    return b"\n\n" in joint or b"\n\r\n" in joint


def _finish_reason_set(payload: bytes) -> bool:
    """Whether an event may carry a finish reason: every content chunk says `"finish_reason":null`, and parsing
    each one only to read that null would tax every token of every stream."""
    at = payload.find(b'"finish_reason"')
    while at >= 0:
        value = payload[at + 15 : at + 40].lstrip(b" :\t")
        if not value.startswith(b"null"):
            return True
        at = payload.find(b'"finish_reason"', at + 15)
    return False


class SSERelay:
    """Reads an upstream SSE stream event by event; relays the bytes, watches for usage and in-band errors.

    Bytes are read as they arrive into a buffer of its own, so that every complete event already received is relayed
    in one write: one send per network read instead of one per event (an upstream often sends several at once).
    Reads that cannot end an event are held apart and joined once one can, so an event is copied once however many
    reads it takes; one longer than the response's `limits.event_bytes` fails the stream as a server error.
    """

    def __init__(self, resp: Response, *, hide_usage_chunk: bool) -> None:
        self._resp = resp
        self._hide_usage_chunk = hide_usage_chunk
        self._usage: Usage | None = None
        self._finished = False
        self._buf = b""  # received; parsed up to self._pos
        self._pos = 0
        self._held: list[bytes] = []  # received after _buf, none of it able to end an event
        self._held_size = 0
        self._max_event = resp.limits.event_bytes
        self._eof = False
        self._plain_tried = False  # _take_plain_run looked at what was received since the last read
        self.first_event = b""
        # relay_to's state: the client's writer, events written, why it stopped, the task's wake-up
        self._writer: BodyWriter | None = None
        self._relayed = 0
        self._failure: UpstreamError | None = None
        self._over = False  # the upstream's answer ended, failed or lost its connection
        self._client_slow = False  # the client's buffer is full: the upstream is not read until it drains
        self._signal: asyncio.Future[None] | None = None

    @property
    def usage(self) -> Usage | None:
        return self._usage

    async def read_first(self) -> None:
        """Wait for the first data event; an error before it is still eligible for failover."""
        while True:
            event = await self._next_event()
            if event is None:
                raise UpstreamError("stream ended before any event", error_class=ErrorClass.SERVER_ERROR)
            if event:
                self.first_event = event
                return

    async def events(self) -> AsyncIterator[bytes]:
        """The rest of the stream, each item every event that had arrived by then (never an empty item)."""
        try:
            while True:
                event = self._take_plain_run() or await self._next_event()
                if event is None:
                    return
                batch = [event] if event else []
                try:
                    while not self._finished and (more := self._take_plain_run() or self._take_event()) is not None:
                        if more:
                            batch.append(more)
                except UpstreamError:
                    if batch:  # what came before an in-band error still reaches the client, then the error
                        yield b"".join(batch)
                    raise
                if batch:
                    yield b"".join(batch)
        except TRANSPORT_ERRORS as exc:  # the request's `total` covers reading the whole stream
            raise transport_failure(exc, timed_out="stream exceeded the total timeout", broke="stream broke") from exc

    def _take_plain_run(self) -> bytes:
        """The complete events at the front of what was received, as the bytes they came in, when they are content
        chunks relayed unchanged (one `data: {...}` line each, no usage, error, finish reason or [DONE]); else b""
        and events are taken one by one. An upstream that sends many tokens in one read is relayed with a few
        scans over its bytes instead of Python work per event. Tried once per read."""
        if self._plain_tried or self._finished:
            return b""
        self._plain_tried = True
        buf, pos = self._buf, self._pos
        limit = len(buf)
        for marker in (b'"error"', b'"usage"', b"\r", b"[DONE]", b'"finish_reason":"'):
            at = buf.find(marker, pos, limit)
            if at >= 0:
                limit = at
        end = buf.rfind(b"\n\n", pos, limit)
        if end < 0 or buf.find(b"\n\n", pos, end) < 0:
            return b""  # no complete event before the first that needs a look, or only one: the usual path
        end += 2
        events = buf.count(b"\n\n", pos, end)
        if (
            not buf.startswith(b"data: {", pos)
            or buf.count(b"\n\ndata: {", pos, end) != events - 1
            or buf.count(b"\n", pos, end) != 2 * events
            or buf.count(b'"finish_reason"', pos, end) != buf.count(b'"finish_reason":null', pos, end)
        ):
            return b""
        self._pos = end
        return buf[pos:end]

    async def _next_event(self) -> bytes | None:
        """The next event to relay; b"" for one to drop; None at the end of the stream."""
        while True:
            if self._finished:
                return None
            event = self._take_event()
            if event is not None:
                return event
            self._receive(await self._resp.readany())

    def _receive(self, data: bytes) -> None:
        """Add a read to the unparsed bytes (b"": the end of the stream); joined with them only if it may end an
        event, a line ending in it or where it meets what came before."""
        held = self._held
        if data:
            before = held[-1] if held else self._buf
            if b"\n\n" not in data and b"\n\r\n" not in data and not _ends_event(before[-2:] + data[:2]):
                held.append(data)
                self._held_size += len(data)
                if self._held_size + len(self._buf) - self._pos > self._max_event:
                    raise UpstreamError(f"an event of the upstream's stream is longer than {self._max_event} bytes",
                                        error_class=ErrorClass.SERVER_ERROR)
                return
        else:
            self._eof = True
        self._plain_tried = False
        parts = [self._buf[self._pos :]] if self._pos < len(self._buf) else []
        parts += held
        if data:
            parts.append(data)
        self._buf = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pos = 0
        held.clear()
        self._held_size = 0

    def _take_event(self) -> bytes | None:
        """The next complete event in the buffer (b"" for one to drop), or None until more bytes arrive."""
        buf, pos = self._buf, self._pos
        end = buf.find(b"\n\n", pos)
        if end >= 0 and buf.startswith(b"data:", pos) and buf.find(b"\n", pos, end) < 0:
            # The usual event, a single `data:` line: no walk line by line.
            self._pos = end + 2
            payload = buf[pos + 5 : end].rstrip(b"\r").lstrip()
            if payload == b"[DONE]":
                self._finished = True
                return DONE_EVENT
            if not self._inspect(payload):
                return b""
            if len(payload) == end - pos - 6 and buf[pos + 5] == 0x20:
                return buf[pos : end + 2]  # exactly `data: <payload>` and a blank line: relayed as it came
            return b"data: " + payload + b"\n\n"
        data_lines: list[bytes] = []
        while True:
            end = buf.find(b"\n", pos)
            if end < 0:
                if not self._eof:
                    if not data_lines:  # only blank lines or fields relayed without their event: not kept
                        self._pos = pos
                    return None
                if pos < len(buf):  # the last line had no newline
                    end = len(buf)
                elif data_lines:
                    break
                else:
                    self._buf, self._pos = b"", 0
                    self._finished = True
                    if self._saw_finish:
                        return DONE_EVENT
                    raise UpstreamError("stream closed before [DONE]", error_class=ErrorClass.CONNECTION_ERROR)
            line = buf[pos:end].rstrip(b"\r")
            pos = end + 1
            if not line:
                if data_lines:
                    break
                continue
            if line.startswith(b"data:"):
                data_lines.append(line[5:].lstrip())
            elif not line.startswith((b":", b"event:", b"id:", b"retry:")):
                raise UpstreamError("malformed event stream line", error_class=ErrorClass.SERVER_ERROR)
        self._pos = min(pos, len(buf))
        return self._payload(b"\n".join(data_lines))

    def _payload(self, payload: bytes) -> bytes:
        if payload == b"[DONE]":
            self._finished = True
            return DONE_EVENT
        if not self._inspect(payload):
            return b""
        # A payload that came as several `data:` lines goes out as several again (SSE joins them with newlines).
        return b"data: " + payload.replace(b"\n", b"\ndata: ") + b"\n\n"

    _saw_finish = False

    def _inspect(self, payload: bytes) -> bool:
        """Watch an event for usage, a finish reason and in-band errors; False for the usage chunk to hide."""
        if b'"error"' in payload or b'"usage"' in payload or _finish_reason_set(payload):
            data = stream_event(payload)
            failure = inband_error(data)
            if failure is not None:
                raise failure
            choices = data.get("choices")
            if isinstance(choices, list) and any(
                isinstance(c, dict) and c.get("finish_reason") for c in choices
            ):
                self._saw_finish = True
            usage = data.get("usage")
            if usage:
                self._usage = Usage.from_openai(usage)
                if self._hide_usage_chunk and not choices:
                    return False
        return True

    async def aclose(self) -> None:
        if self._finished:
            self._resp.release()
        else:
            self._resp.close()  # abandoned mid-stream (client gone): drop the upstream connection

    # Relayed from the upstream connection's callbacks (DirectStream)

    async def relay_to(self, writer: BodyWriter) -> int:
        """Relay the stream from the upstream connection's own callbacks, each read as it arrives, without a task
        step, an await or an ASGI message per read (the usual token of a slow stream costs only its bytes' scans and
        two system calls). A read that is whole content chunks is written as it came after a few scans over it
        (the checks of `_take_plain_run`); anything else takes the event-by-event path of `events`, in the callback.

        Returns the events relayed once [DONE] was relayed, or once the upstream's answer ended, failed or lost its
        connection first, or the client left: `events()` then reads what is left, as it would have. Raises the
        in-band error or event-size failure `events()` would raise (after relaying what came before it). While the
        client reads slower than the upstream sends, the upstream is not read: memory stays bounded."""
        if self._finished:
            return 0
        loop = asyncio.get_running_loop()
        resp = self._resp
        self._writer = writer
        try:
            self._send(self._collect())  # what came with the first event
            if self._failure is None and not self._finished and not resp.stream_to(self):
                return self._relayed  # compressed, or already over: read as usual
            while not (self._finished or self._failure is not None or self._over or writer.gone):
                if self._client_slow:
                    await writer.drain()
                    self._client_slow = False
                    resp.resume_reading()
                    continue
                self._signal = loop.create_future()
                await self._signal
        finally:
            self._signal = None
            resp.stream_to(None)
            if self._client_slow:
                self._client_slow = False
                resp.resume_reading()
            self._writer = None
        if self._failure is not None:
            raise self._failure
        return self._relayed

    def body(self, data: bytes) -> None:
        """BodySink: a read of the upstream's body, in its connection's callback."""
        if self._finished or self._failure is not None:
            return
        if self._pos >= len(self._buf) and not self._held and (events := _plain_events(data)):
            self._send(data, events)
        else:
            try:
                self._receive(data)
            except UpstreamError as err:  # an event longer than the limit
                self._failure = err
            else:
                self._send(self._collect())
        if self._finished or self._failure is not None:
            self._wake_task()

    def woken(self) -> None:
        """BodySink: the upstream's answer ended, failed or lost its connection."""
        self._over = True
        self._wake_task()

    def _send(self, out: bytes, events: int = 0) -> None:
        """Write `out` to the client (`events`: how many it holds, when already counted)."""
        writer = self._writer
        if not out or writer is None:
            return
        self._relayed += events or out.count(b"\n\n")
        if not writer.write(out) and not self._client_slow:
            self._client_slow = True
            self._resp.pause_reading()
            self._wake_task()

    def _collect(self) -> bytes:
        """Every complete event received, as one item to relay (b"" for none); an in-band error is kept in
        `_failure`, after the events that came before it."""
        batch: list[bytes] = []
        try:
            while not self._finished and (more := self._take_plain_run() or self._take_event()) is not None:
                if more:
                    batch.append(more)
        except UpstreamError as err:
            self._failure = err
        return b"".join(batch)

    def _wake_task(self) -> None:
        signal = self._signal
        if signal is not None and not signal.done():
            signal.set_result(None)


def _plain_events(data: bytes) -> int:
    """How many whole content chunks `data` is, when it is only such chunks to relay as they came: one `data: {...}`
    line each, with no usage, error, finish reason or [DONE] (what `SSERelay._take_plain_run` checks, for a read on
    its own); 0 otherwise."""
    if not data.startswith(b"data: {") or not data.endswith(b"\n\n"):
        return 0
    events = data.count(b"\n\n")
    plain = (
        data.count(b"\n") == 2 * events
        and data.count(b"\n\ndata: {") == events - 1
        and b'"usage"' not in data
        and b'"error"' not in data
        and b"\r" not in data
        and b"[DONE]" not in data
        and data.count(b'"finish_reason"') == data.count(b'"finish_reason":null')
    )
    return events if plain else 0
