"""The accountant keeps each request's routing facts with its usage record, and runs periodic reports."""

from __future__ import annotations

import asyncio
import time

from gateway.observability.accounting import Accountant, FinishedRequest
from gateway.observability.metrics import Metrics
from gateway.policy.loader import load_policy_text
from gateway.policy.plan import RequestFacts
from gateway.policy.pricing import CurrencyRates
from gateway.providers.base import Usage
from gateway.state.base import utc_day
from gateway.state.memory import MemoryStateStore

POLICY = """
version: 1
providers:
  gpu: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: self_hosted, jurisdiction: onprem, vendor: self}
deployments:
  qwen-local: {provider: gpu, model: qwen3-32b}
aliases:
  coder: {targets: [qwen-local]}
"""
TABLE = load_policy_text(POLICY, {}, fx=CurrencyRates())


def finished(
    alias: str = "coder", facts: RequestFacts | None = None, body: dict[str, object] | None = None
) -> FinishedRequest:
    return FinishedRequest(
        tenant="team-a",
        alias=alias,
        deployment=TABLE.deployments["qwen-local"],
        status=200,
        stream=False,
        duration_s=0.5,
        overhead_s=0.001,
        first_token_s=None,
        usage=Usage(input_tokens=100, output_tokens=10),
        attempts=1,
        fallback=False,
        facts=facts,
        body=body,
    )


async def test_a_usage_record_carries_the_request_facts_and_the_watched_parameters_sent() -> None:
    store = MemoryStateStore()
    accountant = Accountant(store, Metrics())
    accountant.watch_params(["enable_thinking", "thinking_budget"])
    await accountant.start()
    facts = RequestFacts(
        alias="coder", tenant="team-a", data_class="pii", prompt_tokens=100, needs=frozenset({"tools"})
    )
    body: dict[str, object] = {"model": "coder", "messages": [], "enable_thinking": False, "temperature": 0}
    accountant.finish(finished(facts=facts, body=body))
    await accountant.close()

    today = utc_day(time.time())
    [row] = (await store.routing_facts(today, today)).rows
    assert (row.alias, row.tenant, row.data_class, row.needs) == ("coder", "team-a", "pii", ("tools",))
    assert row.params == ("enable_thinking",)
    assert (row.requests, row.input_tokens, row.output_tokens) == (1, 100, 10)


async def test_without_facts_usage_is_recorded_without_them() -> None:
    store = MemoryStateStore()
    accountant = Accountant(store, Metrics())  # no periodic job, no watched parameters: usage as before
    await accountant.start()
    accountant.finish(finished())
    accountant.finish(finished())
    await accountant.close()

    today = utc_day(time.time())
    assert sum(r.requests for r in await store.usage(today, today)) == 2
    assert (await store.routing_facts(today, today)).rows == ()


async def test_periodic_jobs_run_while_accounting_runs_and_stop_with_it() -> None:
    accountant = Accountant(MemoryStateStore(), Metrics())
    runs: list[float] = []
    ran_twice = asyncio.Event()

    async def job() -> None:
        runs.append(time.monotonic())
        if len(runs) == 2:
            ran_twice.set()

    accountant.every(0.01, job)
    await accountant.start()
    await asyncio.wait_for(ran_twice.wait(), timeout=10)
    await accountant.close()
    count = len(runs)
    await asyncio.sleep(0.05)
    assert len(runs) == count  # stopped
