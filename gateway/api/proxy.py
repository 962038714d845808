"""The proxy service behind every model route: parse, decide, admit, execute, respond, account."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.api.admission import Admission, Admitted
from gateway.api.asgi_io import body_chunk, content_type, read_body, response_start, send_whole
from gateway.api.auth import authenticate
from gateway.api.lifetime import Guard
from gateway.api.parsing import ParsedRequest, parse_request, request_facts
from gateway.api.protocol_request import ProtocolRequest, parse_protocol_request, protocol_error_response
from gateway.api.responses import DONE_EVENT, error_event, error_response, route_headers
from gateway.errors import PolyrouteError, ShuttingDownError, UpstreamError
from gateway.load.placement import place
from gateway.observability.accounting import (
    FinishedRequest,
    estimated_usage,
    output_tokens_in_body,
    output_tokens_in_stream,
    request_cost,
)
from gateway.policy.plan import RoutePlan
from gateway.policy.table import Deployment
from gateway.protocols.adapters import CLIENT_PROTOCOLS
from gateway.providers.base import Endpoint, UpstreamCall, UpstreamReply, UpstreamStream, Usage
from gateway.routing.executor import Outcome
from gateway.runtime import ActivePolicy, Runtime

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_EVENT_STREAM = content_type("text/event-stream")
_MEDIA_TYPES: dict[str, bytes] = {}  # upstream content types, as sent back


class ProxyService:
    """One instance per app; every request reads the active policy once and keeps it to the end."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._admission = Admission(runtime.store, runtime.metrics)

    def route(self, endpoint: Endpoint) -> ModelRoute:
        """The ASGI app of one model route."""
        return ModelRoute(self, endpoint)

    async def handle(self, scope: Scope, receive: Receive, send: Send, endpoint: Endpoint) -> None:
        started = time.perf_counter()
        headers = Headers(scope=scope)
        given_id = headers.get("x-request-id")
        request_id = given_id if given_id and _REQUEST_ID.match(given_id) else os.urandom(16).hex()
        active = self._rt.active
        tenant_name, alias = "none", "none"
        adapter = CLIENT_PROTOCOLS.get(endpoint)  # Messages and Responses: translated to Chat for routing
        proto: ProtocolRequest | None = None
        try:
            tenant = authenticate(headers, active.table)
            tenant_name = tenant.name
            raw = await read_body(receive, headers, self._rt.settings.max_body_bytes)
            if adapter is None:
                parsed = parse_request(raw, endpoint, headers)
            else:
                parsed, proto = parse_protocol_request(raw, adapter, headers)
            alias = parsed.model
            facts = request_facts(parsed, tenant)
            plan = await place(facts, active.table, self._rt.health.snapshot(), self._rt.load, self._rt.metrics)
            if proto is not None:
                proto.refuse_unless_reachable(plan.attempts)
            admitted = await self._admission.admit(tenant, plan, facts)
        except PolyrouteError as err:
            self._rt.accountant.finish(
                FinishedRequest(
                    tenant=tenant_name,
                    alias=alias,
                    deployment=None,
                    status=err.status,
                    stream=False,
                    duration_s=time.perf_counter() - started,
                    overhead_s=time.perf_counter() - started,
                    first_token_s=None,
                    usage=None,
                    attempts=0,
                    fallback=False,
                )
            )
            if adapter is not None:
                response = protocol_error_response(adapter, err, {"x-request-id": request_id})
            else:
                response = error_response(err, {"x-request-id": request_id})
            await response(scope, receive, send)
            return
        job = _Job(self._rt, active, parsed, plan, tenant.name, admitted, request_id, started, proto=proto)
        self._rt.metrics.inflight(alias=alias, delta=1)
        # After the body was read, the next ASGI message can only be the disconnect the guard waits for.
        guard = Guard(receive, self._rt.drain)
        try:
            if parsed.stream:
                await job.stream(scope, receive, send, guard)
            else:
                await job.once(scope, receive, send, guard)
        finally:
            guard.disarm()


class ModelRoute:
    """A model route as a plain ASGI app (a class, so that Starlette's router does not wrap it in a Request)."""

    def __init__(self, proxy: ProxyService, endpoint: Endpoint) -> None:
        self._proxy = proxy
        self._endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._proxy.handle(scope, receive, send, self._endpoint)


