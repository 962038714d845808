"""The in-process StateStore (the single-replica default) and the pieces the Redis store shares with it."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from gateway.state.base import (
    AdmissionRequest,
    AdmissionResult,
    CircuitPhase,
    CircuitState,
    Counted,
    DeploymentQuota,
    RoutingFacts,
    UsageRecord,
    UsageRow,
    admission_result,
    bucket_index,
    from_micro,
    to_micro,
    utc_day,
    utc_month,
)
from gateway.state.facts import DEFAULT_FACTS_PER_DAY, FACT_RETENTION_DAYS, FactLedger
from gateway.state.usage_rows import USAGE_RETENTION_DAYS, UsageKey, sort_rows, tally_usage, usage_row
from gateway.state.window import SlidingWindows


@dataclass
class _Breaker:
    failures: deque[float] = field(default_factory=deque)
    window_s: float = 0.0
    open_until: float = 0.0  # 0 = closed; past it, half-open
    probe_until: float = 0.0  # a probe claimed in this half-open period holds until then


class LocalCircuitBreakers:
    """Circuit breakers of this process alone: the memory store's, and the Redis store's while Redis is away."""

    def __init__(self) -> None:
        self._breakers: dict[str, _Breaker] = {}

    def record(
        self, name: str, ok: bool, *, failures: int, window_s: float, cooldown_s: float, now: float
    ) -> CircuitState:
        b = self._breakers.setdefault(name, _Breaker())
        if b.open_until and now < b.open_until:
            return self.state(name, now)  # a late outcome of an attempt that started before the circuit opened
        if b.open_until:  # half-open: the probe's outcome decides
            if ok:
                self._breakers[name] = _Breaker()
                return CircuitState()
            return self._open(b, now + cooldown_s)
        b.window_s = window_s
        self._prune(b, now)
        if not ok:
            b.failures.append(now)
            if len(b.failures) >= failures:
                return self._open(b, now + cooldown_s)
        return CircuitState(CircuitPhase.CLOSED, 0.0, len(b.failures))

    def state(self, name: str, now: float) -> CircuitState:
        b = self._breakers.get(name)
        if b is None:
            return CircuitState()
        if not b.open_until:
            self._prune(b, now)
            return CircuitState(CircuitPhase.CLOSED, 0.0, len(b.failures))
        phase = CircuitPhase.OPEN if now < b.open_until else CircuitPhase.HALF_OPEN
        return CircuitState(phase, b.open_until, len(b.failures))

    def claim_probe(self, name: str, now: float, cooldown_s: float) -> bool:
        b = self._breakers.get(name)
        if b is None or not b.open_until:
            return True  # closed: nothing to probe
        if now < b.open_until or b.probe_until > now:
            return False
        b.probe_until = now + cooldown_s
        return True

    @staticmethod
    def _open(b: _Breaker, until: float) -> CircuitState:
        failures = len(b.failures)
        b.failures.clear()
        b.open_until = until
        b.probe_until = 0.0
        return CircuitState(CircuitPhase.OPEN, until, failures)

    @staticmethod
    def _prune(b: _Breaker, now: float) -> None:
        while b.failures and b.failures[0] <= now - b.window_s:
            b.failures.popleft()


class ProcessCircuits:
    """The StateStore's circuit operations over this process's own breakers (the in-process and SQLite stores:
    circuits are per process without Redis)."""

    _circuits: LocalCircuitBreakers

    async def record_outcome(
        self, deployment: str, ok: bool, *, failures: int, window_s: float, cooldown_s: float, now: float
    ) -> CircuitState:
        return self._circuits.record(
            deployment, ok, failures=failures, window_s=window_s, cooldown_s=cooldown_s, now=now
        )

    async def circuit_states(self, deployments: Sequence[str], now: float) -> dict[str, CircuitState]:
        return {name: self._circuits.state(name, now) for name in deployments}

    async def claim_probe(self, deployment: str, now: float, cooldown_s: float) -> bool:
        return self._circuits.claim_probe(deployment, now, cooldown_s)


class _PeriodCounters:
    """Integer counters that start again from zero when their period (day or month) changes."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], tuple[int | str, int]] = {}

    def get(self, kind: str, name: str, period: int | str) -> int:
        stored = self._values.get((kind, name))
        return stored[1] if stored is not None and stored[0] == period else 0

    def add(self, kind: str, name: str, period: int | str, delta: int) -> int:
        value = max(0, self.get(kind, name, period) + delta)
        self._values[(kind, name)] = (period, value)
        return value


