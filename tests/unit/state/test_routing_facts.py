"""Routing facts kept with usage, in every store: identical facts summed, a capped number of distinct ones a day."""

from __future__ import annotations

from dataclasses import replace

from gateway.policy.plan import RequestFacts
from gateway.settings import Settings
from gateway.state.base import StateStore, UsageRecord, utc_day
from gateway.state.factory import create_state_store
from gateway.state.facts import size_bucket
from tests.support.processes import RedisServer

T0 = 1_780_000_000.0  # a fixed instant, far from midnight UTC
DAY = utc_day(T0)

PII = RequestFacts(
    alias="coder",
    tenant="team-a",
    endpoint="chat",
    stream=False,
    data_class="pii",
    tags=frozenset({"batch", "eu"}),
    prompt_tokens=1000,
    max_output_tokens=200,
    needs=frozenset({"tools"}),
)
THINKING = frozenset({"enable_thinking"})


def record(fact: RequestFacts | None, **kw: object) -> UsageRecord:
    fields: dict[str, object] = {
        "ts": T0,
        "tenant": "team-a",
        "alias": "coder",
        "deployment": "qwen-local",
        "provider": "gpu",
        "vendor": "self",
        "hosting": "self_hosted",
        "jurisdiction": "onprem",
        "status": 200,
        "input_tokens": 100,
        "output_tokens": 20,
        "cost_usd": 0.25,
        "latency_s": 0.5,
        "fact": fact,
        "params": THINKING if fact is PII else frozenset(),
    }
    fields.update(kw)
    return UsageRecord(**fields)  # type: ignore[arg-type]


async def test_identical_facts_are_one_row_with_their_count_and_sums(store: StateStore) -> None:
    await store.record_usage([record(PII), record(PII), record(None)])
    same_bucket = replace(PII, prompt_tokens=1010)  # rounded up to the same size as 1000
    await store.record_usage([record(same_bucket, params=THINKING)])
    facts = await store.routing_facts(DAY, DAY)
    assert facts.dropped == 0
    [row] = facts.rows
    assert (row.alias, row.tenant, row.deployment, row.data_class) == ("coder", "team-a", "qwen-local", "pii")
    assert (row.tags, row.needs, row.params) == (("batch", "eu"), ("tools",), ("enable_thinking",))
    assert (row.prompt_tokens, row.max_output_tokens) == (size_bucket(1000), size_bucket(200))
    assert (row.requests, row.input_tokens, row.output_tokens) == (3, 300, 60)
    assert row.cost_usd == 0.75 and row.latency_s_sum == 1.5
    usage = await store.usage(DAY, DAY)
    assert sum(r.requests for r in usage) == 4  # the record without facts still counts as usage


async def test_different_facts_and_days_are_kept_apart(store: StateStore) -> None:
    public = replace(PII, data_class=None, tags=frozenset())
    await store.record_usage(
        [record(PII), record(public), record(public, tenant="team-b"), record(PII, ts=T0 + 86_400)]
    )
    today = await store.routing_facts(DAY, DAY)
    assert sorted((r.tenant, r.data_class or "-", r.requests) for r in today.rows) == [
        ("team-a", "-", 1),
        ("team-a", "pii", 1),
        ("team-b", "-", 1),
    ]
    both = await store.routing_facts(DAY, utc_day(T0 + 86_400))
    assert sum(r.requests for r in both.rows) == 4


def test_size_buckets_round_up_by_at_most_an_eighth() -> None:
    for tokens in (0, 1, 15, 16, 17, 100, 1000, 30_001, 123_456, 1_000_000):
        bucket = size_bucket(tokens)
        assert tokens <= bucket <= tokens + tokens / 8


async def capped_store(kind: str, redis_server: RedisServer) -> StateStore:
    if kind == "memory":
        return create_state_store(Settings(routing_facts_per_day=2), on_error=lambda op: None)
    redis_server.flush()
    return create_state_store(Settings(redis_url=redis_server.url, routing_facts_per_day=2), on_error=lambda op: None)


async def test_a_day_keeps_at_most_the_cap_of_distinct_facts_and_counts_the_rest(redis_server: RedisServer) -> None:
    for kind in ("memory", "redis"):
        store = await capped_store(kind, redis_server)
        await store.start()
        try:
            sizes = [96, 192, 320, 320, 96]  # three distinct facts; the third arrives after the cap of two
            await store.record_usage([record(replace(PII, prompt_tokens=n)) for n in sizes[:3]])
            await store.record_usage([record(replace(PII, prompt_tokens=n)) for n in sizes[3:]])
            facts = await store.routing_facts(DAY, DAY)
            assert sorted((r.prompt_tokens, r.requests) for r in facts.rows) == [(96, 2), (192, 1)], kind
            assert facts.dropped == 2, kind  # both requests of the fact over the cap
            assert sum(r.requests for r in await store.usage(DAY, DAY)) == 5, kind  # usage is never capped
        finally:
            await store.close()
