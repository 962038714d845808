"""Relay of a native Anthropic Messages or OpenAI Responses stream: events as sent, usage and errors read on the way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from gateway.error_classes import ErrorClass
from gateway.errors import UpstreamError
from gateway.providers.base import Endpoint, Usage
from gateway.providers.failures import TRANSPORT_ERRORS, classify_status, stream_event, transport_failure
from gateway.providers.http1_response import Response

# Events polyroute reads (for usage, the end of the stream or an error); every other event is relayed unparsed.
_WATCHED = {
    Endpoint.MESSAGES: frozenset({b"message_start", b"message_delta", b"message_stop", b"error"}),
    Endpoint.RESPONSES: frozenset(
        {b"response.completed", b"response.incomplete", b"response.failed", b"error"}
    ),
}
_FINAL = frozenset({b"message_stop", b"response.completed", b"response.incomplete"})
# Anthropic names its error types; their HTTP statuses decide the error class (and so fallback) as for a reply.
ANTHROPIC_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def native_usage(endpoint: Endpoint, data: Any) -> Usage | None:
    """The usage of a native non-stream reply (a Messages `message` or a Responses `response` object)."""
    if not isinstance(data, dict):
        return None
    if endpoint is Endpoint.MESSAGES:
        return Usage.from_anthropic(data.get("usage"))
    if endpoint is Endpoint.RESPONSES:
        return Usage.from_responses(data.get("usage"))
    return Usage.from_openai(data.get("usage"))


def native_error(payload: Any) -> UpstreamError | None:
    """A native reply or event that is an error (`{"type": "error", ...}` or a failed response); None otherwise."""
    if not isinstance(payload, dict):
        return None
    kind = payload.get("type")
    error: Any = None
    if kind == "error":
        error = payload.get("error", payload)  # Anthropic nests the error object; Responses' `error` event does not
    elif kind == "response.failed" or payload.get("status") == "failed":
        response = payload.get("response", payload)
        error = response.get("error") if isinstance(response, dict) else None
    if not isinstance(error, dict):
        return None
    message = str(error.get("message") or "")[:300]
    code = str(error.get("code") or error.get("type") or "")
    status = ANTHROPIC_ERROR_STATUS.get(str(error.get("type")), 500)
    return UpstreamError(
        f"in-stream error: {code + ': ' if code else ''}{message}",
        error_class=classify_status(status, message, code),
    )


class NativeSSERelay:
    """Reads a native SSE stream event by event and relays each (its `event:` line too) unchanged.

    An event longer than the response's `limits.event_bytes` (a line of it, or all its lines) fails the stream as a
    server error."""

    def __init__(self, resp: Response, endpoint: Endpoint) -> None:
        self._resp = resp
        self._endpoint = endpoint
        self._watched = _WATCHED[endpoint]
        self._usage: Usage | None = None
        self._finished = False
        self._ended = False
        self._max_event = resp.limits.event_bytes
        self.sent = 0  # events read so far (a Responses stream numbers its events from 0)
        self.first_event = b""

    @property
    def usage(self) -> Usage | None:
        return self._usage

    async def read_first(self) -> None:
        event = await self._next_event()
        if event is None:
            raise UpstreamError("stream ended before any event", error_class=ErrorClass.SERVER_ERROR)
        self.first_event = event

    async def events(self) -> AsyncIterator[bytes]:
        try:
            while (event := await self._next_event()) is not None:
                yield event
        except TRANSPORT_ERRORS as exc:  # the request's `total` covers reading the whole stream
            raise transport_failure(exc, timed_out="stream exceeded the total timeout", broke="stream broke") from exc

    async def _next_event(self) -> bytes | None:
        if self._ended:
            return None
        lines: list[bytes] = []
        name = b""
        data: list[bytes] = []
        size = 0
        resp = self._resp
        while True:
            line = await resp.readline()
            if not line:
                if lines:
                    break
                self._ended = True
                if self._finished:
                    return None
                raise UpstreamError("stream closed before its final event", error_class=ErrorClass.CONNECTION_ERROR)
            line = line.rstrip(b"\r\n")
            if not line:
                if lines:
                    break
                continue
            lines.append(line)
            size += len(line) + 1
            if size > self._max_event:
                raise UpstreamError(f"an event of the upstream's stream is longer than {self._max_event} bytes",
                                    error_class=ErrorClass.SERVER_ERROR)
            if line.startswith(b"event:"):
                name = line[6:].strip()
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip())
        self.sent += 1
        if name in self._watched or (not name and data):
            self._inspect(b"\n".join(data))
        return b"\n".join(lines) + b"\n\n"

    def _inspect(self, payload: bytes) -> None:
        event = stream_event(payload)
        failure = native_error(event)
        if failure is not None:
            raise failure
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message")
            self._usage = Usage.from_anthropic(message.get("usage") if isinstance(message, dict) else None)
        elif kind == "message_delta":
            self._usage = _merged(self._usage, event.get("usage"))
        elif kind in ("response.completed", "response.incomplete"):
            response = event.get("response")
            self._usage = Usage.from_responses(response.get("usage") if isinstance(response, dict) else None)
        if isinstance(kind, str) and kind.encode() in _FINAL:
            self._finished = True

    async def aclose(self) -> None:
        if self._ended or self._finished:
            self._resp.release()
        else:
            self._resp.close()  # abandoned mid-stream (client gone): drop the upstream connection


def _merged(start: Usage | None, delta: Any) -> Usage | None:
    """Anthropic's `message_delta` usage is cumulative; fields it leaves out keep their `message_start` values."""
    if not isinstance(delta, dict):
        return start
    base = start or Usage()
    cached = delta.get("cache_read_input_tokens")
    written = delta.get("cache_creation_input_tokens")
    given = delta.get("input_tokens")
    if isinstance(given, int):
        total_input = given + (cached if isinstance(cached, int) else base.cached_tokens) + (
            written if isinstance(written, int) else base.cache_write_tokens
        )
    else:
        total_input = base.input_tokens
    output = delta.get("output_tokens")
    return Usage(
        input_tokens=total_input,
        output_tokens=output if isinstance(output, int) else base.output_tokens,
        cached_tokens=cached if isinstance(cached, int) else base.cached_tokens,
        cache_write_tokens=written if isinstance(written, int) else base.cache_write_tokens,
    )
