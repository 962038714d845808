"""Usage records into Redis: one atomic script per day, buffered (bounded) while Redis is away and flushed after."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis import exceptions as rx

from gateway.state.base import UsageRecord, utc_day
from gateway.state.redis_facts import FACTS_TTL_S, fact_args, facts_key
from gateway.state.redis_keys import USAGE_TTL_S, usage_field, usage_key
from gateway.state.redis_outage import OUTAGE_ERRORS, RedisOutage
from gateway.state.usage_rows import tally_usage

log = logging.getLogger("polyroute.state")

ScriptCall = Callable[[Sequence[str], Sequence[int | str]], Awaitable[Any]]

PENDING_LIMIT = 100_000  # usage records kept in memory while Redis is away
FLUSH_INTERVAL_S = 1.0
FLUSH_CHUNK = 1_000


class RedisUsageWriter:
    """Writes usage records (and their routing facts) day by day; what an outage kept back, the flusher retries."""

    def __init__(self, script: ScriptCall, outage: RedisOutage, *, facts_per_day: int) -> None:
        self._usage_lua = script
        self._outage = outage
        self._facts_per_day = facts_per_day
        self._pending: deque[UsageRecord] = deque()

    @property
    def pending(self) -> int:
        """Usage records waiting for Redis to come back."""
        return len(self._pending)

    async def record(self, records: Sequence[UsageRecord]) -> None:
        """Add records to their days' rows; while Redis is away, keep them (bounded) and let the flusher retry."""
        if records:
            await self._write_usage(records, self._buffer)

    async def flush(self) -> bool:
        """Write buffered usage records to Redis; True when none are left."""
        while self._pending:
            chunk = [self._pending.popleft() for _ in range(min(FLUSH_CHUNK, len(self._pending)))]
            if not await self._write_usage(chunk, self._requeue):
                return False
        return True

    async def flush_forever(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            if not self._pending:
                continue
            count = len(self._pending)
            try:
                flushed = await self.flush()
            except rx.RedisError:  # not an outage but a bad reply: keep the records and the flusher alive
                log.exception("writing buffered usage records failed; retrying")
                continue
            if flushed:
                log.info("wrote %d buffered usage records to the state store", count)

    async def _write_usage(self, records: Sequence[UsageRecord], keep: Callable[[list[UsageRecord]], None]) -> bool:
        """One atomic script per day; on an outage, `keep` receives the records of the days not written."""
        by_day: dict[str, list[UsageRecord]] = {}
        for record in records:
            by_day.setdefault(utc_day(record.ts), []).append(record)
        days = list(by_day)
        for n, day in enumerate(days):
            pairs: list[str | int] = []
            for key, counts in tally_usage(by_day[day])[day].items():
                for counter, value in counts.items():
                    if value:
                        pairs += [usage_field(key, counter), value]
            args = [USAGE_TTL_S, FACTS_TTL_S, self._facts_per_day, len(pairs) // 2, *pairs, *fact_args(by_day[day])]
            try:
                await self._usage_lua([usage_key(day), facts_key(usage_key(day))], args)
            except OUTAGE_ERRORS as err:
                self._outage.failed("usage", err)
                keep([r for d in days[n:] for r in by_day[d]])
                return False
            except rx.RedisError:
                keep([r for d in days[n:] for r in by_day[d]])
                raise
        self._outage.recovered()
        return True

    def _buffer(self, records: list[UsageRecord]) -> None:
        room = max(0, PENDING_LIMIT - len(self._pending))
        self._pending.extend(records[:room])
        if len(records) > room and self._outage.dropped(len(records) - room):
            log.error("usage buffer full (%d records): dropping usage records until Redis returns", PENDING_LIMIT)

    def _requeue(self, records: list[UsageRecord]) -> None:
        self._pending.extendleft(reversed(records))  # back in front, in their order