class _Job:
    """One admitted request being carried out."""

    def __init__(
        self,
        rt: Runtime,
        active: ActivePolicy,
        parsed: ParsedRequest,
        plan: RoutePlan,
        tenant: str,
        admitted: Admitted,
        request_id: str,
        started: float,
        *,
        proto: ProtocolRequest | None = None,
    ) -> None:
        self.rt, self.active, self.parsed, self.plan = rt, active, parsed, plan
        self.tenant, self.admitted, self.request_id, self.started = tenant, admitted, request_id, started
        self.proto = proto
        self.outcome = Outcome()
        self.upstream_s = 0.0

    def _call(self, deployment: Deployment) -> UpstreamCall:
        if self.proto is not None:
            return self.proto.call(deployment, timeouts=self.plan.timeouts, request_id=self.request_id)
        body = dict(self.parsed.body)
        body["model"] = deployment.model
        if self.parsed.stream and self.parsed.endpoint is not Endpoint.EMBEDDING:
            options = body.get("stream_options")
            body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
        return UpstreamCall(
            endpoint=self.parsed.endpoint,
            deployment=deployment,
            body=body,
            timeouts=self.plan.timeouts,
            stream=self.parsed.stream,
            client_wants_usage=self.parsed.client_wants_usage,
            request_id=self.request_id,
        )

    async def _execute(self, deployment: Deployment, stream: bool) -> UpstreamReply | UpstreamStream:
        provider = self.active.providers[deployment.provider.name]
        begun = time.perf_counter()
        try:
            call = self._call(deployment)
            result = await (provider.open_stream(call) if stream else provider.send(call))
            return result if self.proto is None else await self.proto.adapt(call, result)
        finally:
            self.upstream_s += time.perf_counter() - begun

    async def once(self, scope: Scope, receive: Receive, send: Send, guard: Guard) -> None:
        async def attempt(d: Deployment) -> UpstreamReply | UpstreamStream:
            return await self._execute(d, False)

        try:
            reply = await guard.watch(self._run(attempt))
        except PolyrouteError as err:
            guard.disarm()
            await self._failed(err)(scope, receive, send)
            return
        guard.disarm()
        assert isinstance(reply, UpstreamReply)
        usage = reply.usage or self._estimated_usage(output_tokens_in_body(reply.body))
        headers = self._headers()
        deployment = self.outcome.deployment
        cost = request_cost(deployment, usage) if deployment else 0.0
        headers["x-polyroute-cost-usd"] = f"{cost:.8f}"
        media_type = _MEDIA_TYPES.get(reply.content_type)
        if media_type is None:
            media_type = _MEDIA_TYPES.setdefault(reply.content_type, content_type(reply.content_type))
        try:
            await send_whole(send, 200, media_type, headers, reply.body)
        finally:
            self._finish(200, usage, None, cost)  # metrics and the usage record: the client need not wait for them

    async def stream(self, scope: Scope, receive: Receive, send: Send, guard: Guard) -> None:
        async def attempt(d: Deployment) -> UpstreamReply | UpstreamStream:
            return await self._execute(d, True)

        try:
            opened = await guard.watch(self._run(attempt))
        except PolyrouteError as err:
            guard.disarm()
            await self._failed(err)(scope, receive, send)
            return
        assert not isinstance(opened, UpstreamReply)
        self.outcome.first_token_s = time.perf_counter() - self.started
        await self._relay(send, opened, guard)

    async def _run(
        self, attempt: Callable[[Deployment], Awaitable[UpstreamReply | UpstreamStream]]
    ) -> UpstreamReply | UpstreamStream:
        return await self.rt.executor.run(
            self.plan,
            self.active.table.fallback,
            attempt,
            reserved=self.admitted.reserved_deployment,
            tokens=self.admitted.tokens,
            outcome=self.outcome,
            saturated=self.admitted.saturated,
        )

    async def _relay(self, send: Send, stream: UpstreamStream, guard: Guard) -> None:
        """Send the stream as it arrives; the guard cancels it when the client leaves or the drain deadline passes
        (uvicorn drops what is sent after a disconnect without a word, so the relay must be stopped, not fail)."""
        status = 200
        sent = 1  # events relayed
        ending = b""
        try:
            try:
                await send(response_start(200, _EVENT_STREAM, self._headers(), None))
                await send(body_chunk(stream.first_event))
                events = stream.events()
                while (batch := await anext(events, None)) is not None:
                    sent += batch.count(b"\n\n")  # an item may carry several events, each ending in a blank line
                    await send(body_chunk(batch))
            except asyncio.CancelledError:
                why = guard.reason()
                if why is None:
                    raise  # cancelled from outside (the server itself): nobody is left to tell
                raise why from None
        except (UpstreamError, ShuttingDownError) as err:
            status = err.status
            ending = self._stream_error(stream, err)
        except PolyrouteError:
            status = 499  # the client went away; the upstream request is dropped below
        except BaseException:
            status = 499
            raise
        finally:
            guard.disarm()
            await stream.aclose()
            usage = stream.usage or self._estimated_usage(output_tokens_in_stream(sent))
            self._finish(status, usage, self.outcome.first_token_s)
        if status != 499:
            await send(body_chunk(ending, more=False))

    def _stream_error(self, stream: UpstreamStream, err: PolyrouteError) -> bytes:
        if self.proto is not None:
            return self.proto.stream_error(stream, err)
        return error_event(err) + DONE_EVENT

    def _estimated_usage(self, output_tokens: int) -> Usage:
        """The upstream reported no usage: the prompt as routing estimated it, the output as counted by the caller."""
        return estimated_usage(self.parsed.prompt_tokens, output_tokens)

    def _headers(self) -> dict[str, str]:
        headers = route_headers(self.request_id, self.plan.route, self.outcome)
        headers.update(self.admitted.headers)
        return headers

    def _failed(self, err: PolyrouteError) -> Response:
        self._finish(err.status, None, None)
        if self.proto is not None:
            return self.proto.error_response(err, self._headers())
        return error_response(err, self._headers())

    def _finish(
        self, status: int, usage: Usage | None, first_token_s: float | None, cost_usd: float | None = None
    ) -> float:
        self.rt.metrics.inflight(alias=self.plan.alias, delta=-1)
        duration = time.perf_counter() - self.started
        gateway_time = (first_token_s if first_token_s is not None else duration) - self.upstream_s
        return self.rt.accountant.finish(
            FinishedRequest(
                tenant=self.tenant,
                alias=self.plan.alias,
                # A request every target failed is recorded (and counted) at the last target it tried.
                deployment=self.outcome.deployment or self.outcome.last_tried,
                status=status,
                stream=self.parsed.stream,
                duration_s=duration,
                overhead_s=max(0.0, gateway_time),
                first_token_s=first_token_s,
                usage=usage if status < 400 or self.outcome.deployment else None,
                attempts=self.outcome.attempts,
                fallback=self.outcome.fallback_reason is not None and self.outcome.attempts > 1,
                reserved_tokens=self.admitted.tokens,
                reserved_cost_usd=self.admitted.cost_usd,
                settle=self.admitted.counted,
                cost_usd=cost_usd,
            )
        )

