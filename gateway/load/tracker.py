"""The load snapshot routing reads: engine signals per deployment, and each spill-over alias's tier with hysteresis."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING

from gateway.load.hysteresis import TierHysteresis
from gateway.load.poller import EnginePoller
from gateway.observability.metrics import Metrics
from gateway.policy.plan import NO_LOAD, AliasLoad, EngineLoad, LoadSnapshot
from gateway.policy.table import Alias, Deployment, Hosting, PolicyTable, Strategy

if TYPE_CHECKING:  # imported when the first engine is polled (a tenth of a second of startup otherwise)
    import aiohttp

DEFAULT_TICK_S = 0.25

SentMark = tuple[str, int]  # a request counted in LoadSnapshot.sent: its deployment and that engine's read generation


class LoadTracker:
    """Owns the pollers (one per self-hosted provider with engine metrics) and rebuilds the snapshot every tick.

    A request only reads `snapshot()`, built beforehand: no request ever waits for a poller.
    """

    def __init__(
        self,
        metrics: Metrics | None,
        inflight: Callable[[], Mapping[str, int]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._inflight = inflight
        self._clock = clock
        self._table: PolicyTable | None = None
        self._pollers: dict[str, EnginePoller] = {}  # by provider name
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None  # made when the first poller starts
        self._started = False
        self._states: dict[str, TierHysteresis] = {}
        # Requests placed on each deployment since its engine's last good read (LoadSnapshot.sent)
        self._sent: dict[str, int] = {}
        self._generation: dict[str, int] = {}  # per deployment: good reads of its engine so far
        self._reads_seen: dict[str, int] = {}  # good reads per provider already accounted for
        self._snapshot = NO_LOAD
        self._changed = asyncio.Event()

    def snapshot(self) -> LoadSnapshot:
        return self._snapshot

    def configure(self, table: PolicyTable) -> None:
        """Called at start and on every reload; pollers restart only when the loop is running."""
        self._table = table
        self._states = {name: self._states.get(name, TierHysteresis()) for name in _spill_aliases(table)}
        if self._metrics is not None:
            for name, state in self._states.items():  # the series exist before the first spill
                self._metrics.spill(alias=name, from_tier=state.active_tier, to_tier=state.active_tier)
        if self._started:
            self._restart()

    async def start(self) -> None:
        self._started = True
        self._restart()
        self.evaluate()

    async def close(self) -> None:
        self._started = False
        await self._stop_tasks()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _restart(self) -> None:
        assert self._table is not None
        old, self._tasks = self._tasks, []
        for task in old:
            task.cancel()
        self._reads_seen.clear()
        polled = [p for p in self._table.providers.values() if p.metrics_url is not None]
        if polled and self._session is None:
            import aiohttp

            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16), trust_env=False)
        session = self._session
        self._pollers = {p.name: EnginePoller(p, session, clock=self._clock) for p in polled if session is not None}
        if not self._pollers and not self._states:
            self._snapshot = NO_LOAD
            return
        for poller in self._pollers.values():
            name = f"polyroute-load-{poller.provider.name}"
            self._tasks.append(asyncio.create_task(poller.run(partial(self._read, poller)), name=name))
        tick = min((p.poll_s for p in self._pollers.values()), default=DEFAULT_TICK_S)
        self._tasks.append(asyncio.create_task(self._tick(tick), name="polyroute-load-tick"))

    async def _stop_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def placed(self, deployment: str) -> SentMark | None:
        """A request was placed on `deployment`: counted until its engine's next good read shows it, or until it ends
        (only where the engine's own numbers are used; polyroute's in-flight count needs no such correction)."""
        engine = self._snapshot.engines.get(deployment)
        if engine is None or engine.source == "inflight":
            return None
        self._sent[deployment] = self._sent.get(deployment, 0) + 1
        return deployment, self._generation.get(deployment, 0)

    def done(self, mark: SentMark) -> None:
        """A counted request ended before its engine was read again: it no longer loads the engine."""
        deployment, generation = mark
        if self._generation.get(deployment, 0) != generation:
            return  # a read since has counted it (and the count started over)
        left = self._sent.get(deployment, 0) - 1
        if left > 0:
            self._sent[deployment] = left
        else:
            self._sent.pop(deployment, None)

    def _read(self, poller: EnginePoller) -> None:
        """After each poll: a new good reading includes what was sent before it, so those counts start over."""
        provider = poller.provider.name
        if poller.good_reads != self._reads_seen.get(provider, 0) and self._table is not None:
            self._reads_seen[provider] = poller.good_reads
            for d in self._table.deployments.values():
                if d.provider.name == provider:
                    self._sent.pop(d.name, None)
                    self._generation[d.name] = self._generation.get(d.name, 0) + 1
        self.evaluate()

    async def _tick(self, interval_s: float) -> None:
        # Staleness and in-flight counts change without any read: re-evaluated on a clock of their own.
        while True:
            await asyncio.sleep(interval_s)
            self.evaluate()

    async def wait_for_room(self, alias: str, tier: int, timeout_s: float) -> bool:
        """Wait until `tier` of `alias` is no longer above its high mark; False after `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while tier in self._snapshot.aliases.get(alias, AliasLoad()).saturated:
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    def evaluate(self) -> None:
        """Rebuild the snapshot from the pollers' last readings, move tiers, publish gauges."""
        table = self._table
        if table is None:
            return
        now = self._clock()
        inflight = self._inflight()
        engines = {
            d.name: load
            for d in table.deployments.values()
            if (load := self._engine_load(d, now, inflight)) is not None
        }
        aliases = {name: self._move(table.aliases[name], engines, now) for name in self._states}
        self._snapshot = LoadSnapshot(engines=engines, aliases=aliases, sent=self._sent)
        if self._metrics is not None:
            for name, e in engines.items():
                self._metrics.engine_load(
                    deployment=name,
                    queue=e.queue,
                    running=e.running,
                    kv=e.kv,
                    age_s=e.age_s,
                    fallback=e.source == "inflight",
                )
        self._changed.set()
        self._changed = asyncio.Event()

    def _engine_load(self, d: Deployment, now: float, inflight: Mapping[str, int]) -> EngineLoad | None:
        """Self-hosted deployments only: a cloud provider's load is not ours to see (its 429s and latency are)."""
        provider = d.provider
        if provider.hosting is not Hosting.SELF_HOSTED:
            return None
        poller = self._pollers.get(provider.name)
        own = float(inflight.get(d.name, 0))
        if poller is None:
            return EngineLoad(queue=own, reason=f"engine {provider.engine.value} has no metrics")
        age = None if poller.read_at is None else now - poller.read_at
        if poller.reading is not None and poller.fresh(now):
            r = poller.reading
            return EngineLoad(
                queue=r.queue,
                running=r.running,
                kv=r.kv,
                source=provider.engine.value,
                age_s=age,
                slots=poller.slots,
            )
        if poller.error is not None:
            reason = f"engine not answering ({poller.error})"
        else:
            reason = "engine signal stale" if age is not None else "engine not read yet"
        return EngineLoad(queue=own, age_s=age, reason=reason)

    def _move(self, alias: Alias, engines: Mapping[str, EngineLoad], now: float) -> AliasLoad:
        state = self._states[alias.name]
        before = state.active_tier
        moved = state.step(alias, engines, now)
        if self._metrics is not None and moved.active_tier != before:
            self._metrics.spill(alias=alias.name, from_tier=before, to_tier=moved.active_tier)
        return moved


def _spill_aliases(table: PolicyTable) -> list[str]:
    return [name for name, a in table.aliases.items() if a.strategy is Strategy.SPILLOVER]
