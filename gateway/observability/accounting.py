"""Accounting: metrics, cost, budget settlement and usage records for a finished request, off the response path."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.errors import PolyrouteError
from gateway.observability.metrics import Metrics
from gateway.policy.charges import Charge, charge
from gateway.policy.plan import RequestFacts
from gateway.policy.table import Deployment
from gateway.providers.base import Usage
from gateway.state.base import RoutingFact, StateStore, UsageRecord

log = logging.getLogger("polyroute.accounting")
QUEUE_LIMIT = 100_000
BATCH = 512


# Generated text in an OpenAI-shaped answer: message content, reasoning, legacy completion text, tool-call arguments.
_GENERATED_TEXT = re.compile(
    rb'"(?:content|reasoning_content|reasoning|refusal|text|arguments)"\s*:\s*"((?:[^"\\]|\\.)*)"'
)
_BYTES_PER_TOKEN = 4  # the usual rule of thumb; a CJK character is 3 UTF-8 bytes, about one token
_FRAMING_EVENTS = 3  # a stream's role event, finish event and [DONE] carry no generated token


def output_tokens_in_body(body: bytes) -> int:
    """Estimated output tokens of a non-stream answer whose upstream reported no usage: its generated text / 4."""
    generated = sum(match.end(1) - match.start(1) for match in _GENERATED_TEXT.finditer(body))
    return -(-generated // _BYTES_PER_TOKEN)


def output_tokens_in_stream(events: int) -> int:
    """Estimated output tokens of a stream whose upstream reported no usage, from the events relayed.

    OpenAI, vLLM, SGLang, llama.cpp and Ollama stream about one token per event, so counting events costs nothing
    per event and is close; parsing every event for its text would tax every stream for a rare case.
    """
    return max(0, events - _FRAMING_EVENTS)


def estimated_usage(prompt_tokens: int, output_tokens: int) -> Usage:
    """The usage recorded (and, for a translated answer, reported to the client) when an upstream reports none:
    routing's estimate of the prompt and the output counted by one of the two functions above."""
    return Usage(input_tokens=prompt_tokens, output_tokens=output_tokens, estimated=True)


@dataclass(slots=True)  # one per request: a frozen dataclass costs twice as much to build
class FinishedRequest:
    """Everything known about one request once its response is complete."""

    tenant: str
    alias: str
    deployment: Deployment | None
    status: int
    stream: bool
    duration_s: float
    overhead_s: float
    first_token_s: float | None
    usage: Usage | None
    attempts: int
    fallback: bool
    reserved_tokens: int = 0
    reserved_cost_usd: float = 0.0
    settle: bool = False  # admission reserved tokens/cost that must be corrected
    cost_usd: float | None = None  # already worked out for the response header (else computed here)
    charge: Charge | None = None  # the charge that cost came from, if it was worked out already
    facts: RequestFacts | None = None  # what routing saw (recorded as the request's routing fact)
    body: Mapping[str, Any] | None = None  # the request body as parsed (its top-level keys name the extras it sent)


def request_charge(deployment: Deployment, usage: Usage, now: float | None = None) -> Charge:
    """The cost of the tokens used under the price entry in force `now` (default: the current time): the tier the
    request's input selects, cache reads and writes and thinking output at their own prices where the entry has them."""
    price = deployment.price
    if price.later:  # a dated book: only then does the time matter
        price = price.at(time.time() if now is None else now)
    return charge(
        price,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cached_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        audio_input_tokens=usage.audio_input_tokens,
        audio_output_tokens=usage.audio_output_tokens,
        audio_seconds=usage.audio_seconds,
        characters=usage.characters,
        images=usage.images,
        image_variant=usage.image_variant,
    )


def request_cost(deployment: Deployment, usage: Usage) -> float:
    """USD for the tokens used (see `request_charge`)."""
    return request_charge(deployment, usage).usd


