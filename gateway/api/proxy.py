"""The proxy service behind every model route: parse, decide, admit, execute, respond, account."""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive

from gateway.api.auth import authenticate
from gateway.api.lifetime import guarded
from gateway.api.parsing import ParsedRequest, parse_request, read_body, request_facts
from gateway.api.protocol_request import ProtocolRequest, parse_protocol_request, protocol_error_response
from gateway.api.responses import DONE_EVENT, error_event, error_response, route_headers
from gateway.errors import LimitExceededError, PolyrouteError, ShuttingDownError, UpstreamError
from gateway.observability.accounting import FinishedRequest, output_tokens_in_body, output_tokens_in_stream
from gateway.policy.engine import decide
from gateway.policy.plan import RequestFacts, RoutePlan
from gateway.policy.strategies import expected_output_tokens
from gateway.policy.table import Deployment, Tenant
from gateway.protocols.adapters import CLIENT_PROTOCOLS
from gateway.providers.base import Endpoint, UpstreamCall, UpstreamReply, UpstreamStream, Usage
from gateway.routing.executor import Outcome
from gateway.runtime import ActivePolicy, Runtime
from gateway.state.base import AdmissionRequest, AdmissionResult, DeploymentQuota

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


@dataclass
class Admitted:
    reserved_deployment: str | None
    tokens: int
    cost_usd: float
    counted: bool
    headers: dict[str, str]
    saturated: frozenset[str] = frozenset()  # deployments admission found at their own rpm/tpm limit


class ProxyService:
    """One instance per app; every request reads the active policy once and keeps it to the end."""

    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    async def handle(self, request: Request, endpoint: Endpoint) -> Response:
        started = time.perf_counter()
        given_id = request.headers.get("x-request-id")
        request_id = given_id if given_id and _REQUEST_ID.match(given_id) else os.urandom(16).hex()
        active = self._rt.active
        tenant_name, alias = "none", "none"
        adapter = CLIENT_PROTOCOLS.get(endpoint)  # Messages and Responses: translated to Chat for routing
        proto: ProtocolRequest | None = None
        try:
            tenant = authenticate(request.headers, active.table)
            tenant_name = tenant.name
            raw = await read_body(request, self._rt.settings.max_body_bytes)
            if adapter is None:
                parsed = parse_request(raw, endpoint, request.headers)
            else:
                parsed, proto = parse_protocol_request(raw, adapter, request.headers)
            alias = parsed.model
            facts = request_facts(parsed, tenant)
            plan = decide(facts, active.table, self._rt.health.snapshot())
            admitted = await self._admit(tenant, plan, facts)
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
                return protocol_error_response(adapter, err, {"x-request-id": request_id})
            return error_response(err, {"x-request-id": request_id})
        job = _Job(
            self._rt, active, parsed, plan, tenant.name, admitted, request_id, started, request.receive, proto=proto
        )
        self._rt.metrics.inflight(alias=alias, delta=1)
        if parsed.stream:
            return await job.stream()
        return await job.once()

    async def _admit(self, tenant: Tenant, plan: RoutePlan, facts: RequestFacts) -> Admitted:
        """One store round trip, and none at all when neither tenant nor deployments have limits."""
        tokens = facts.prompt_tokens + expected_output_tokens(facts)
        first = plan.attempts[0].name
        cost = plan.estimated_cost_usd.get(first, 0.0)
        limits, budget = tenant.limits, tenant.budget
        tenant_limited = any(
            v is not None for v in (limits.rpm, limits.tpm, budget.usd_per_day, budget.usd_per_month)
        )
        quota_limited = any(d.rpm or d.tpm for d in plan.attempts)
        # Every attempt in plan order, unlimited ones too: the store reserves the first one with capacity.
        quotas = tuple(DeploymentQuota(d.name, d.rpm, d.tpm) for d in plan.attempts) if quota_limited else ()
        if not tenant_limited and not quota_limited:
            return Admitted(None, tokens, cost, False, {})
        request = AdmissionRequest(
            tenant=tenant.name,
            tokens=tokens,
            est_cost_usd=cost,
            now=time.time(),
            tenant_rpm=limits.rpm,
            tenant_tpm=limits.tpm,
            budget_day_usd=budget.usd_per_day,
            budget_month_usd=budget.usd_per_month,
            deployments=quotas,
        )
        result = await self._rt.store.admit(request)
        headers = ratelimit_headers(result)
        if not result.allowed:
            self._rt.metrics.rate_limited(tenant=tenant.name, reason=result.reason or "other")
            raise LimitExceededError(
                limit_message(result, tenant, request, plan),
                retry_after=result.retry_after_s,
                code="insufficient_quota" if (result.reason or "").startswith("budget") else None,
                extra_headers=headers,
            )
        self._report_budget(tenant, result)
        # Settling corrects the tokens and cost reserved above; only a TPM limit or a budget ever reads them.
        settle = limits.tpm is not None or budget.usd_per_day is not None or budget.usd_per_month is not None
        return Admitted(result.deployment, tokens, cost, settle, headers, frozenset(result.saturated))

    def _report_budget(self, tenant: Tenant, result: AdmissionResult) -> None:
        if result.degraded:
            return  # admitted without the store: what was spent is unknown, not zero
        if tenant.budget.usd_per_day is not None:
            self._rt.metrics.budget_remaining(
                tenant=tenant.name, period="day", usd=tenant.budget.usd_per_day - result.spent_day_usd
            )
        if tenant.budget.usd_per_month is not None:
            self._rt.metrics.budget_remaining(
                tenant=tenant.name, period="month", usd=tenant.budget.usd_per_month - result.spent_month_usd
            )


