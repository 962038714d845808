"""The StateStore the workers of one machine share without Redis: one SQLite database (WAL) in the state directory.

Every admission is one `BEGIN IMMEDIATE` transaction, so checks and counts of all workers are serialized by SQLite's
write lock and a limit of N admits N across the process group, like the in-process store does for one process. The
sliding windows, periods and usage rows follow the in-process store's rules (window.py, memory.py) to the bucket and
the micro-dollar. Admission, settlement and small usage batches run on the event loop (a thread hop would cost more
than the transaction); when another worker holds the write lock, the loop tries again after a pause and serves other
requests meanwhile, so that no event loop ever waits for a lock. Reads, large usage batches and checkpoints run on the
store's own thread. The event loop's connection never checkpoints: the thread does, every CHECKPOINT_EVERY of its
transactions. Circuit breakers stay per worker (each opens on the failures it sees).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from gateway.settings import StateFailureMode
from gateway.state.base import (
    AdmissionRequest,
    AdmissionResult,
    DeploymentQuota,
    RoutingFacts,
    StateUnavailableError,
    UsageRecord,
    UsageRow,
    admission_result,
    bucket_index,
    from_micro,
    to_micro,
    utc_day,
    utc_month,
)
from gateway.state.facts import (
    DEFAULT_FACTS_PER_DAY,
    FACT_COUNTERS,
    fact_row,
)
from gateway.state.memory import LocalCircuitBreakers, ProcessCircuits
from gateway.state.sqlite_ops import (
    admit,
    count_deployment,
    fact_key,
    periods,
    periods_add,
    record_usage,
    usage_key,
    walk,
    window_add,
)
from gateway.state.usage_rows import sort_rows, usage_row

DB_NAME = "polyroute-state.sqlite3"
BUSY_TIMEOUT_MS = 5_000  # how long a worker waits for another's transaction before the store counts as unreachable
FIRST_PAUSE_S, LAST_PAUSE_S = 0.001, 0.016  # between tries for a write lock another worker holds (doubling)
CHECKPOINT_EVERY = 256  # transactions on the event loop between two checkpoints (a few pages each: about 4 MB of WAL)
RESTART_WAIT_MS = 10  # how long a checkpoint waits for the lock and for readers before it leaves the rest to the next
WAL_LIMIT_BYTES = 4 * 2**20  # what a WAL larger than this (after a burst) is cut back to when it starts over
LOOP_USAGE_RECORDS = 32  # usage batches up to this size are written on the event loop (a few hundred µs at most)

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS window (kind TEXT, name TEXT, bucket INTEGER, requests INTEGER, tokens INTEGER,"
    " PRIMARY KEY (kind, name, bucket)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS counter (kind TEXT, name TEXT, period TEXT, value INTEGER,"
    " PRIMARY KEY (kind, name)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS usage (day TEXT, key TEXT, counter TEXT, value INTEGER,"
    " PRIMARY KEY (day, key, counter)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS fact (day TEXT, key TEXT, requests INTEGER, input_tokens INTEGER,"
    " output_tokens INTEGER, cost_micro_usd INTEGER, latency_us INTEGER, PRIMARY KEY (day, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS fact_dropped (day TEXT PRIMARY KEY, n INTEGER) WITHOUT ROWID",
)

T = TypeVar("T")


class SqliteStateStore(ProcessCircuits):
    """Limits, budgets, usage and routing facts in one SQLite file that every worker of the machine opens."""

    def __init__(
        self,
        path: Path,
        *,
        failure_mode: StateFailureMode,
        on_error: Callable[[str], None],
        facts_per_day: int = DEFAULT_FACTS_PER_DAY,
    ) -> None:
        self._path = path
        self._failure_mode = failure_mode
        self._on_error = on_error
        self._facts_per_day = facts_per_day
        self._circuits = LocalCircuitBreakers()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="polyroute-state")
        self._db: sqlite3.Connection | None = None  # the store's thread's: waits for the lock
        self._fast: sqlite3.Connection | None = None  # the event loop's: never waits
        self._fast_commits = 0
        self._forgotten_until = ""  # the day up to which this worker deleted usage past retention (sqlite_ops)

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        await self._run(self._open)

    async def close(self) -> None:
        if self._fast is not None:
            self._fast.close()
            self._fast = None
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)

    async def ping(self) -> bool:
        try:
            await self._run(lambda: self._conn().execute("SELECT 1").fetchone())
        except sqlite3.Error:
            self._on_error("ping")
            return False
        return True

    async def admit(self, request: AdmissionRequest) -> AdmissionResult:
        try:
            counted = await self._transact(lambda db: admit(db, request))
        except sqlite3.Error:
            self._on_error("admit")
            if self._failure_mode is StateFailureMode.CLOSED:
                raise StateUnavailableError(
                    "Rate limits and budgets cannot be checked right now: the gateway's shared state store (SQLite) "
                    "cannot be written, and this gateway refuses such requests until it can. Try again shortly."
                ) from None
            first = request.deployments[0].name if request.deployments else None
            return AdmissionResult(allowed=True, deployment=first, degraded=True)
        return admission_result(request, counted)

    async def reserve_deployment(self, quota: DeploymentQuota, tokens: int, now: float) -> bool:
        def reserve(db: sqlite3.Connection) -> bool:
            bucket = bucket_index(now)
            chosen, _ = walk(db, (quota,), tokens, bucket)
            if chosen is not None:
                count_deployment(db, chosen, tokens, bucket)
            return chosen is not None

        try:
            return await self._transact(reserve)
        except sqlite3.Error:
            self._on_error("admit")
            return self._failure_mode is StateFailureMode.OPEN

    async def settle(self, tenant: str, *, token_delta: int, cost_delta_usd: float, now: float) -> None:
        cost = to_micro(cost_delta_usd)

        def settle(db: sqlite3.Connection) -> None:
            if token_delta:
                window_add(db, ("tenant", tenant), bucket_index(now), 0, token_delta)
            if cost:
                periods_add(db, tenant, utc_day(now), utc_month(now), cost)

        if token_delta or cost:
            try:
                await self._transact(settle)
            except sqlite3.Error:
                self._on_error("settle")  # as with Redis: a settlement lost to an outage is counted and dropped

    async def spent(self, tenant: str, now: float) -> tuple[float, float]:
        def read() -> tuple[float, float]:
            day, month = periods(self._conn(), tenant, utc_day(now), utc_month(now))
            return from_micro(day), from_micro(month)

        return await self._guarded("other", read)

    async def record_usage(self, records: Sequence[UsageRecord]) -> None:
        if not records:
            return
        per_day, forgotten = self._facts_per_day, self._forgotten_until

        def write(db: sqlite3.Connection) -> str:
            return record_usage(db, records, per_day, forgotten)

        try:
            # A batch of a few records costs less than the thread hop: on the event loop when the lock is free.
            if len(records) <= LOOP_USAGE_RECORDS:
                self._forgotten_until = await self._transact(write)
            else:
                self._forgotten_until = await self._run(lambda: self._write(self._conn(), write))
        except sqlite3.Error:
            self._on_error("usage")
            raise StateUnavailableError("the state store cannot be read (usage)") from None

    async def usage(self, since_day: str, until_day: str) -> list[UsageRow]:
        def read() -> list[UsageRow]:
            rows: dict[tuple[str, str], dict[str, int]] = {}
            query = "SELECT day, key, counter, value FROM usage WHERE day BETWEEN ? AND ?"
            for day, key, counter, value in self._conn().execute(query, (since_day, until_day)):
                rows.setdefault((day, key), {})[counter] = value
            return sort_rows(usage_row(day, usage_key(key), counts) for (day, key), counts in rows.items())

        return await self._guarded("usage", read)

    async def routing_facts(self, since_day: str, until_day: str) -> RoutingFacts:
        def read() -> RoutingFacts:
            db = self._conn()
            columns = ", ".join(FACT_COUNTERS)
            query = f"SELECT day, key, {columns} FROM fact WHERE day BETWEEN ? AND ? ORDER BY day"
            rows = tuple(
                fact_row(day, fact_key(key), dict(zip(FACT_COUNTERS, counts, strict=True)))
                for day, key, *counts in db.execute(query, (since_day, until_day))
            )
            dropped = db.execute(
                "SELECT coalesce(sum(n), 0) FROM fact_dropped WHERE day BETWEEN ? AND ?", (since_day, until_day)
            ).fetchone()[0]
            return RoutingFacts(rows, int(dropped))

        return await self._guarded("usage", read)

    # --- the store's own thread ---

    async def _run(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call)

    async def _transact(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` in one write transaction, right here; while another worker holds the lock, again after a pause.

        SQLite itself only polls for a lock (its busy handler sleeps 1, 2, 5, 10 ms ... between tries): polling from
        the event loop waits as long without a thread hop, and the loop serves other requests meanwhile.
        """
        deadline = 0.0
        pause = FIRST_PAUSE_S
        while True:
            if self._fast is None:  # not started, or closed while this transaction waited for the lock
                raise sqlite3.OperationalError("the state store is not open")
            try:
                result = self._write(self._fast, work)
            except sqlite3.OperationalError as err:
                if err.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                now = time.monotonic()
                if not deadline:
                    deadline = now + BUSY_TIMEOUT_MS / 1000
                elif now >= deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, LAST_PAUSE_S)
                continue
            self._fast_commits += 1
            if self._fast_commits % CHECKPOINT_EVERY == 0:
                self._thread.submit(self._checkpoint)  # not awaited: nothing waits for it
            return result

    def _checkpoint(self) -> None:
        """Copy the WAL's pages into the database, so that the next writer starts the WAL over (and cuts it back to
        WAL_LIMIT_BYTES) instead of growing it: the event loop's connection never checkpoints.

        PASSIVE copies without waiting for anyone. Under steady load writers add pages meanwhile, and a writer would
        never find the whole log copied: RESTART then takes the write lock and copies the few pages left, holding new
        writers off while it copies them and for at most RESTART_WAIT_MS more while readers of older pages (an
        /admin/usage read) finish; if they do not, it gives up and the next checkpoint tries again.
        """
        with contextlib.suppress(sqlite3.Error):  # the store cannot be written: the next checkpoint tries again
            db = self._conn()
            db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            db.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
            try:
                db.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            finally:
                db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    async def _guarded(self, op: str, call: Callable[[], T]) -> T:
        try:
            return await self._run(call)
        except sqlite3.Error:
            self._on_error(op)
            raise StateUnavailableError(f"the state store cannot be read ({op})") from None

    def _open(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _set_wal(db)
        # WAL with NORMAL: a commit survives the crash of any worker; only a power loss may drop the last ones.
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
        self._db = db
        self._write(db, lambda conn: [conn.execute(statement) for statement in SCHEMA])
        fast = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        fast.execute("PRAGMA busy_timeout = 0")
        fast.execute("PRAGMA synchronous = NORMAL")
        fast.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints run on the store's thread, not the event loop
        fast.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
        self._fast = fast

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.OperationalError("the state store is not started")
        return self._db

    @staticmethod
    def _write(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
        """One transaction holding the write lock from its start: what it read is still true when it writes."""
        db.execute("BEGIN IMMEDIATE")
        try:
            result = work(db)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result


def _set_wal(db: sqlite3.Connection) -> None:
    """Switch to WAL. Workers starting together on a new file race for the switch, and SQLite answers BUSY at once
    there, without its busy handler: wait for the other worker's switch as long as for any other lock."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if err.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)  # on the store's own thread, never the event loop