class Accountant:
    """Updates metrics at once (O(1)); settles budgets and writes usage records from a background queue."""

    def __init__(self, store: StateStore, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics
        self._queue: asyncio.Queue[tuple[FinishedRequest, float, UsageRecord | None]] = asyncio.Queue(
            QUEUE_LIMIT
        )
        self._worker: asyncio.Task[None] | None = None
        self._watched_params: frozenset[str] = frozenset()
        self._periodic: list[tuple[float, Callable[[], Awaitable[None]]]] = []
        self._periodic_tasks: list[asyncio.Task[None]] = []

    def watch_params(self, names: Iterable[str]) -> None:
        """Body parameters (provider-specific ones) whose presence each request's routing fact records."""
        self._watched_params = frozenset(names)

    def every(self, interval_s: float, job: Callable[[], Awaitable[None]]) -> None:
        """Run `job` every `interval_s` seconds while accounting runs (reports over usage, off the request path)."""
        self._periodic.append((interval_s, job))

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._drain_forever(), name="polyroute-accounting")
        self._periodic_tasks = [
            asyncio.create_task(_repeat(interval_s, job), name="polyroute-accounting-periodic")
            for interval_s, job in self._periodic
        ]

    async def close(self) -> None:
        """Write out everything queued, then stop."""
        for task in self._periodic_tasks:
            task.cancel()
        await asyncio.gather(*self._periodic_tasks, return_exceptions=True)
        await self._queue.join()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    def finish(self, done: FinishedRequest) -> float:
        """Record a finished request; returns its cost in USD."""
        dep = done.deployment
        provider = dep.provider if dep is not None else None
        labels = {
            "alias": done.alias,
            "deployment": dep.name if dep is not None else "none",
            "provider": provider.name if provider is not None else "none",
            "tenant": done.tenant,
            "vendor": provider.vendor if provider is not None else "none",
            "hosting": provider.hosting.value if provider is not None else "none",
        }
        self._metrics.request_done(
            status=done.status,
            duration_s=done.duration_s,
            overhead_s=done.overhead_s,
            ttft_s=done.first_token_s,
            stream=done.stream,
            **labels,
        )
        cost = 0.0
        usage = done.usage
        price_entry = ""
        if dep is not None and usage is not None:
            bill = done.charge if done.charge is not None else request_charge(dep, usage)
            price_entry = bill.entry
            cost = done.cost_usd if done.cost_usd is not None else bill.usd
            self._metrics.tokens(
                input=usage.input_tokens,
                output=usage.output_tokens,
                cached=usage.cached_tokens,
                reasoning=usage.reasoning_tokens,
                audio_input=usage.audio_input_tokens,
                audio_output=usage.audio_output_tokens,
                estimated=usage.estimated,
                **labels,
            )
            if usage.images:
                self._metrics.images(count=usage.images, **labels)
            if cost:
                self._metrics.cost(usd=cost, **labels)
                self._metrics.cost_in_currency(amount=bill.amount, currency=bill.currency, **labels)
        record = None
        if dep is not None and provider is not None:
            u = usage or Usage()
            fact, params = self._routing_fact(done)
            record = UsageRecord(
                ts=time.time(),
                tenant=done.tenant,
                alias=done.alias,
                deployment=dep.name,
                provider=provider.name,
                vendor=provider.vendor,
                hosting=provider.hosting.value,
                jurisdiction=provider.jurisdiction,
                status=done.status,
                input_tokens=u.input_tokens,
                output_tokens=u.output_tokens,
                cached_tokens=u.cached_tokens,
                reasoning_tokens=u.reasoning_tokens,
                tokens_estimated=u.estimated,
                cost_usd=cost,
                cache_write_tokens=u.cache_write_tokens,
                audio_input_tokens=u.audio_input_tokens,
                audio_output_tokens=u.audio_output_tokens,
                audio_ms=round(u.audio_seconds * 1000),
                characters=u.characters,
                images=u.images,
                price_entry=price_entry,
                latency_s=done.duration_s,
                fallback=done.fallback,
                attempts=done.attempts,
                fact=fact,
                params=params,
            )
        if record is not None or done.settle:
            try:
                self._queue.put_nowait((done, cost, record))
            except asyncio.QueueFull:
                log.error("accounting queue full: dropping the usage record of one request")
        return cost

    def _routing_fact(self, done: FinishedRequest) -> tuple[RoutingFact | None, frozenset[str]]:
        """The facts routing saw for this request, and the watched parameters it sent."""
        facts, body = done.facts, done.body
        if facts is None:
            return None, frozenset()
        # Iterates over the body's few top-level keys, not over the watched list.
        return facts, self._watched_params.intersection(body) if self._watched_params and body else frozenset()

    async def _drain_forever(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[tuple[FinishedRequest, float, UsageRecord | None]]) -> None:
        now = time.time()
        # Corrections add up: one settlement per tenant and batch instead of one store round trip per request.
        deltas: dict[str, tuple[int, float]] = {}
        for done, cost, _ in batch:
            if done.settle:
                used = done.usage.input_tokens + done.usage.output_tokens if done.usage else done.reserved_tokens
                tokens, usd = deltas.get(done.tenant, (0, 0.0))
                deltas[done.tenant] = (tokens + used - done.reserved_tokens, usd + cost - done.reserved_cost_usd)
        for tenant, (token_delta, cost_delta_usd) in deltas.items():
            if token_delta or cost_delta_usd:
                await self._store.settle(tenant, token_delta=token_delta, cost_delta_usd=cost_delta_usd, now=now)
        records = [r for _, _, r in batch if r is not None]
        if records:
            await self._store.record_usage(records)


async def _repeat(interval_s: float, job: Callable[[], Awaitable[None]]) -> None:
    """`job` now and then every `interval_s`; a failing run is logged and the next one runs as planned."""
    while True:
        try:
            await job()
        except PolyrouteError as err:  # e.g. the shared store is away: say so, try again next time
            log.warning("periodic accounting job failed: %s", err.message)
        await asyncio.sleep(interval_s)
