"""The assembled gateway: active policy and its providers, state store, health, executor, metrics, accounting,
and the shutdown drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import FrameType
from typing import Any

from gateway.errors import PolicyError
from gateway.load.tracker import LoadTracker
from gateway.observability.accounting import Accountant
from gateway.observability.metrics import Metrics
from gateway.observability.tracing import build_tracer
from gateway.policy.loader import load_policy
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import Deployment, PolicyTable
from gateway.policy.table import Provider as ProviderConfig
from gateway.portability.shadow import ShadowEvaluator
from gateway.providers.base import Provider
from gateway.providers.http1_response import UpstreamLimits
from gateway.providers.registry import ProviderFactory, build_providers, close_shared_clients
from gateway.providers.upstream_proxy import proxies_for
from gateway.routing.executor import AttemptObserver, Executor
from gateway.routing.health import HealthTracker
from gateway.settings import Settings, environment
from gateway.state.base import StateStore

log = logging.getLogger("polyroute")
shutdown_log = logging.getLogger("polyroute.shutdown")
WATCH_INTERVAL_S = 1.0
_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
# Streams are cut this long before the server's own deadline, so they can still send their error event.
_DRAIN_MARGIN_S = 1.0


@dataclass(frozen=True)
class ActivePolicy:
    """A policy table and the provider adapters built for it; swapped as one on reload."""

    table: PolicyTable
    adapters: dict[str, tuple[ProviderConfig, Provider]]

    @cached_property  # read on every attempt: built once per policy, not once per request
    def providers(self) -> dict[str, Provider]:
        return {name: adapter for name, (_, adapter) in self.adapters.items()}


class Drain:
    """From SIGTERM on, in-flight requests may finish until a deadline; what is left then ends with a 503/SSE error.

    uvicorn stops accepting connections and waits `timeout_graceful_shutdown` for the open ones; after that it
    cancels them, and a stream cut by cancellation could no longer say why. So the gateway keeps its own
    deadline a little earlier and ends what is still open itself.
    """

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.deadline: float | None = None  # loop time; None until the drain begins
        self._passed: asyncio.Future[None] | None = None
        self._sigterm: tuple[_SignalHandler, _SignalHandler] | None = None  # (ours, the one before it)

    @property
    def passed(self) -> asyncio.Future[None]:
        """Done when the drain deadline has passed (never, unless a drain began)."""
        if self._passed is None:
            self._passed = asyncio.get_running_loop().create_future()
        return self._passed

    def begin(self) -> None:
        """Start the drain (idempotent): streams and requests still open at the deadline are ended."""
        if self.deadline is not None:
            return
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + max(0.0, self.grace_s - min(_DRAIN_MARGIN_S, self.grace_s / 4))
        shutdown_log.info("draining in-flight requests for up to %.1fs", self.deadline - loop.time())
        loop.call_at(self.deadline, self._deadline_passed)

    def _deadline_passed(self) -> None:
        if not self.passed.done():
            self.passed.set_result(None)

    def on_sigterm(self) -> None:
        """Chain a SIGTERM handler in front of the server's own (which stops accepting and waits)."""
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: FrameType | None) -> None:
            loop.call_soon_threadsafe(self.begin)
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, handler)
        self._sigterm = (handler, previous)

    def off_sigterm(self) -> None:
        """Put back the SIGTERM handler found by `on_sigterm` (unless another was chained in front since)."""
        if self._sigterm is None or threading.current_thread() is not threading.main_thread():
            return
        handler, previous = self._sigterm
        self._sigterm = None
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, previous)


class _MetricsObserver(AttemptObserver):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def attempt(self, deployment: Deployment, outcome: str) -> None:
        self._metrics.upstream_attempt(
            deployment=deployment.name, provider=deployment.provider.name, outcome=outcome
        )

    def fallback(self, from_deployment: str, to_deployment: str, reason: str) -> None:
        self._metrics.fallback(from_deployment=from_deployment, to_deployment=to_deployment, reason=reason)


def load_table(settings: Settings, path: Path) -> PolicyTable:
    fx = CurrencyRates(usd_per_cny=settings.usd_per_cny, usd_per_eur=settings.usd_per_eur)
    return load_policy(path, environment(), fx=fx)


