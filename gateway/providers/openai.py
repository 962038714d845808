"""The fast path: any OpenAI-compatible upstream (Model Studio, vLLM, SGLang, Ollama, llama.cpp), bytes relayed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Mapping

import orjson

from gateway.errors import ErrorClass, UpstreamError
from gateway.policy.table import Protocol, Provider
from gateway.providers.audio_relay import AudioRelay, multipart, transcription_reply
from gateway.providers.base import Endpoint, UpstreamCall, UpstreamReply, Usage
from gateway.providers.complete_reply import incomplete_reply
from gateway.providers.failures import TRANSPORT_ERRORS, inband_error, stream_event, transport_failure, upstream_error
from gateway.providers.http1 import HeaderBlock, HTTPClient, Response, UpstreamLimits
from gateway.providers.images import IMAGE_ENDPOINTS, image_usage
from gateway.providers.multipart import encode_form
from gateway.providers.native_sse import NativeSSERelay, native_usage
from gateway.providers.upstream_proxy import UpstreamProxy

PATHS = {
    Endpoint.CHAT: "/chat/completions",
    Endpoint.COMPLETION: "/completions",
    Endpoint.EMBEDDING: "/embeddings",
    Endpoint.TRANSCRIPTION: "/audio/transcriptions",
    Endpoint.SPEECH: "/audio/speech",
    Endpoint.IMAGE: "/images/generations",
    Endpoint.IMAGE_EDIT: "/images/edits",
}
NATIVE = {Endpoint.RESPONSES: Protocol.RESPONSES, Endpoint.MESSAGES: Protocol.MESSAGES}
ANTHROPIC_VERSION = "2023-06-01"  # sent when the client named none
DONE_EVENT = b"data: [DONE]\n\n"
KEEPALIVE_S = 60.0  # an idle upstream connection is kept this long (or until the upstream closes it)


class OpenAICompatibleProvider:
    """Relays the request body and the upstream's bytes; parses only what accounting and failover need."""

    def __init__(
        self,
        provider: Provider,
        *,
        proxies: Mapping[str, UpstreamProxy] | None = None,
        limits: UpstreamLimits | None = None,
    ) -> None:
        self.name = provider.name
        self._base = (provider.base_url or "").rstrip("/")
        headers = {"content-type": "application/json", "accept": "application/json"}
        headers.update(dict(provider.headers))
        if provider.api_key:
            headers["authorization"] = f"Bearer {provider.api_key}"
        self._headers = headers
        self._stream_headers = {**headers, "accept": "text/event-stream"}
        self._blocks = {False: HeaderBlock(self._headers), True: HeaderBlock(self._stream_headers)}
        # Audio: an upload's content type names its boundary; a speech answer is audio, not JSON or events.
        self._upload_block = HeaderBlock({k: v for k, v in headers.items() if k != "content-type"})
        self._speech_block = HeaderBlock({**headers, "accept": "*/*"})
        self._native_urls = {protocol: url for protocol, url in provider.native_urls}
        # Anthropic-style servers read the key from x-api-key; Model Studio, vLLM and Ollama accept either header.
        self._anthropic_headers = {"anthropic-version": ANTHROPIC_VERSION}
        if provider.api_key:
            self._anthropic_headers["x-api-key"] = provider.api_key
        # A header the client passes on (anthropic-version, anthropic-beta) never replaces one polyroute or the policy
        # sets: credentials, content type, the request id and the provider's configured `headers`.
        self._own_names = frozenset({*(name.lower() for name in headers), "authorization", "x-api-key", "x-request-id"})
        self._http = HTTPClient(
            max_connections=provider.max_connections, keepalive_s=KEEPALIVE_S, proxies=proxies,
            limits=limits or UpstreamLimits(),
        )

    async def close(self) -> None:
        await self._http.close()

    def _request(self, call: UpstreamCall, stream: bool) -> Awaitable[Response]:
        protocol = NATIVE.get(call.endpoint)
        payload: bytes | None = None  # None: the JSON body
        if protocol is not None:
            headers = {**(self._stream_headers if stream else self._headers)}
            if call.request_id:
                headers["x-request-id"] = call.request_id
            if protocol is Protocol.MESSAGES:
                headers.update(self._anthropic_headers)
            headers.update((k, v) for k, v in call.extra_headers.items() if k.lower() not in self._own_names)
            headers.update(call.trace_headers)
            block = HeaderBlock(headers)
            url = self._native_urls.get(protocol)
            if url is None:
                raise UpstreamError(f"provider {self.name} does not speak {protocol.value}",
                                    error_class=ErrorClass.NOT_FOUND)
        else:
            block = self._blocks[stream]
            if call.upload is not None:
                payload, upload_type = multipart(call.body, call.upload)
                block = self._upload_block.plus("content-type", upload_type)
            elif call.endpoint is Endpoint.SPEECH:
                block = self._speech_block
            if call.request_id:  # always one of ours, or the client's when it matched a safe pattern
                block = block.plus("x-request-id", call.request_id)
            for name, value in call.trace_headers:  # empty unless tracing is on
                block = block.plus(name, value)
            url = self._base + PATHS[call.endpoint]
        timeouts = call.timeouts
        if call.endpoint is Endpoint.IMAGE_EDIT:  # relayed as it came: multipart, the files as they were sent
            body = call.body
            files = {"image": body["image"], **({"mask": [body["mask"]]} if body.get("mask") else {})}
            payload, content_type = encode_form(body, files)
            headers = {**self._headers, "content-type": content_type}
            if call.request_id:
                headers["x-request-id"] = call.request_id
            headers.update(call.trace_headers)
            block = HeaderBlock(headers)
        return self._http.post(
            url, orjson.dumps(call.body) if payload is None else payload, block,
            connect_timeout_s=timeouts.connect_s, total_timeout_s=timeouts.total_s,
        )

    async def send(self, call: UpstreamCall) -> UpstreamReply:
        deployment = call.deployment.name
        try:
            resp = await self._request(call, False)
            try:
                body = await resp.read()
            finally:
                resp.release()
        except TRANSPORT_ERRORS as exc:
            timed_out = f"no complete answer within the total timeout of {call.timeouts.total_s:g}s"
            raise transport_failure(exc, timed_out=timed_out, connect_s=call.timeouts.connect_s) from exc
        if resp.status >= 400:
            raise upstream_error(resp.status, body, resp.headers.get("retry-after"), deployment)
        content_type = resp.headers.get("content-type", "application/json")
        if call.endpoint is Endpoint.TRANSCRIPTION:
            return transcription_reply(body, content_type)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("upstream answered 200 with a body that is not JSON",
                                error_class=ErrorClass.SERVER_ERROR) from exc
        failure = incomplete_reply(call.endpoint, data)
        if failure is not None:
            raise failure
        if call.endpoint in NATIVE:
            return UpstreamReply(body=body, usage=native_usage(call.endpoint, data),
                                 content_type=content_type.split(";")[0])
        if call.endpoint in IMAGE_ENDPOINTS:
            return UpstreamReply(body=body, usage=image_usage(data, call.body), content_type=content_type.split(";")[0])
        return UpstreamReply(body=body, usage=Usage.from_openai(data.get("usage")),
                             content_type=content_type.split(";")[0])

    async def open_stream(self, call: UpstreamCall) -> SSERelay | NativeSSERelay | AudioRelay:
        deployment = call.deployment.name
        first_token_s = min(call.timeouts.first_token_s, call.timeouts.total_s)
        try:
            async with asyncio.timeout(first_token_s):
                resp = await self._request(call, True)
                relay: SSERelay | NativeSSERelay | AudioRelay
                if call.endpoint in NATIVE:
                    relay = NativeSSERelay(resp, call.endpoint)
                elif call.endpoint is Endpoint.SPEECH:
                    relay = AudioRelay(resp)
                else:
                    relay = SSERelay(resp, hide_usage_chunk=not call.client_wants_usage)
                try:
                    if resp.status >= 400:
                        body = await resp.read()
                        raise upstream_error(resp.status, body, resp.headers.get("retry-after"), deployment)
                    if isinstance(relay, AudioRelay):
                        pass  # any audio type: relayed as the upstream labels it
                    elif not resp.headers.get("content-type", "").startswith("text/event-stream"):
                        raise await _non_stream_answer(resp, deployment)
                    await relay.read_first()
                except BaseException:
                    resp.release()
                    raise
        except TRANSPORT_ERRORS as exc:
            timed_out = f"no first token within the first_token timeout of {first_token_s:g}s"
            raise transport_failure(exc, timed_out=timed_out, connect_s=call.timeouts.connect_s) from exc
        return relay


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


async def _non_stream_answer(resp: Response, deployment: str) -> UpstreamError:
    body = await resp.read()
    failure = upstream_error(500, body, None, deployment)
    if failure.error_class is ErrorClass.BAD_REQUEST:
        failure.error_class = ErrorClass.SERVER_ERROR
    failure.message = f"upstream answered a stream request without an event stream: {failure.message}"
    return failure


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
