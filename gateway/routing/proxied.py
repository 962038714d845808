"""A proxied request past parsing, without HTTP: decide, admit, carry out its attempts, and record how it finished.

api/proxy.py reads the request and writes the response; everything between (the plan, admission, the attempts,
the outcome, the ending of a failed stream, the usage record) happens here, so it runs without an ASGI server.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from gateway.error_envelope import error_event
from gateway.errors import PolyrouteError, UpstreamError
from gateway.load.placement import place
from gateway.load.tracker import LoadTracker, SentMark
from gateway.observability.accounting import (
    Accountant,
    FinishedRequest,
    estimated_usage,
    output_tokens_in_body,
    output_tokens_in_stream,
    request_charge,
)
from gateway.observability.metrics import Metrics
from gateway.observability.tracing import NO_TRACE, FinishedTrace, RequestTrace
from gateway.policy.charges import Charge
from gateway.policy.plan import RequestFacts, RoutePlan
from gateway.policy.table import Alias, Deployment, PolicyTable, Tenant, Timeouts
from gateway.providers.base import Endpoint, Provider, Upload, UpstreamCall, UpstreamReply, UpstreamStream, Usage
from gateway.providers.images import IMAGE_ENDPOINTS, capable_plan
from gateway.routing.admission import Admission, Admitted
from gateway.routing.executor import Executor, Outcome
from gateway.routing.health import HealthTracker

DONE_EVENT = b"data: [DONE]\n\n"
_STREAM_USAGE = frozenset({Endpoint.CHAT, Endpoint.COMPLETION})  # streams whose usage is asked for upstream


class Forwarded(Protocol):
    """What carrying out a request reads of its parsed body (api/parsing.py's ParsedRequest)."""

    @property
    def endpoint(self) -> Endpoint: ...
    @property
    def body(self) -> dict[str, Any]: ...
    @property
    def model(self) -> str: ...
    @property
    def stream(self) -> bool: ...
    @property
    def client_wants_usage(self) -> bool: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def upload(self) -> Upload | None: ...
    @property
    def metered(self) -> Usage | None: ...


class Translation(Protocol):
    """A Messages or Responses request (api/protocol_request.py's ProtocolRequest): relayed or translated per target."""

    def call(self, deployment: Deployment, *, timeouts: Timeouts, request_id: str) -> UpstreamCall: ...

    def refuse_unless_reachable(self, targets: tuple[Deployment, ...]) -> None: ...

    async def adapt(
        self, call: UpstreamCall, result: UpstreamReply | UpstreamStream
    ) -> UpstreamReply | UpstreamStream: ...

    def stream_error(self, stream: UpstreamStream, err: PolyrouteError) -> bytes: ...


class ShadowHook(Protocol):
    """Shadow evaluation (portability/shadow.py): samples a request once when admitted, and is handed the sampled
    ones when they finish."""

    def sampled(self, alias: Alias | None, endpoint: Endpoint) -> bool: ...

    def primary_finished(
        self, request: ProxiedRequest, status: int, usage: Usage | None, cost_usd: float, duration_s: float,
        first_token_s: float | None,
    ) -> None: ...


class RequestFlow:
    """One per app: admits requests and records those refused before they were carried out."""

    def __init__(
        self,
        *,
        executor: Executor,
        health: HealthTracker,
        admission: Admission,
        accountant: Accountant,
        metrics: Metrics,
        load: LoadTracker,
        shadow: ShadowHook | None = None,
    ) -> None:
        self.executor = executor
        self.shadow = shadow
        self.health = health
        self.load = load
        self.admission = admission
        self.accountant = accountant
        self.metrics = metrics

    async def admit(
        self,
        table: PolicyTable,
        providers: Mapping[str, Provider],
        tenant: Tenant,
        facts: RequestFacts,
        parsed: Forwarded,
        *,
        request_id: str,
        started: float,
        proto: Translation | None = None,
        trace: RequestTrace = NO_TRACE,
    ) -> ProxiedRequest:
        """The plan and admission (raises a PolyrouteError when either refuses), then the request to carry out."""
        plan, sent = await place(facts, table, self.health.snapshot(), self.load, self.metrics)
        try:
            if parsed.endpoint in IMAGE_ENDPOINTS:  # a target that cannot honour an option is not tried
                plan = capable_plan(plan, parsed.endpoint, parsed.body)
            if proto is not None:
                proto.refuse_unless_reachable(plan.attempts)
            admitted = await self.admission.admit(tenant, plan, facts)
        except BaseException:
            if sent is not None:  # refused: it never reaches the engine
                self.load.done(sent)
            raise
        shadowed = self.shadow is not None and proto is None and self.shadow.sampled(
            table.aliases.get(plan.alias), parsed.endpoint
        )
        request = ProxiedRequest(self, table, providers, parsed, plan, tenant.name, admitted, request_id, started,
                                 proto=proto, facts=facts, shadow_capture=[] if shadowed else None, trace=trace,
                                 sent=sent)
        self.metrics.inflight(alias=plan.alias, delta=1)
        return request

    def refused(
        self, tenant: str, alias: str, status: int, started: float, facts: RequestFacts | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a request that ended before it was admitted (bad key, bad body, no target, a limit); `facts` and
        `body` once its body was read, so that refused traffic counts in the routing facts too."""
        elapsed = time.perf_counter() - started
        self.accountant.finish(
            FinishedRequest(
                tenant=tenant, alias=alias, deployment=None, status=status, stream=False, duration_s=elapsed,
                overhead_s=elapsed, first_token_s=None, usage=None, attempts=0, fallback=False, facts=facts,
                body=body,
            )
        )


class ProxiedRequest:
    """One admitted request being carried out: its attempts, its outcome, its response headers and its record."""

    def __init__(
        self,
        flow: RequestFlow,
        table: PolicyTable,
        providers: Mapping[str, Provider],
        parsed: Forwarded,
        plan: RoutePlan,
        tenant: str,
        admitted: Admitted,
        request_id: str,
        started: float,
        *,
        proto: Translation | None = None,
        facts: RequestFacts | None = None,
        shadow_capture: list[bytes] | None = None,
        trace: RequestTrace = NO_TRACE,
        sent: SentMark | None = None,
    ) -> None:
        self.trace = trace
        self.sent = sent  # counted as sent to a self-hosted engine until it is read again, or this request ends
        self.flow, self.table, self.providers, self.parsed, self.plan = flow, table, providers, parsed, plan
        self.tenant, self.admitted, self.request_id, self.started = tenant, admitted, request_id, started
        self.proto, self.facts = proto, facts
        self.shadow_capture = shadow_capture  # a sampled request's answer (body, or stream events) to compare
        self.outcome = Outcome()
        self.upstream_s = 0.0
        self._charge: Charge | None = None  # a non-stream answer's, worked out once for its header and its record

    def _call(self, deployment: Deployment) -> UpstreamCall:
        if self.proto is not None:
            return self.proto.call(deployment, timeouts=self.plan.timeouts, request_id=self.request_id)
        body = dict(self.parsed.body)
        body["model"] = deployment.model
        if self.parsed.stream and self.parsed.endpoint in _STREAM_USAGE:
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
            upload=self.parsed.upload,
        )

    async def _execute(self, deployment: Deployment, stream: bool) -> UpstreamReply | UpstreamStream:
        provider = self.providers[deployment.provider.name]
        begun = time.perf_counter()
        traced = self.trace.attempt(deployment)
        try:
            call = self._call(deployment)
            call.trace_headers = traced.headers
            result = await (provider.open_stream(call) if stream else provider.send(call))
            return result if self.proto is None else await self.proto.adapt(call, result)
        except UpstreamError as err:
            traced.failed(err.error_class.value)
            raise
        except BaseException as err:  # the client left, the drain deadline passed: the span still ends
            traced.failed(type(err).__name__)
            raise
        finally:
            self.upstream_s += time.perf_counter() - begun

    def _run(
        self, attempt: Callable[[Deployment], Awaitable[UpstreamReply | UpstreamStream]]
    ) -> Awaitable[UpstreamReply | UpstreamStream]:
        return self.flow.executor.run(
            self.plan,
            self.table.fallback,
            attempt,
            reserved=self.admitted.reserved_deployment,
            tokens=self.admitted.tokens,
            outcome=self.outcome,
            saturated=self.admitted.saturated,
        )

    def reply(self) -> Awaitable[UpstreamReply | UpstreamStream]:
        """The attempts of a non-stream request: the first answer, or the executor's error."""

        async def attempt(d: Deployment) -> UpstreamReply | UpstreamStream:
            return await self._execute(d, False)

        return self._run(attempt)

    def open_stream(self) -> Awaitable[UpstreamReply | UpstreamStream]:
        """The attempts of a stream request: the first stream whose first event arrived, or the executor's error."""

        async def attempt(d: Deployment) -> UpstreamReply | UpstreamStream:
            return await self._execute(d, True)

        return self._run(attempt)

    def headers(self) -> dict[str, str]:
        """polyroute's response headers (route, deployment, attempts, fallback reason) and admission's."""
        headers = {
            "x-request-id": self.request_id,
            "x-polyroute-route": self.plan.route,
            "x-polyroute-attempts": str(self.outcome.attempts),
        }
        if self.outcome.deployment is not None:
            headers["x-polyroute-deployment"] = self.outcome.deployment.name
        if self.outcome.fallback_reason is not None and self.outcome.attempts > 1:
            headers["x-polyroute-fallback-reason"] = self.outcome.fallback_reason
        headers.update(self.admitted.headers)
        return headers

    def answered(self, reply: UpstreamReply) -> tuple[Usage, float]:
        """The usage of a non-stream answer (reported, else estimated) and its cost."""
        usage = reply.usage or self._estimated_usage(output_tokens_in_body(reply.body))
        if self.shadow_capture is not None:
            self.shadow_capture.append(reply.body)
        if self.trace.on:
            self.trace.answered(reply.body)
        deployment = self.outcome.deployment
        if deployment is None:
            return usage, 0.0
        self._charge = request_charge(deployment, usage)
        return usage, self._charge.usd

    def stream_ending(self, stream: UpstreamStream, err: PolyrouteError) -> bytes | None:
        """What ends a stream whose upstream failed after the first byte: the protocol's error event (and [DONE]);
        None for audio, which has no error event: the response is cut off, so the client sees it is incomplete."""
        if self.parsed.endpoint is Endpoint.SPEECH:
            return None
        if self.proto is not None:
            return self.proto.stream_error(stream, err)
        return error_event(err) + DONE_EVENT

    def stream_finished(self, stream: UpstreamStream, status: int, events: int) -> None:
        """Record a stream that ended (`events` relayed), with its usage: reported, else estimated."""
        usage = stream.usage or self._estimated_usage(output_tokens_in_stream(events))
        self.finish(status, usage, self.outcome.first_token_s)

    def _estimated_usage(self, output_tokens: int) -> Usage:
        """The upstream reported no usage: what the request itself tells (seconds of a WAV upload, characters to
        speak), else the prompt as routing estimated it and the output as counted by the caller."""
        metered = self.parsed.metered
        if metered is not None:
            return metered
        return estimated_usage(self.parsed.prompt_tokens, output_tokens)

    def finish(
        self, status: int, usage: Usage | None, first_token_s: float | None, cost_usd: float | None = None
    ) -> float:
        """The one record of an admitted request (metrics, usage record, settling what admission reserved)."""
        flow = self.flow
        flow.metrics.inflight(alias=self.plan.alias, delta=-1)
        if self.sent is not None:
            flow.load.done(self.sent)
        duration = time.perf_counter() - self.started
        gateway_time = (first_token_s if first_token_s is not None else duration) - self.upstream_s
        cost = flow.accountant.finish(
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
                charge=self._charge if cost_usd is not None else None,
                facts=self.facts,
                body=self.parsed.body,
            )
        )
        if self.trace.on:
            self._trace_finished(status, usage, cost)
        if self.shadow_capture is not None and flow.shadow is not None:
            flow.shadow.primary_finished(self, status, usage, cost, duration, first_token_s)
        return cost

    def _trace_finished(self, status: int, usage: Usage | None, cost_usd: float | None) -> None:
        data_class = self.facts.data_class if self.facts is not None else None
        failures = self.outcome.failures
        self.trace.finish(status, FinishedTrace(
            alias=self.plan.alias, route=self.plan.route, tenant=self.tenant, data_class=data_class,
            deployment=self.outcome.deployment, attempts=self.outcome.attempts,
            fallback_reason=self.outcome.fallback_reason, usage=usage, cost_usd=cost_usd,
            error_type=failures[-1].error_class.value if failures and status >= 400 else None,
            body=self.parsed.body, record_content=data_class not in self.table.sensitive_data_classes,
        ))
