"""When Redis goes away, requests keep flowing per the failure mode, nothing hangs, and usage waits for its return."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import pytest

from gateway.settings import StateFailureMode
from gateway.state.base import AdmissionRequest, CircuitPhase, DeploymentQuota, StateUnavailableError, UsageRecord
from gateway.state.redis import RedisStateStore
from tests.support.processes import RedisServer

MakeStore = Callable[[StateFailureMode], Awaitable[RedisStateStore]]
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC).timestamp()
SAFETY_S = 10.0  # a bound so that a hang fails the test instead of stalling the suite; not a timing assertion
PLAN = (DeploymentQuota("qwen-plus", rpm=10), DeploymentQuota("qwen-local"))


def request() -> AdmissionRequest:
    return AdmissionRequest("team-a", tokens=100, est_cost_usd=0.01, now=T0, tenant_rpm=5, deployments=PLAN)


def usage(n: int) -> list[UsageRecord]:
    return [
        UsageRecord(
            T0, "team-a", "coder", "qwen-plus", "qwen-cloud", "alibaba", "cloud", "sg", 200, 10, 5, cost_usd=0.01
        )
        for _ in range(n)
    ]


T = TypeVar("T")


async def within_bound(call: Awaitable[T]) -> T:
    return await asyncio.wait_for(call, SAFETY_S)


async def test_open_mode_admits_degraded_and_counts_each_error(
    redis_store_on_own_server: MakeStore, own_redis_server: RedisServer, errors: list[str]
) -> None:
    store = await redis_store_on_own_server(StateFailureMode.OPEN)
    assert not (await store.admit(request())).degraded

    own_redis_server.kill()
    results = await within_bound(asyncio.gather(*(store.admit(request()) for _ in range(20))))

    assert all(r.allowed and r.degraded and r.deployment == "qwen-plus" for r in results)
    assert errors.count("admit") == 20
    assert await within_bound(store.reserve_deployment(PLAN[0], 100, T0))
    assert not await within_bound(store.ping())
    assert "ping" in errors


async def test_closed_mode_refuses_with_state_unavailable(
    redis_store_on_own_server: MakeStore, own_redis_server: RedisServer, errors: list[str]
) -> None:
    store = await redis_store_on_own_server(StateFailureMode.CLOSED)
    own_redis_server.kill()

    with pytest.raises(StateUnavailableError) as raised:
        await within_bound(store.admit(request()))
    assert raised.value.status == 503
    with pytest.raises(StateUnavailableError):
        await within_bound(store.reserve_deployment(PLAN[0], 100, T0))
    assert errors == ["admit", "admit"]


@pytest.mark.parametrize("mode", [StateFailureMode.OPEN, StateFailureMode.CLOSED])
async def test_a_redis_that_stops_answering_is_an_outage_not_a_hang(
    redis_store_on_own_server: MakeStore, own_redis_server: RedisServer, errors: list[str], mode: StateFailureMode
) -> None:
    store = await redis_store_on_own_server(mode)
    assert not (await store.admit(request())).degraded  # the connections are open and in use
    own_redis_server.pause()
    try:
        if mode is StateFailureMode.OPEN:
            results = await within_bound(asyncio.gather(*(store.admit(request()) for _ in range(5))))
            assert all(r.allowed and r.degraded for r in results)
        else:
            with pytest.raises(StateUnavailableError):
                await within_bound(store.admit(request()))
    finally:
        own_redis_server.resume()
    assert "admit" in errors
    assert not (await within_bound(store.admit(request()))).degraded  # answered again once Redis is back


async def test_circuit_breakers_fall_back_to_this_process(
    redis_store_on_own_server: MakeStore, own_redis_server: RedisServer, errors: list[str]
) -> None:
    store = await redis_store_on_own_server(StateFailureMode.OPEN)
    own_redis_server.kill()

    for t in (T0, T0 + 1, T0 + 2):
        state = await within_bound(store.record_outcome("qwen", False, failures=3, window_s=10, cooldown_s=30, now=t))
    assert state.phase is CircuitPhase.OPEN
    states = await within_bound(store.circuit_states(["qwen", "other"], T0 + 5))
    assert (states["qwen"].phase, states["other"].phase) == (CircuitPhase.OPEN, CircuitPhase.CLOSED)
    assert await within_bound(store.claim_probe("qwen", T0 + 40, 30))
    assert not await within_bound(store.claim_probe("qwen", T0 + 40, 30))
    assert set(errors) == {"circuit"}


async def test_usage_is_buffered_and_flushed_when_redis_returns(
    redis_store_on_own_server: MakeStore, own_redis_server: RedisServer, errors: list[str]
) -> None:
    store = await redis_store_on_own_server(StateFailureMode.OPEN)
    await store.record_usage(usage(2))
    own_redis_server.kill()

    await within_bound(store.record_usage(usage(3)))
    await within_bound(store.record_usage(usage(4)))
    assert store.pending_usage == 7
    assert "usage" in errors
    await within_bound(store.settle("team-a", token_delta=5, cost_delta_usd=0.01, now=T0))  # counted, dropped
    assert "settle" in errors
    with pytest.raises(StateUnavailableError):
        await within_bound(store.usage("2025-06-01", "2025-06-01"))

    own_redis_server.start()  # same port, empty: only what the buffer held comes back

    async def drained() -> None:  # the store's own flusher writes the buffer; nothing here triggers it
        while store.pending_usage:  # noqa: ASYNC110  # polling the store's state is the point
            await asyncio.sleep(0.05)

    await within_bound(drained())
    rows = await within_bound(store.usage("2025-06-01", "2025-06-01"))
    assert [(r.requests, r.input_tokens, r.cost_usd) for r in rows] == [(7, 70, 0.07)]
    assert not (await store.admit(request())).degraded


async def test_an_outage_is_logged_once_without_the_password(
    redis_store_on_own_server: MakeStore,
    own_redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = await redis_store_on_own_server(StateFailureMode.OPEN)
    own_redis_server.kill()
    caplog.set_level(logging.INFO, logger="polyroute.state")

    await within_bound(asyncio.gather(*(store.admit(request()) for _ in range(10))))
    await within_bound(store.record_usage(usage(1)))
    own_redis_server.start()
    assert await within_bound(store.ping())

    messages = [r.getMessage() for r in caplog.records if r.name == "polyroute.state"]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1
    assert f"127.0.0.1:{own_redis_server.port}" in messages[0]
    assert not any(own_redis_server.password in m for m in messages if own_redis_server.password)
