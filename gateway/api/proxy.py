"""The proxy's ASGI I/O behind every model route: read the request, write the answer, relay the stream.

What happens between (the plan, admission, attempts, outcome, usage record) is routing/proxied.py's, without HTTP.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from random import getrandbits

from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from gateway.api.asgi_io import RequestHeaders, body_chunk, content_type, read_body, response_start, send_whole
from gateway.api.auth import authenticate
from gateway.api.body_writer import body_writer, start_chunked, write_whole
from gateway.api.lifetime import Guard
from gateway.api.parsing import ParsedRequest, parse_request, request_facts
from gateway.api.protocol_request import ProtocolRequest, parse_protocol_request, protocol_error_response
from gateway.api.responses import error_response
from gateway.errors import PolyrouteError, ShuttingDownError, UpstreamError
from gateway.policy.plan import RequestFacts
from gateway.protocols.adapters import CLIENT_PROTOCOLS
from gateway.providers.base import DirectStream, Endpoint, UpstreamReply, UpstreamStream
from gateway.routing.admission import Admission
from gateway.routing.proxied import ProxiedRequest, RequestFlow
from gateway.runtime import Runtime

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_EVENT_STREAM = content_type("text/event-stream")
_MEDIA_TYPES: dict[str, bytes] = {}  # upstream content types, as sent back
SHADOW_CAPTURE_ITEMS = 20_000  # a sampled stream's relayed items kept for its shadow comparison, at most
# A route's own reader of its body (images: JSON checked against the Images API, or multipart).
BodyParser = Callable[[bytes, Headers], Awaitable[ParsedRequest]]


class ProxyService:
    """One instance per app; every request reads the active policy once and keeps it to the end."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._flow = RequestFlow(
            executor=runtime.executor,
            health=runtime.health,
            admission=Admission(runtime.store, runtime.metrics),
            accountant=runtime.accountant,
            metrics=runtime.metrics,
            load=runtime.load,
            shadow=runtime.shadow,
        )

    def route(self, endpoint: Endpoint, parse: BodyParser | None = None) -> ModelRoute:
        """The ASGI app of one model route; `parse` reads its body (default: an OpenAI JSON body)."""
        return ModelRoute(self, endpoint, parse)

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint, parse: BodyParser | None = None
    ) -> None:
        started = time.perf_counter()
        headers = RequestHeaders(scope)
        given_id = headers.get("x-request-id")
        request_id = given_id if given_id and _REQUEST_ID.match(given_id) else f"{getrandbits(128):032x}"
        active = self._rt.active
        tenant_name, alias = "none", "none"
        facts: RequestFacts | None = None
        adapter = CLIENT_PROTOCOLS.get(endpoint)  # Messages and Responses: translated to Chat for routing
        proto: ProtocolRequest | None = None
        trace = self._rt.tracer.request(headers, endpoint, started)
        try:
            tenant = authenticate(headers, active.table)
            tenant_name = tenant.name
            raw = await read_body(receive, headers, self._rt.settings.max_body_bytes)
            if parse is not None:
                parsed = await parse(raw, headers)
            elif adapter is None:
                parsed = parse_request(raw, endpoint, headers)
            else:
                parsed, proto = parse_protocol_request(raw, adapter, headers)
            alias = parsed.model
            facts = request_facts(parsed, tenant)
            job = await self._flow.admit(
                active.table, active.providers, tenant, facts, parsed, request_id=request_id, started=started,
                proto=proto, trace=trace,
            )
        except PolyrouteError as err:
            self._flow.refused(tenant_name, alias, err.status, started, facts, parsed.body if facts else None)
            trace.refused(err.status, err.error_type, tenant=tenant_name, alias=alias)
            if adapter is not None:
                response = protocol_error_response(adapter, err, {"x-request-id": request_id})
            else:
                response = error_response(err, {"x-request-id": request_id})
            await response(scope, receive, send)
            return
        # After the body was read, the next ASGI message can only be the disconnect the guard waits for.
        guard = Guard(receive, self._rt.drain, scope)
        try:
            if parsed.stream:
                await _stream(job, proto, scope, receive, send, guard)
            else:
                await _once(job, proto, scope, receive, send, guard)
        finally:
            guard.disarm()


class ModelRoute:
    """A model route as a plain ASGI app (a class, so that Starlette's router does not wrap it in a Request)."""

    def __init__(self, proxy: ProxyService, endpoint: Endpoint, parse: BodyParser | None = None) -> None:
        self._proxy = proxy
        self._endpoint = endpoint
        self._parse = parse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._proxy.handle(scope, receive, send, self._endpoint, self._parse)


