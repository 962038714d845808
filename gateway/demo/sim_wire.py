"""How a simulated upstream puts its answers on the wire, misbehaving there as a fault says (delays, stalls, resets)."""

from __future__ import annotations

import asyncio
import socket
import struct

import orjson
from aiohttp import web

from gateway.demo import sim_replies as replies
from gateway.demo.sim_faults import NAMED_ERRORS, Fault
from gateway.demo.sim_flavors import Flavor, SimError

JSON = "application/json"
PACED_FAULTS = frozenset({"slow_first_token", "stall_mid_stream", "reset_mid_stream", "inband_error", "delay"})
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
_GONE_POLL_S = 0.02  # how often a slow answer checks whether its client is still there
_MALFORMED_JSON = b'{"id": "chatcmpl-simulated", "object": "chat.completion", "choices": [{"message": '
_MALFORMED_SSE = (
    b': simulated garbage follows\n\nthis is not an event stream\n\ndata: {"id": "chatcmpl-broken", "cho\n\n'
)


class SimulatedWire:
    """Answers of one simulated server written as they are, or late, cut short, malformed or with an error frame."""

    flavor: Flavor
    clients_gone: int  # requests whose client disconnected before the answer was complete

    def _error(self, error: SimError, retry_after: str | None = None) -> web.Response:
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        return web.Response(
            status=error.status, body=self.flavor.error_body(error), content_type=JSON, headers=headers
        )

    async def _early_fault(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        """Faults that replace the answer entirely; None when the answer goes ahead (maybe misbehaving)."""
        kind = fault.kind
        if kind in NAMED_ERRORS or kind == "status":
            error = (
                self.flavor.errors[kind]
                if kind in NAMED_ERRORS
                else self.flavor.status_error(fault.status, fault.message, fault.code)
            )
            if fault.message is not None:
                error = SimError(error.status, fault.message, error.type, error.code, error.raw_payload)
            return self._error(error, fault.retry_after)
        if kind == "reset":
            _abort(request, hard=True)
            return web.Response()
        if kind == "malformed_json":
            return web.Response(body=_MALFORMED_JSON, content_type=JSON)
        if kind == "malformed_sse":
            response = web.StreamResponse(headers=SSE_HEADERS)
            response.force_close()
            await response.prepare(request)
            try:
                await response.write(_MALFORMED_SSE)
                await response.write_eof()
            except ConnectionError:
                pass  # the client is already gone
            return response
        return None

    def _inband_payload(self, fault: Fault) -> bytes:
        """The error object a stream carries in a `data:` frame: the flavor's error body, under "error" if flat."""
        base = self.flavor.errors["internal"]
        code = fault.code if fault.code is not None else base.code
        payload = self.flavor.payload(SimError(base.status, fault.message or base.message, base.type, code))
        return orjson.dumps(payload if "error" in payload else {"error": payload})

    async def _send(self, request: web.Request, payload: bytes, fault: Fault | None) -> web.StreamResponse:
        """A non-stream answer, delayed or cut short as the fault says."""
        if (
            fault is not None
            and fault.kind in ("slow_first_token", "stall_mid_stream", "delay")
            and not await self._hold(request, fault.delay)
        ):
            return web.Response(status=499)  # nobody is left to read it
        if fault is not None and fault.kind == "reset_mid_stream":
            response = web.StreamResponse(headers={"Content-Type": JSON})
            response.content_length = len(payload)
            await response.prepare(request)
            try:
                await response.write(payload[: len(payload) // 2])
                await _flush_and_abort(request)
            except ConnectionError:
                pass  # the client is already gone
            return response
        return web.Response(body=payload, content_type=JSON)

    async def _stream(self, request: web.Request, frames: list[bytes], fault: Fault | None) -> web.StreamResponse:
        """An SSE answer; frames are written one by one only when a fault paces or breaks the stream."""
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        try:
            if fault is None or fault.kind not in PACED_FAULTS:
                # Nothing to pace: one write carries every frame (still separate SSE events); cheap for the bench.
                await response.write(b"".join(frames) + replies.DONE_FRAME)
            elif not await self._paced(request, response, frames, fault):
                return response  # the connection was dropped on purpose
            await response.write_eof()
        except ConnectionError:
            self.clients_gone += 1  # the client went away mid-stream; nobody is left to tell
        return response

    async def _hold(self, request: web.Request, delay: float) -> bool:
        """Sleep `delay` s like a slow upstream; False (and counted) as soon as the client has gone away."""
        loop = asyncio.get_running_loop()
        until = loop.time() + delay
        while True:
            transport = request.transport
            if transport is None or transport.is_closing():
                self.clients_gone += 1
                return False
            left = until - loop.time()
            if left <= 0:
                return True
            await asyncio.sleep(min(_GONE_POLL_S, left))

    async def _paced(
        self, request: web.Request, response: web.StreamResponse, frames: list[bytes], fault: Fault
    ) -> bool:
        """Write frame by frame, misbehaving at frame `fault.after`; False when the connection was dropped."""
        kind = fault.kind
        strike = min(fault.after, len(frames))
        pace = fault.delay if kind == "delay" else 0.0
        if kind == "slow_first_token" and not await self._hold(request, fault.delay):
            return False
        for index, frame in enumerate([*frames, replies.DONE_FRAME]):
            if index == strike:
                if kind == "stall_mid_stream" and not await self._hold(request, fault.delay):
                    return False
                elif kind == "reset_mid_stream":
                    await _flush_and_abort(request)
                    return False
                elif kind == "inband_error":
                    await response.write(b"data: " + self._inband_payload(fault) + b"\n\n" + replies.DONE_FRAME)
                    return True
            if pace and index < len(frames) and not await self._hold(request, pace):
                return False
            await response.write(frame)
        return True


def _abort(request: web.Request, *, hard: bool) -> None:
    """Drop the connection without a response; `hard` sends a TCP RST instead of a FIN."""
    transport = request.transport
    if transport is None:
        return
    if hard:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _flush_and_abort(request: web.Request) -> None:
    """Let what was written reach the client, then drop the connection (no chunked terminator, no [DONE])."""
    transport = request.transport
    for _ in range(200):
        if transport is None or transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.005)
    _abort(request, hard=False)
