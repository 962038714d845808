"""A proxied request without HTTP: admission, attempts, outcome, the ending of a broken stream, and its record."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from starlette.datastructures import Headers

from gateway.api.parsing import parse_request, request_facts
from gateway.error_classes import ErrorClass
from gateway.errors import AllTimedOutError, LimitExceededError, UpstreamError
from gateway.load.tracker import LoadTracker
from gateway.observability.accounting import Accountant
from gateway.observability.metrics import Metrics
from gateway.policy.table import PolicyTable
from gateway.providers.base import Endpoint, UpstreamReply
from gateway.providers.registry import build_providers
from gateway.routing.admission import Admission
from gateway.routing.executor import AttemptObserver, Executor
from gateway.routing.health import HealthTracker
from gateway.routing.proxied import ProxiedRequest, RequestFlow
from gateway.state.memory import MemoryStateStore
from tests.unit.api.fake_provider import Script, factory, policy_table

BODY = b'{"model": "chat", "messages": [{"role": "user", "content": "Say hello."}]}'
STREAM_BODY = BODY[:-1] + b', "stream": true}'


class Flow:
    """The request sequence as the runtime assembles it (in-process store), over scripted providers."""

    def __init__(self, scripts: dict[str, Script]) -> None:
        self.table: PolicyTable = policy_table()
        self.store = MemoryStateStore()
        self.metrics = Metrics()
        table = self.table
        self.metrics.set_known(aliases=table.aliases, deployments=table.deployments, providers=table.providers,
                               vendors={p.vendor for p in table.providers.values()}, tenants=table.tenants)
        health = HealthTracker(self.store, on_circuit=lambda deployment, is_open: None)
        health.configure(tuple(table.deployments), table.fallback.circuit_breaker)
        self.accountant = Accountant(self.store, self.metrics)
        self.flow = RequestFlow(
            executor=Executor(self.store, health, AttemptObserver()),
            health=health,
            admission=Admission(self.store, self.metrics),
            accountant=self.accountant,
            metrics=self.metrics,
            load=LoadTracker(self.metrics, lambda: health.inflight),
        )
        adapters = build_providers(table.providers, factory=factory(scripts))
        self.providers = {name: adapter for name, (_, adapter) in adapters.items()}

    async def admit(self, raw: bytes = BODY, tenant: str = "open") -> ProxiedRequest:
        parsed = parse_request(raw, Endpoint.CHAT, Headers())
        who = self.table.tenants[tenant]
        return await self.flow.admit(
            self.table, self.providers, who, request_facts(parsed, who), parsed, request_id="req-1", started=0.0
        )

    def requests_total(self) -> list[str]:
        payload, _ = self.metrics.render()
        return [line for line in payload.decode().splitlines() if line.startswith("polyroute_requests_total{")]


@asynccontextmanager
async def running(scripts: dict[str, Script]) -> AsyncIterator[Flow]:
    made = Flow(scripts)
    await made.store.start()
    await made.accountant.start()
    try:
        yield made
    finally:
        await made.accountant.close()
        await made.store.close()


async def test_a_request_falls_back_and_its_headers_and_record_say_so() -> None:
    async with running({"first": Script(error_class=ErrorClass.TIMEOUT), "second": Script(text="from two")}) as flow:
        request = await flow.admit()
        reply = await request.reply()
        usage, cost = request.answered(reply) if isinstance(reply, UpstreamReply) else (None, 0.0)
        headers = request.headers()
        request.finish(200, usage, None, cost)
        recorded = flow.requests_total()
    assert isinstance(reply, UpstreamReply) and b"from two" in reply.body
    assert usage is not None and usage.input_tokens == 5 and usage.output_tokens == 2
    assert headers["x-polyroute-deployment"] == "two"
    assert headers["x-polyroute-fallback-reason"] == "timeout"
    assert headers["x-request-id"] == "req-1"
    assert [line for line in recorded if 'deployment="two"' in line and 'status_class="2xx"' in line]


async def test_every_target_timing_out_is_a_504_recorded_at_the_last_target() -> None:
    timeouts = {"first": Script(error_class=ErrorClass.TIMEOUT), "second": Script(error_class=ErrorClass.TIMEOUT)}
    async with running(timeouts) as flow:
        request = await flow.admit()
        with pytest.raises(AllTimedOutError) as raised:
            await request.reply()
        request.finish(raised.value.status, None, None)
        recorded = flow.requests_total()
    assert raised.value.status == 504 and raised.value.code == "upstream_timeout"
    assert request.headers()["x-polyroute-attempts"] == "2"
    assert [line for line in recorded if 'deployment="two"' in line and 'status_class="5xx"' in line]


async def test_a_stream_broken_after_its_first_event_ends_with_an_error_event_and_done() -> None:
    made = Flow({"first": Script(text="hel", fail_after_first=True)})
    request = await made.admit(STREAM_BODY)
    stream = await request.open_stream()
    assert not isinstance(stream, UpstreamReply)
    with pytest.raises(UpstreamError) as raised:
        await anext(stream.events())
    ending = request.stream_ending(stream, raised.value)
    assert ending.startswith(b'data: {"error":{"message":"stream broke: connection reset"')
    assert ending.endswith(b"\n\ndata: [DONE]\n\n")


async def test_admission_refuses_a_tenant_past_its_limit_before_any_attempt() -> None:
    scripts = {"first": Script()}
    made = Flow(scripts)
    await made.admit(tenant="limited")
    with pytest.raises(LimitExceededError) as raised:
        await made.admit(tenant="limited")
    assert raised.value.status == 429 and raised.value.headers()["x-ratelimit-limit-requests"] == "1"
    assert scripts["first"].calls == []  # admitted requests were never carried out; the refused one neither