class MemoryStateStore(ProcessCircuits):
    """Every StateStore operation in this process, with no I/O: exact because no call awaits mid-way."""

    def __init__(self, *, facts_per_day: int = DEFAULT_FACTS_PER_DAY) -> None:
        self._counters = _PeriodCounters()
        self._windows = SlidingWindows()
        self._circuits = LocalCircuitBreakers()
        self._usage: dict[str, dict[UsageKey, dict[str, int]]] = {}
        self._facts = FactLedger(facts_per_day)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def admit(self, request: AdmissionRequest) -> AdmissionResult:
        c, tenant = self._counters, request.tenant
        bucket, day, month = bucket_index(request.now), utc_day(request.now), utc_month(request.now)
        cost = to_micro(request.est_cost_usd)
        requests, used = self._windows.used(("tenant", tenant), bucket)
        spent_day = c.get("usd_day", tenant, day)
        spent_month = c.get("usd_month", tenant, month)
        reason = _tenant_reason(request, requests, used, spent_day + cost, spent_month + cost)
        chosen: DeploymentQuota | None = None
        saturated: tuple[DeploymentQuota, ...] = ()
        passes_at = 0
        if reason is None:
            chosen, saturated = self._walk(request.deployments, request.tokens, bucket)
            if request.deployments and chosen is None:
                reason = "deployments_saturated"
                passes_at = min(self._passes_at(q, request.tokens, bucket) for q in saturated)
        elif reason in ("tenant_rpm", "tenant_tpm"):
            passes_at = self._windows.passes_at(
                ("tenant", tenant),
                bucket,
                _excess(request.tenant_rpm, requests, 1),
                _excess(request.tenant_tpm, used, request.tokens),
            )
        if reason is None:
            requests, used = self._windows.add(("tenant", tenant), bucket, 1, request.tokens)
            spent_day = c.add("usd_day", tenant, day, cost)
            spent_month = c.add("usd_month", tenant, month, cost)
            if chosen is not None:
                self._count_deployment(chosen, request.tokens, bucket)
        counted = Counted(
            allowed=reason is None,
            reason=reason,
            deployment=chosen.name if chosen is not None else None,
            saturated=tuple(q.name for q in saturated),
            rpm_used=requests,
            tpm_used=used,
            spent_day_micro=spent_day,
            spent_month_micro=spent_month,
            passes_at_bucket=passes_at,
        )
        return admission_result(request, counted)

    async def reserve_deployment(self, quota: DeploymentQuota, tokens: int, now: float) -> bool:
        bucket = bucket_index(now)
        chosen, _ = self._walk((quota,), tokens, bucket)
        if chosen is None:
            return False
        self._count_deployment(chosen, tokens, bucket)
        return True

    async def settle(self, tenant: str, *, token_delta: int, cost_delta_usd: float, now: float) -> None:
        c, cost = self._counters, to_micro(cost_delta_usd)
        if token_delta:
            self._windows.add(("tenant", tenant), bucket_index(now), 0, token_delta)
        if cost:
            c.add("usd_day", tenant, utc_day(now), cost)
            c.add("usd_month", tenant, utc_month(now), cost)

    async def spent(self, tenant: str, now: float) -> tuple[float, float]:
        c = self._counters
        return (
            from_micro(c.get("usd_day", tenant, utc_day(now))),
            from_micro(c.get("usd_month", tenant, utc_month(now))),
        )

    async def record_usage(self, records: Sequence[UsageRecord]) -> None:
        for day, rows in tally_usage(records).items():
            if day not in self._usage:
                self._forget_before(day)
            stored = self._usage.setdefault(day, {})
            for key, counts in rows.items():
                row = stored.setdefault(key, {})
                for name, value in counts.items():
                    row[name] = row.get(name, 0) + value
        self._facts.add(records)

    async def routing_facts(self, since_day: str, until_day: str) -> RoutingFacts:
        rows, dropped = self._facts.rows(since_day, until_day)
        return RoutingFacts(tuple(rows), dropped)

    async def usage(self, since_day: str, until_day: str) -> list[UsageRow]:
        return sort_rows(
            usage_row(day, key, counts)
            for day, rows in self._usage.items()
            if since_day <= day <= until_day
            for key, counts in rows.items()
        )

    def _walk(
        self, quotas: Iterable[DeploymentQuota], tokens: int, bucket: int
    ) -> tuple[DeploymentQuota | None, tuple[DeploymentQuota, ...]]:
        """The first deployment under its limits, and every deployment at its limit, in plan order."""
        chosen: DeploymentQuota | None = None
        saturated: list[DeploymentQuota] = []
        for q in quotas:
            requests, used = self._windows.used(("deployment", q.name), bucket)
            full = (q.rpm is not None and requests + 1 > q.rpm) or (q.tpm is not None and used + tokens > q.tpm)
            if full:
                saturated.append(q)
            elif chosen is None:
                chosen = q
        return chosen, tuple(saturated)

    def _passes_at(self, quota: DeploymentQuota, tokens: int, bucket: int) -> int:
        key = ("deployment", quota.name)
        requests, used = self._windows.used(key, bucket)
        return self._windows.passes_at(key, bucket, _excess(quota.rpm, requests, 1), _excess(quota.tpm, used, tokens))

    def _count_deployment(self, quota: DeploymentQuota, tokens: int, bucket: int) -> None:
        if quota.rpm is not None or quota.tpm is not None:
            self._windows.add(("deployment", quota.name), bucket, 1, tokens)

    def _forget_before(self, day: str) -> None:
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
        cutoff = (start - timedelta(days=USAGE_RETENTION_DAYS)).strftime("%Y-%m-%d")
        for old in [d for d in self._usage if d < cutoff]:
            del self._usage[old]
        self._facts.forget_before((start - timedelta(days=FACT_RETENTION_DAYS)).strftime("%Y-%m-%d"))


def _tenant_reason(request: AdmissionRequest, requests: int, used: int, day_after: int, month_after: int) -> str | None:
    """Why the tenant's own limits or budgets refuse this request, checked in a fixed order; None when they allow it."""
    if request.tenant_rpm is not None and requests + 1 > request.tenant_rpm:
        return "tenant_rpm"
    if request.tenant_tpm is not None and used + request.tokens > request.tenant_tpm:
        return "tenant_tpm"
    if request.budget_day_usd is not None and day_after > to_micro(request.budget_day_usd):
        return "budget_day"
    if request.budget_month_usd is not None and month_after > to_micro(request.budget_month_usd):
        return "budget_month"
    return None


def _excess(limit: int | None, used: int, wanted: int) -> int:
    """How much must leave the window before `wanted` more fit under `limit` (<= 0: it fits now)."""
    return 0 if limit is None else used + wanted - limit