def ratelimit_headers(result: AdmissionResult) -> dict[str, str]:
    headers: dict[str, str] = {}
    reset = f"{max(0.0, result.reset_s):.0f}s"
    if result.rpm_limit is not None:
        headers["x-ratelimit-limit-requests"] = str(result.rpm_limit)
        headers["x-ratelimit-remaining-requests"] = str(max(0, result.rpm_remaining or 0))
        headers["x-ratelimit-reset-requests"] = reset
    if result.tpm_limit is not None:
        headers["x-ratelimit-limit-tokens"] = str(result.tpm_limit)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, result.tpm_remaining or 0))
        headers["x-ratelimit-reset-tokens"] = reset
    return headers


def limit_message(result: AdmissionResult, tenant: Tenant, request: AdmissionRequest, plan: RoutePlan) -> str:
    """What a 429 says: which limit, its value, what was used, and when to come back (as `Retry-After` says)."""

    def usd(value: float) -> str:  # micro-dollars are the stores' unit: never hide a small amount as $0.0000
        return "$" + (f"{value:.6f}".rstrip("0").rstrip(".") if value else "0")

    seconds = max(1, int(result.retry_after_s + 0.999))  # rounded as the Retry-After header is
    wait = f"Try again in {seconds}s."
    reason, name, limits, budget = result.reason, tenant.name, tenant.limits, tenant.budget
    if reason == "tenant_rpm":
        return f"Rate limit reached for tenant '{name}': {limits.rpm} requests per minute. {wait}"
    if reason == "tenant_tpm" and limits.tpm is not None and request.tokens > limits.tpm:
        return (
            f"Request too large for tenant '{name}': it may use about {request.tokens} tokens (its prompt and "
            f"expected output), more than the limit of {limits.tpm} tokens per minute. "
            "Send a shorter prompt or a lower max_tokens."
        )
    if reason == "tenant_tpm":
        return (
            f"Rate limit reached for tenant '{name}': {limits.tpm} tokens per minute "
            f"({result.tpm_remaining or 0} left, this request may use about {request.tokens}). {wait}"
        )
    if reason in ("budget_day", "budget_month"):
        day = reason == "budget_day"
        period, limit = ("Daily", budget.usd_per_day) if day else ("Monthly", budget.usd_per_month)
        spent = result.spent_day_usd if day else result.spent_month_usd
        resets = "at 00:00 UTC" if day else "on the 1st of the month, 00:00 UTC"
        return (
            f"{period} budget of {usd(limit or 0.0)} for tenant '{name}' would be exceeded: spent "
            f"{usd(spent)} {'today' if day else 'this month'}, this request is estimated at "
            f"{usd(request.est_cost_usd)}. The budget resets {resets}; try again in {seconds}s."
        )
    quotas = ", ".join(
        f"{d.name}: {d.rpm or '-'} requests / {d.tpm or '-'} tokens per minute"
        for d in plan.attempts
        if d.name in result.saturated
    )
    return (
        f"Every deployment that may serve '{plan.alias}' is at its own rate limit ({quotas}); "
        f"these limits protect the upstreams' quotas. {wait}"
    )


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
        receive: Receive,
        *,
        proto: ProtocolRequest | None = None,
    ) -> None:
        self.rt, self.active, self.parsed, self.plan = rt, active, parsed, plan
        self.tenant, self.admitted, self.request_id, self.started = tenant, admitted, request_id, started
        self.receive = receive  # to notice the client leaving while the upstream works
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

    async def once(self) -> Response:
        async def attempt(d: Deployment) -> UpstreamReply | UpstreamStream:
            return await self._execute(d, False)

        try:
            reply = await guarded(self._run(attempt), self.receive, self.rt.drain)
        except PolyrouteError as err:
            return self._failed(err)
        assert isinstance(reply, UpstreamReply)
        usage = reply.usage or self._estimated_usage(output_tokens_in_body(reply.body))
        headers = self._headers()
        cost = self._finish(200, usage, None)
        headers["x-polyroute-cost-usd"] = f"{cost:.8f}"
        return Response(reply.body, media_type=reply.content_type, headers=headers)

    async def stream(self) -> Response:
        async def attempt(d: Deployment) -> UpstreamReply | UpstreamStream:
            return await self._execute(d, True)

        try:
            opened = await guarded(self._run(attempt), self.receive, self.rt.drain)
        except PolyrouteError as err:
            return self._failed(err)
        assert not isinstance(opened, UpstreamReply)
        self.outcome.first_token_s = time.perf_counter() - self.started
        return StreamingResponse(
            self._relay(opened), media_type="text/event-stream", headers=self._headers()
        )

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

    async def _relay(self, stream: UpstreamStream) -> AsyncIterator[bytes]:
        status = 200
        sent = 1  # events relayed
        try:
            yield stream.first_event
            events = stream.events()
            while (batch := await self.rt.drain.next_event(events)) is not None:
                sent += batch.count(b"\n\n")  # an item may carry several events, each ending in a blank line
                yield batch
        except (UpstreamError, ShuttingDownError) as err:
            status = err.status
            yield self._stream_error(stream, err)
        except BaseException:
            status = 499  # the client went away; the upstream request is dropped below
            raise
        finally:
            await stream.aclose()
            usage = stream.usage or self._estimated_usage(output_tokens_in_stream(sent))
            self._finish(status, usage, self.outcome.first_token_s)

    def _stream_error(self, stream: UpstreamStream, err: PolyrouteError) -> bytes:
        if self.proto is not None:
            return self.proto.stream_error(stream, err)
        return error_event(err) + DONE_EVENT

    def _estimated_usage(self, output_tokens: int) -> Usage:
        """The upstream reported no usage: the prompt as routing estimated it, the output as counted by the caller."""
        return Usage(input_tokens=self.parsed.prompt_tokens, output_tokens=output_tokens, estimated=True)

    def _headers(self) -> dict[str, str]:
        headers = route_headers(self.request_id, self.plan.route, self.outcome)
        headers.update(self.admitted.headers)
        return headers

    def _failed(self, err: PolyrouteError) -> Response:
        self._finish(err.status, None, None)
        if self.proto is not None:
            return self.proto.error_response(err, self._headers())
        return error_response(err, self._headers())

    def _finish(self, status: int, usage: Usage | None, first_token_s: float | None) -> float:
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
            )
        )

