"""Live deployment health: latency EWMA, in-flight counts, and a local view of the shared circuit breakers."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from gateway.error_classes import HEALTH_FAILURES, TRIPPING_FAILURES, ErrorClass
from gateway.policy.plan import HealthSnapshot
from gateway.policy.table import CircuitBreakerPolicy
from gateway.state.base import CircuitPhase, CircuitState, StateStore

log = logging.getLogger("polyroute.health")
EWMA_ALPHA = 0.2
REFRESH_INTERVAL_S = 1.0


class HealthTracker:
    """Feeds attempt outcomes to the store's circuit breakers and keeps what routing needs in memory."""

    def __init__(
        self,
        store: StateStore,
        *,
        on_circuit: Callable[[str, bool], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._on_circuit = on_circuit
        self._clock = clock
        self._policy = CircuitBreakerPolicy()
        self._deployments: tuple[str, ...] = ()
        self._circuits: dict[str, CircuitState] = {}
        self.latency_ewma_s: dict[str, float] = {}
        self.inflight: dict[str, int] = {}
        self._refresher: asyncio.Task[None] | None = None

    def configure(self, deployments: tuple[str, ...], policy: CircuitBreakerPolicy) -> None:
        """Called at start and on every policy reload."""
        self._deployments = deployments
        self._policy = policy

    async def start(self) -> None:
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_forever(), name="polyroute-circuit-refresh")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_INTERVAL_S)
            await self.refresh()

    async def refresh(self) -> None:
        """Pull circuit states from the store so that replicas sharing it agree."""
        states = await self._store.circuit_states(self._deployments, self._clock())
        for name, state in states.items():
            self._set(name, state)

    def _set(self, name: str, state: CircuitState) -> None:
        before = self._circuits.get(name)
        self._circuits[name] = state
        was_open = before is not None and before.phase is not CircuitPhase.CLOSED
        is_open = state.phase is not CircuitPhase.CLOSED
        if was_open != is_open or before is None:
            self._on_circuit(name, is_open)

    def snapshot(self) -> HealthSnapshot:
        now = self._clock()
        open_now = frozenset(
            name
            for name, st in self._circuits.items()
            if st.phase is CircuitPhase.OPEN and st.open_until > now
        )
        return HealthSnapshot(
            open_circuits=open_now, latency_ewma_s=self.latency_ewma_s, inflight=self.inflight
        )

    def circuit(self, name: str) -> CircuitState:
        return self._circuits.get(name, CircuitState())

    async def admit_attempt(self, name: str) -> bool:
        """False while the circuit is open; in half-open, only the one caller that claims the probe passes."""
        state = self._circuits.get(name)
        if state is None or state.phase is CircuitPhase.CLOSED:
            return True
        now = self._clock()
        if state.open_until > now:
            return False
        return await self._store.claim_probe(name, now, self._policy.cooldown_s)

    def begin(self, name: str) -> None:
        self.inflight[name] = self.inflight.get(name, 0) + 1

    def end(self, name: str) -> None:
        self.inflight[name] = max(0, self.inflight.get(name, 1) - 1)

    async def succeeded(self, name: str, latency_s: float) -> None:
        prev = self.latency_ewma_s.get(name)
        self.latency_ewma_s[name] = latency_s if prev is None else prev + EWMA_ALPHA * (latency_s - prev)
        state = self._circuits.get(name)
        # Only a half-open circuit's probe changes anything: a success in a closed circuit clears no failure (they
        # age out of the window), so it costs no store round trip, however many failures the window holds.
        if state is not None and state.phase is not CircuitPhase.CLOSED:
            await self._record(name, ok=True)

    async def failed(self, name: str, error_class: ErrorClass) -> None:
        if error_class in TRIPPING_FAILURES:
            # An account in arrears or a spent quota fails every request alike: the first one trips the breaker
            # (a threshold of one failure, so both stores open it in the same atomic step as any other).
            await self._record(name, ok=False, threshold=1, reason=error_class)
        elif error_class in HEALTH_FAILURES:
            await self._record(name, ok=False, reason=error_class)

    async def _record(
        self, name: str, *, ok: bool, threshold: int | None = None, reason: ErrorClass | None = None
    ) -> None:
        policy = self._policy
        state = await self._store.record_outcome(
            name,
            ok,
            failures=threshold or policy.failures,
            window_s=policy.window_s,
            cooldown_s=policy.cooldown_s,
            now=self._clock(),
        )
        if state.phase is CircuitPhase.OPEN and not ok:
            log.warning(
                "circuit opened for deployment %s for %.0fs (%s)", name, policy.cooldown_s, reason or "failures"
            )
        self._set(name, state)


async def open_circuits(store: StateStore, deployments: tuple[str, ...], now: float) -> frozenset[str]:
    """The deployments whose circuit is open in `store` now (what `route explain` shows outside the server)."""
    states = await store.circuit_states(deployments, now)
    return frozenset(n for n, st in states.items() if st.phase is CircuitPhase.OPEN and st.open_until > now)