async def _failed(
    job: ProxiedRequest, proto: ProtocolRequest | None, err: PolyrouteError, scope: Scope, receive: Receive,
    send: Send,
) -> None:
    job.finish(err.status, None, None)
    headers = job.headers()
    response = proto.error_response(err, headers) if proto is not None else error_response(err, headers)
    await response(scope, receive, send)


async def _once(
    job: ProxiedRequest, proto: ProtocolRequest | None, scope: Scope, receive: Receive, send: Send, guard: Guard
) -> None:
    try:
        reply = await guard.watch(job.reply())
    except PolyrouteError as err:
        guard.disarm()
        await _failed(job, proto, err, scope, receive, send)
        return
    guard.disarm()
    assert isinstance(reply, UpstreamReply)
    usage, cost = job.answered(reply)
    headers = job.headers()
    headers["x-polyroute-cost-usd"] = f"{cost:.8f}"
    try:
        media_type = _media_type(reply.content_type)
        if not write_whole(scope, 200, media_type, headers, reply.body):
            await send_whole(send, 200, media_type, headers, reply.body)
    finally:
        job.finish(200, usage, None, cost)  # metrics and the usage record: the client need not wait for them


def _media_type(upstream: str) -> bytes:
    """An upstream's content type as sent back (encoded once per distinct type)."""
    media_type = _MEDIA_TYPES.get(upstream)
    if media_type is None:
        media_type = _MEDIA_TYPES.setdefault(upstream, content_type(upstream))
    return media_type


async def _stream(
    job: ProxiedRequest, proto: ProtocolRequest | None, scope: Scope, receive: Receive, send: Send, guard: Guard
) -> None:
    try:
        opened = await guard.watch(job.open_stream())
    except PolyrouteError as err:
        guard.disarm()
        await _failed(job, proto, err, scope, receive, send)
        return
    assert not isinstance(opened, UpstreamReply)
    job.outcome.first_token_s = time.perf_counter() - job.started
    job.trace.first_token()
    await _relay(job, scope, send, opened, guard)


async def _relay(job: ProxiedRequest, scope: Scope, send: Send, stream: UpstreamStream, guard: Guard) -> None:
    """Send the stream as it arrives; the guard cancels it when the client leaves or the drain deadline passes
    (uvicorn drops what is sent after a disconnect without a word, so the relay must be stopped, not fail).

    A stream relayed unchanged (not translated, not captured for shadow evaluation) goes from the upstream
    connection's callbacks straight to the client's (`DirectStream.relay_to`) when the server offers a writer for
    it; what is left after that, if anything, comes from `events()` as for every other stream."""
    status = 200
    sent = 1  # events relayed
    ending: bytes | None = b""
    keep = job.shadow_capture  # None unless the request was sampled for shadow evaluation
    try:
        media_type = _EVENT_STREAM
        if job.parsed.endpoint is Endpoint.SPEECH:  # audio bytes (providers/audio_relay.py), not events
            media_type = _media_type(getattr(stream, "content_type", "application/octet-stream"))
        try:
            headers = job.headers()
            if not start_chunked(scope, 200, media_type, headers, stream.first_event):
                await send(response_start(200, media_type, headers, None))
                await send(body_chunk(stream.first_event))
            if keep is not None:
                keep.append(stream.first_event)
            elif isinstance(stream, DirectStream) and (writer := body_writer(scope)) is not None:
                sent += await stream.relay_to(writer)
            events = stream.events()
            while (batch := await anext(events, None)) is not None:
                sent += batch.count(b"\n\n")  # an item may carry several events, each ending in a blank line
                if keep is not None and len(keep) < SHADOW_CAPTURE_ITEMS:
                    keep.append(batch)
                await send(body_chunk(batch))
        except asyncio.CancelledError:
            why = guard.reason()
            if why is None:
                raise  # cancelled from outside (the server itself): nobody is left to tell
            raise why from None
    except (UpstreamError, ShuttingDownError) as err:
        status = err.status
        ending = job.stream_ending(stream, err)
    except PolyrouteError:
        status = 499  # the client went away; the upstream request is dropped below
    except BaseException:
        status = 499
        raise
    finally:
        guard.disarm()
        await stream.aclose()
        job.stream_finished(stream, status, sent)
    if status != 499 and ending is not None:
        await send(body_chunk(ending, more=False))
