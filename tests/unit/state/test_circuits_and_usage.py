"""Circuit breakers and usage rows behave the same in every StateStore; Redis shares them between replicas."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from gateway.error_classes import ErrorClass
from gateway.policy.table import CircuitBreakerPolicy
from gateway.routing.health import HealthTracker
from gateway.settings import Settings
from gateway.state.base import CircuitPhase, CircuitState, StateStore, UsageRecord, UsageRow
from gateway.state.factory import create_state_store
from tests.support.processes import RedisServer

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC).timestamp()
BREAKER = {"failures": 3, "window_s": 10.0, "cooldown_s": 30.0}


async def fail(store: StateStore, name: str, now: float) -> CircuitState:
    return await store.record_outcome(name, False, now=now, **BREAKER)  # type: ignore[arg-type]


async def succeed(store: StateStore, name: str, now: float) -> CircuitState:
    return await store.record_outcome(name, True, now=now, **BREAKER)  # type: ignore[arg-type]


async def test_failures_within_the_window_open_the_circuit(store: StateStore) -> None:
    await fail(store, "qwen", T0)
    await fail(store, "qwen", T0 + 5)
    still_closed = await fail(store, "qwen", T0 + 10)  # the first failure has left the 10 s window
    assert (still_closed.phase, still_closed.failures) == (CircuitPhase.CLOSED, 2)

    opened = await fail(store, "qwen", T0 + 12)
    assert (opened.phase, opened.open_until) == (CircuitPhase.OPEN, T0 + 42)
    states = await store.circuit_states(["qwen", "other"], T0 + 20)
    assert states["qwen"].phase is CircuitPhase.OPEN
    assert states["other"] == CircuitState()


async def test_an_account_or_quota_failure_opens_the_circuit_at_once_in_every_store(store: StateStore) -> None:
    for name, cls in (("arrears", ErrorClass.ACCOUNT), ("free-tier", ErrorClass.QUOTA_EXHAUSTED)):
        health = HealthTracker(store, on_circuit=lambda _d, _o: None, clock=lambda: T0)
        health.configure((name,), CircuitBreakerPolicy(failures=5, window_s=30.0, cooldown_s=60.0))
        await health.failed(name, cls)  # one, where `failures: 5` would need five server errors
        states = await store.circuit_states([name], T0 + 1)
        assert (states[name].phase, states[name].open_until) == (CircuitPhase.OPEN, T0 + 60)
        assert name in health.snapshot().open_circuits
    health = HealthTracker(store, on_circuit=lambda _d, _o: None, clock=lambda: T0)
    health.configure(("busy",), CircuitBreakerPolicy(failures=5, window_s=30.0, cooldown_s=60.0))
    await health.failed("busy", ErrorClass.SERVER_ERROR)
    assert (await store.circuit_states(["busy"], T0 + 1))["busy"].phase is CircuitPhase.CLOSED


async def test_open_then_half_open_lets_exactly_one_probe_through_and_success_closes(store: StateStore) -> None:
    for t in (T0, T0 + 1, T0 + 2):
        await fail(store, "qwen", t)
    assert not await store.claim_probe("qwen", T0 + 20, 30.0)  # still cooling down
    assert (await succeed(store, "qwen", T0 + 21)).phase is CircuitPhase.OPEN  # a late success changes nothing

    half_open = (await store.circuit_states(["qwen"], T0 + 32))["qwen"]
    assert (half_open.phase, half_open.open_until) == (CircuitPhase.HALF_OPEN, T0 + 32)
    claims = await asyncio.gather(*(store.claim_probe("qwen", T0 + 33, 30.0) for _ in range(20)))
    assert claims.count(True) == 1

    closed = await succeed(store, "qwen", T0 + 34)
    assert closed == CircuitState(CircuitPhase.CLOSED, 0.0, 0)
    assert (await store.circuit_states(["qwen"], T0 + 35))["qwen"].phase is CircuitPhase.CLOSED
    assert (await fail(store, "qwen", T0 + 36)).phase is CircuitPhase.CLOSED  # failures start again from zero


async def test_a_failed_probe_reopens_for_another_cooldown(store: StateStore) -> None:
    for t in (T0, T0 + 1, T0 + 2):
        await fail(store, "qwen", t)
    assert await store.claim_probe("qwen", T0 + 40, 30.0)

    reopened = await fail(store, "qwen", T0 + 41)
    assert (reopened.phase, reopened.open_until) == (CircuitPhase.OPEN, T0 + 71)
    assert not await store.claim_probe("qwen", T0 + 60, 30.0)
    assert await store.claim_probe("qwen", T0 + 71, 30.0)  # the next half-open period has its own probe


async def test_a_probe_that_never_reports_frees_its_claim_after_a_cooldown(store: StateStore) -> None:
    for t in (T0, T0 + 1, T0 + 2):
        await fail(store, "qwen", t)
    assert await store.claim_probe("qwen", T0 + 32, 30.0)
    assert not await store.claim_probe("qwen", T0 + 61, 30.0)
    assert await store.claim_probe("qwen", T0 + 62, 30.0)


async def test_a_closed_circuit_needs_no_probe(store: StateStore) -> None:
    assert await store.claim_probe("healthy", T0, 30.0)
    assert await store.claim_probe("healthy", T0, 30.0)


async def test_replicas_sharing_redis_agree_on_circuits(redis_server: RedisServer, errors: list[str]) -> None:
    redis_server.flush()
    a, b = (create_state_store(Settings(redis_url=redis_server.url), on_error=errors.append) for _ in range(2))
    await a.start()
    await b.start()
    try:
        for t in (T0, T0 + 1, T0 + 2):
            await fail(a, "qwen", t)
        assert (await b.circuit_states(["qwen"], T0 + 5))["qwen"].phase is CircuitPhase.OPEN

        claims = await asyncio.gather(*(s.claim_probe("qwen", T0 + 40, 30.0) for s in (a, b) for _ in range(10)))
        assert claims.count(True) == 1

        await succeed(b, "qwen", T0 + 41)
        assert (await a.circuit_states(["qwen"], T0 + 42))["qwen"].phase is CircuitPhase.CLOSED
    finally:
        await a.close()
        await b.close()
    assert errors == []


def record(day_offset: float = 0.0, **kw: object) -> UsageRecord:
    fields: dict[str, object] = {
        "ts": T0 + day_offset * 86_400,
        "tenant": "team-a",
        "alias": "coder",
        "deployment": "qwen-plus",
        "provider": "qwen-cloud",
        "vendor": "alibaba",
        "hosting": "cloud",
        "jurisdiction": "sg",
        "status": 200,
        "input_tokens": 100,
        "output_tokens": 20,
        "cost_usd": 0.1,
        "latency_s": 0.5,
    }
    fields.update(kw)
    return UsageRecord(**fields)  # type: ignore[arg-type]


async def test_usage_keeps_cache_writes_and_the_cost_of_each_price_entry(store: StateStore) -> None:
    await store.record_usage(
        [
            record(cache_write_tokens=30, price_entry="policy[0]"),
            record(cost_usd=0.25, price_entry="policy[1] from 2025-06-01"),
            record(price_entry="policy[1] from 2025-06-01"),
        ]
    )

    (row,) = await store.usage("2025-06-01", "2025-06-01")

    assert row.cache_write_tokens == 30
    assert row.cost_usd_by_price == {"policy[0]": 0.1, "policy[1] from 2025-06-01": 0.35}
    assert row.extra == {}


async def test_usage_keeps_audio_tokens_seconds_and_characters(store: StateStore) -> None:
    await store.record_usage([
        record(audio_input_tokens=50, audio_output_tokens=120),
        record(audio_ms=1500, characters=17),
        record(audio_ms=2250, audio_output_tokens=30),
    ])

    (row,) = await store.usage("2025-06-01", "2025-06-01")

    assert (row.audio_input_tokens, row.audio_output_tokens, row.characters) == (50, 150, 17)
    assert row.audio_seconds == 3.75
    assert row.extra == {}


async def test_usage_keeps_image_counts(store: StateStore) -> None:
    await store.record_usage([record(images=2), record(images=1), record()])

    (row,) = await store.usage("2025-06-01", "2025-06-01")

    assert row.images == 3
    assert row.extra == {}


async def test_usage_is_summed_per_day_and_row(store: StateStore) -> None:
    await store.record_usage([record(), record(status=502, cached_tokens=50), record(fallback=True)])
    await store.record_usage(
        [
            record(tenant="team-b", reasoning_tokens=7),
            record(day_offset=1, deployment="qwen-local", provider="gpu-pool", hosting="self_hosted"),
            record(day_offset=-1),
        ]
    )

    rows = await store.usage("2025-06-01", "2025-06-02")

    dims = ("coder", "qwen-plus", "qwen-cloud", "alibaba", "cloud", "sg")
    assert rows == [
        UsageRow("2025-06-01", "team-a", *dims, requests=3, errors=1, fallbacks=1, input_tokens=300,
                 output_tokens=60, cached_tokens=50, cost_usd=0.3, latency_s_sum=1.5),
        UsageRow("2025-06-01", "team-b", *dims, requests=1, input_tokens=100, output_tokens=20,
                 reasoning_tokens=7, cost_usd=0.1, latency_s_sum=0.5),
        UsageRow("2025-06-02", "team-a", "coder", "qwen-local", "gpu-pool", "alibaba", "self_hosted", "sg",
                 requests=1, input_tokens=100, output_tokens=20, cost_usd=0.1, latency_s_sum=0.5),
    ]  # fmt: skip
    assert [r.day for r in await store.usage("2025-05-31", "2025-05-31")] == ["2025-05-31"]
    assert await store.usage("2025-06-03", "2025-06-09") == []


async def test_successes_after_a_failure_cost_no_redis_round_trip(redis_server: RedisServer) -> None:
    """A failure in the window used to make every later success record itself in Redis (one more round trip per
    request for the whole window), though a success in a closed circuit changes nothing there."""
    import redis

    store = create_state_store(Settings(redis_url=redis_server.url), on_error=lambda _op: None)
    await store.start()
    health = HealthTracker(store, on_circuit=lambda _d, _o: None, clock=lambda: T0)
    health.configure(("qwen",), CircuitBreakerPolicy(failures=3, window_s=30.0, cooldown_s=60.0))
    counter = redis.Redis.from_url(redis_server.url)

    def scripts_run() -> int:
        stats = counter.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval"))

    try:
        await health.failed("qwen", ErrorClass.SERVER_ERROR)
        before = scripts_run()
        for _ in range(20):
            await health.succeeded("qwen", 0.1)
        assert scripts_run() == before
        await health.failed("qwen", ErrorClass.SERVER_ERROR)
        await health.failed("qwen", ErrorClass.SERVER_ERROR)  # the first failure still counts: three open it
        assert (await store.circuit_states(["qwen"], T0 + 1))["qwen"].phase is CircuitPhase.OPEN
    finally:
        counter.close()
        await store.close()
