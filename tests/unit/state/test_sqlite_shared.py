"""Two SQLite stores on one file, as two workers hold them: one limit, one budget, one usage ledger between them."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.settings import Settings, StateFailureMode
from gateway.state.base import StateUnavailableError, utc_day
from gateway.state.factory import create_state_store
from gateway.state.sqlite import DB_NAME, SqliteStateStore
from tests.unit.state.test_circuits_and_usage import record
from tests.unit.state.test_limits import T0, req


@pytest.fixture
async def workers(tmp_path: Path, errors: list[str]) -> AsyncIterator[tuple[SqliteStateStore, SqliteStateStore]]:
    settings = Settings(redis_url=None, state_dir=tmp_path, state_failure_mode=StateFailureMode.CLOSED)
    a, b = (create_state_store(settings, on_error=errors.append) for _ in range(2))
    assert isinstance(a, SqliteStateStore) and isinstance(b, SqliteStateStore)
    await asyncio.gather(a.start(), b.start())
    yield a, b
    await asyncio.gather(a.close(), b.close())
    assert errors == []


async def test_a_limit_admits_exactly_its_requests_across_two_stores(
    workers: tuple[SqliteStateStore, SqliteStateStore],
) -> None:
    a, b = workers
    results = await asyncio.gather(*((a, b)[i % 2].admit(req(tenant_rpm=50)) for i in range(200)))
    assert sum(r.allowed for r in results) == 50
    assert {r.reason for r in results if not r.allowed} == {"tenant_rpm"}


async def test_a_budget_spent_through_one_store_refuses_through_the_other(
    workers: tuple[SqliteStateStore, SqliteStateStore],
) -> None:
    a, b = workers
    assert (await a.admit(req(est_cost_usd=0.6, budget_day_usd=1.0))).allowed
    refused = await b.admit(req(est_cost_usd=0.6, budget_day_usd=1.0))
    assert (refused.allowed, refused.reason, refused.spent_day_usd) == (False, "budget_day", 0.6)
    await a.settle("team-a", token_delta=0, cost_delta_usd=-0.5, now=T0 + 6)  # the answer cost less
    assert (await b.admit(req(now=T0 + 7, est_cost_usd=0.6, budget_day_usd=1.0))).allowed
    assert await a.spent("team-a", T0 + 8) == pytest.approx((0.7, 0.7))


async def test_usage_written_by_both_stores_is_read_whole_from_either(
    workers: tuple[SqliteStateStore, SqliteStateStore],
) -> None:
    a, b = workers
    await asyncio.gather(a.record_usage([record(), record()]), b.record_usage([record(cost_usd=0.25)]))
    day = utc_day(record().ts)
    for store in (a, b):
        (row,) = await store.usage(day, day)
        assert (row.requests, row.input_tokens, row.cost_usd) == (3, 300, pytest.approx(0.45))


async def test_a_database_locked_past_the_wait_refuses_in_closed_mode(
    workers: tuple[SqliteStateStore, SqliteStateStore], tmp_path: Path, errors: list[str]
) -> None:
    a, _ = workers
    stuck = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)  # a process that took the lock and hangs
    try:
        stuck.execute("BEGIN IMMEDIATE")
        with pytest.raises(StateUnavailableError) as info:
            await a.admit(req(tenant_rpm=5))
        assert info.value.status == 503 and "cannot be written" in info.value.message
        assert errors == ["admit"]
    finally:
        stuck.close()
    errors.clear()
    assert (await a.admit(req(tenant_rpm=5))).allowed  # the lock is free again


async def test_the_write_ahead_log_shrinks_back_after_a_burst_of_admissions(tmp_path: Path, errors: list[str]) -> None:
    store = create_state_store(Settings(redis_url=None, state_dir=tmp_path), on_error=errors.append)
    await store.start()
    wal = tmp_path / f"{DB_NAME}-wal"
    try:
        for i in range(3000):  # each one a transaction on the event loop's connection, about 8 KiB of log
            assert (await store.admit(req(now=T0 + i / 100, tenant_rpm=10_000, est_cost_usd=0.001))).allowed
        assert await store.ping()  # a moment without writes, as between bursts
        # Without checkpoints the log would keep every transaction's pages: 24 MiB here, and growing. With them it
        # starts over and is cut back once a checkpoint has caught up, which on a busy machine may take a few more
        # rounds of CHECKPOINT_EVERY transactions (each checkpoint waits only briefly for the lock): keep admitting.
        deadline = time.monotonic() + 60
        while wal.stat().st_size > 4 * 2**20:
            assert time.monotonic() < deadline, f"the write-ahead log stayed at {wal.stat().st_size} bytes"
            assert (await store.admit(req(now=T0 + 31, tenant_rpm=10_000))).allowed
            await asyncio.sleep(0.002)
    finally:
        await store.close()  # the last connection to close checkpoints and deletes the log
    assert errors == []


async def test_an_admission_waiting_for_the_lock_when_the_store_closes_ends_degraded(
    tmp_path: Path, errors: list[str]
) -> None:
    settings = Settings(redis_url=None, state_dir=tmp_path, state_failure_mode=StateFailureMode.OPEN)
    store = create_state_store(settings, on_error=errors.append)
    await store.start()
    stuck = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)  # another worker, in a transaction
    try:
        stuck.execute("BEGIN IMMEDIATE")
        waiting = asyncio.create_task(store.admit(req(tenant_rpm=5)))
        await asyncio.sleep(0.05)  # it has found the lock taken and waits to try again
        await store.close()  # the worker shuts down meanwhile
        result = await waiting
    finally:
        stuck.close()
    assert (result.allowed, result.degraded) == (True, True)  # open mode: served without the limit, and counted
    assert errors == ["admit"]