class Runtime:
    """Built in the app's lifespan and handed to every route; nothing here is a module global."""

    def __init__(
        self,
        settings: Settings,
        table: PolicyTable,
        store: StateStore,
        metrics: Metrics,
        *,
        provider_factory: ProviderFactory | None = None,
    ) -> None:
        """`provider_factory` builds the provider adapters instead of polyroute's own (openai, litellm)."""
        self.settings = settings
        self._provider_factory = provider_factory
        self._proxies = proxies_for(
            http_proxy=settings.http_proxy, https_proxy=settings.https_proxy, no_proxy=settings.no_proxy
        )
        self._limits = UpstreamLimits(
            body_bytes=settings.max_upstream_body_bytes, event_bytes=settings.max_sse_event_bytes
        )
        self.store = store
        self.metrics = metrics
        self.health = HealthTracker(
            store, on_circuit=lambda d, is_open: metrics.circuit(deployment=d, is_open=is_open)
        )
        self.load = LoadTracker(metrics, lambda: self.health.inflight)  # engine load pollers (spill-over, affinity)
        self.executor = Executor(store, self.health, _MetricsObserver(metrics))
        self.accountant = Accountant(store, metrics)
        self.shadow = ShadowEvaluator(metrics)  # copies of sampled requests (portability/shadow.py)
        self.tracer = build_tracer(settings, metrics)
        self.drain = Drain(settings.shutdown_grace_seconds)
        self.active = self._activate(table, None)
        self._watcher: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self._retired: set[asyncio.Task[None]] = set()
        self._stale: list[Provider] = []  # adapters of replaced policies, closed once their requests are done

    def _activate(self, table: PolicyTable, previous: ActivePolicy | None) -> ActivePolicy:
        reuse = previous.adapters if previous is not None else None
        adapters = build_providers(
            table.providers, reuse, self._proxies, self._limits, self._provider_factory,
            connection_wait=self.metrics.upstream_connection_wait,
        )
        self.metrics.set_known(
            aliases=table.aliases,
            deployments=table.deployments,
            providers=table.providers,
            tenants=[*table.tenants, "anonymous"],
            vendors={p.vendor for p in table.providers.values()},
        )
        self.health.configure(tuple(table.deployments), table.fallback.circuit_breaker)
        self.load.configure(table)
        return ActivePolicy(table=table, adapters=adapters)

    async def start(self) -> None:
        await self.store.start()
        await self.health.start()
        await self.load.start()
        await self.accountant.start()
        await self.tracer.start()
        if self.settings.policy is not None and self.settings.watch_policy:
            self._watcher = asyncio.create_task(self._watch(self.settings.policy), name="polyroute-watch")
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (NotImplementedError, RuntimeError):
            log.debug("SIGHUP reload is not available on this platform")
        self.drain.on_sigterm()

    def _on_sighup(self) -> None:
        task = asyncio.create_task(self.reload_logged("SIGHUP"))
        self._retired.add(task)
        task.add_done_callback(self._retired.discard)

    def _stop_signals(self) -> None:
        """The process's signal handlers as `start` found them (an embedding or a test process lives on)."""
        self.drain.off_sigterm()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    async def close(self) -> None:
        """Stop background work, flush usage, close adapters and the store; each step runs even if one fails."""
        self._stop_signals()
        async with contextlib.AsyncExitStack() as steps:  # callbacks run last-pushed first
            steps.push_async_callback(self.store.close)
            steps.push_async_callback(self.tracer.close)  # bounded: a dead collector holds no shutdown
            steps.push_async_callback(close_shared_clients)
            for adapter in [*self._stale, *(adapter for _, adapter in self.active.adapters.values())]:
                steps.push_async_callback(adapter.close)
            steps.push_async_callback(self.health.close)
            steps.push_async_callback(self.load.close)
            steps.push_async_callback(self.accountant.close)
            steps.push_async_callback(self.shadow.close)
            steps.push_async_callback(self._stop_background)

    async def _stop_background(self) -> None:
        tasks = [*self._retired, *([self._watcher] if self._watcher is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def reload(self, why: str = "POST /admin/reload") -> PolicyTable:
        """Load the policy file again and swap it in atomically; an invalid file raises and changes nothing.

        Requests already running keep the ActivePolicy they started with, so they finish on the old policy.
        """
        if self.settings.policy is None:
            raise PolicyError(["no policy file is configured, so there is nothing to reload"])
        async with self._reload_lock:
            try:
                table = await asyncio.to_thread(load_table, self.settings, self.settings.policy)
            except PolicyError as err:
                self.metrics.policy_reload(result="error")
                # Problems name YAML paths; fields that hold secrets (api_key, api_keys) are never quoted in them.
                log.error("policy reload (%s) rejected, keeping the previous policy: %s", why, err.message)
                raise
            previous = self.active
            self.active = self._activate(table, previous)
            self.metrics.policy_reload(result="success")
            kept = {id(adapter) for _, adapter in self.active.adapters.values()}
            stale = [adapter for _, adapter in previous.adapters.values() if id(adapter) not in kept]
            if stale:
                self._stale.extend(stale)
                task = asyncio.create_task(self._close_later(stale, previous.table.fallback.timeouts.total_s))
                self._retired.add(task)
                task.add_done_callback(self._retired.discard)
            log.info("policy reloaded from %s (%s)", self.settings.policy, why)
            return table

    async def reload_logged(self, why: str) -> None:
        with contextlib.suppress(PolicyError):  # reload() logged and counted it
            await self.reload(why)

    async def _close_later(self, adapters: list[Provider], after_s: float) -> None:
        """Requests in flight on the old policy finish first (within its total timeout); then their adapters close."""
        await asyncio.sleep(after_s)
        for adapter in adapters:
            self._stale.remove(adapter)
            await adapter.close()

    async def _watch(self, path: Path) -> None:
        seen = _fingerprint(path)
        while True:
            await asyncio.sleep(WATCH_INTERVAL_S)
            now = _fingerprint(path)
            if now != seen:
                seen = now
                await self.reload_logged(f"{path} changed")


def _fingerprint(path: Path) -> tuple[tuple[str, float, int], ...]:
    files = sorted(path.glob("*.y*ml")) if path.is_dir() else [path]
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append((str(f), st.st_mtime, st.st_size))
    return tuple(out)
