"""The Redis StateStore: limits, budgets, circuit breakers and usage shared by every replica, exact through Lua."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date, timedelta

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from gateway.settings import StateFailureMode
from gateway.state.base import (
    AdmissionRequest,
    AdmissionResult,
    CircuitPhase,
    CircuitState,
    Counted,
    DeploymentQuota,
    RoutingFactRow,
    RoutingFacts,
    StateUnavailableError,
    UsageRecord,
    UsageRow,
    admission_result,
    from_micro,
    to_micro,
)
from gateway.state.facts import DEFAULT_FACTS_PER_DAY, FACT_RETENTION_DAYS
from gateway.state.memory import LocalCircuitBreakers
from gateway.state.redis_cluster import ClusterScript
from gateway.state.redis_facts import fact_rows, facts_key
from gateway.state.redis_keys import (
    CIRCUIT_TTL_S,
    DAY_TTL_S,
    MONTH_TTL_S,
    WINDOW_TTL_S,
    admit_args,
    admit_reply,
    circuit_keys,
    deployment_keys,
    has_quota,
    lua,
    parse_usage_field,
    quota_args,
    tenant_keys,
    usage_key,
    window_args,
)
from gateway.state.redis_lanes import ClusterLanes
from gateway.state.redis_outage import OUTAGE_ERRORS, RedisOutage
from gateway.state.redis_pipe import PipelinedScripts
from gateway.state.redis_script import ScriptConnections
from gateway.state.redis_sentinel import PacedSentinelPool
from gateway.state.redis_usage import RedisUsageWriter, ScriptCall
from gateway.state.usage_rows import USAGE_RETENTION_DAYS, UsageKey, sort_rows, usage_row

log = logging.getLogger("polyroute.state")


def _plain(client: Redis | RedisCluster, text: str, lanes: ClusterLanes) -> AsyncScript | ClusterScript:
    """A script through the client; on a Cluster, one that follows ASK redirects and waits for a lane of its node
    (see redis_cluster.py, redis_lanes.py)."""
    return ClusterScript(client, text, lanes) if isinstance(client, RedisCluster) else AsyncScript(client, text)


class RedisStateStore:
    """A StateStore over Redis standalone, Sentinel or Cluster; degrades per `failure_mode` while Redis is away.

    Admission is one Lua script (one round trip). In Cluster mode, tenant keys and deployment keys hash to different
    slots, so admission runs the tenant script first and, when a plan's deployments have quotas, the deployment
    script second: one extra round trip (and a third, undoing the tenant's count, when every deployment is saturated).
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        failure_mode: StateFailureMode = StateFailureMode.OPEN,
        on_error: Callable[[str], None] | None = None,
        location: str = "redis",
        secrets: Sequence[str] = (),
        companions: Sequence[Redis] = (),
        split_admission: bool | None = None,
        scripts: ScriptConnections | PipelinedScripts | None = None,
        lanes: ClusterLanes | None = None,
        facts_per_day: int = DEFAULT_FACTS_PER_DAY,
    ) -> None:
        """`scripts` (standalone only) runs admission, settlement and usage writes, the commands of every request,
        over connections of their own instead of through the client; `lanes` (Cluster only) bounds the scripts'
        calls and connects per node."""
        self._client = client
        self._lanes = lanes or ClusterLanes()
        self._failure_mode = failure_mode
        outage = RedisOutage(
            failure_mode=failure_mode, on_error=on_error or (lambda op: None), location=location, secrets=secrets
        )
        self._failed, self._recovered = outage.failed, outage.recovered
        self._companions = tuple(companions)  # e.g. Sentinel connections, closed with the store
        self._split = isinstance(client, RedisCluster) if split_admission is None else split_admission
        self._scripts = scripts
        self._admit_lua = self._script(client, lua("window.lua", "quota.lua", "admit.lua"), lean=not self._split)
        self._reserve_lua = _plain(client, lua("window.lua", "quota.lua", "reserve.lua"), self._lanes)
        self._adjust_lua = self._script(client, lua("window.lua", "adjust.lua"))
        self._record_lua = _plain(client, lua("circuit_record.lua"), self._lanes)
        self._probe_lua = _plain(client, lua("circuit_probe.lua"), self._lanes)
        self._usage = RedisUsageWriter(
            self._script(client, lua("usage_facts.lua")), outage, facts_per_day=facts_per_day
        )
        self._local = LocalCircuitBreakers()  # routing keeps its breakers while Redis is away
        self._flusher: asyncio.Task[None] | None = None

    @property
    def pending_usage(self) -> int:
        """Usage records waiting for Redis to come back."""
        return self._usage.pending

    async def start(self) -> None:
        if await self.ping():  # logs an outage at startup; never fails it
            await self._warm()
        self._flusher = asyncio.create_task(self._usage.flush_forever(), name="polyroute-usage-flush")

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        if self._usage.pending and not await self._usage.flush():
            log.error("state store closed with %d usage records that never reached Redis", self._usage.pending)
        if self._scripts is not None:
            await self._scripts.aclose()
        await self._client.aclose()
        for companion in self._companions:
            await companion.aclose()

    async def ping(self) -> bool:
        try:
            await self._client.ping()
        except OUTAGE_ERRORS as err:
            self._failed("ping", err)
            return False
        self._recovered()
        return True

    async def admit(self, request: AdmissionRequest) -> AdmissionResult:
        try:
            counted = await (self._admit_split(request) if self._split else self._admit_atomic(request))
        except OUTAGE_ERRORS as err:
            self._failed("admit", err)
            if self._failure_mode is StateFailureMode.CLOSED:
                raise StateUnavailableError(
                    "Rate limits and budgets cannot be checked right now: the gateway's shared state store is "
                    "unreachable, and this gateway refuses such requests until it is back. Try again shortly."
                ) from err
            first = request.deployments[0].name if request.deployments else None
            return AdmissionResult(allowed=True, deployment=first, degraded=True)
        self._recovered()
        return admission_result(request, counted)

    async def reserve_deployment(self, quota: DeploymentQuota, tokens: int, now: float) -> bool:
        if not has_quota(quota):
            return True
        try:
            chosen, _, _ = await self._reserve((quota,), tokens, now)
        except OUTAGE_ERRORS as err:
            self._failed("admit", err)
            if self._failure_mode is StateFailureMode.CLOSED:
                raise StateUnavailableError(
                    "Deployment rate limits cannot be checked right now: the gateway's shared state store is "
                    "unreachable, and this gateway refuses such requests until it is back. Try again shortly."
                ) from err
            return True
        self._recovered()
        return chosen is not None

    async def settle(self, tenant: str, *, token_delta: int, cost_delta_usd: float, now: float) -> None:
        """Deltas land in the window and day of `now`; a settlement lost to an outage is counted and dropped."""
        cost = to_micro(cost_delta_usd)
        if not token_delta and not cost:
            return
        try:
            await self._adjust(tenant, now, requests=0, tokens=token_delta, cost=cost)
        except OUTAGE_ERRORS as err:
            self._failed("settle", err)
            return
        self._recovered()

    async def spent(self, tenant: str, now: float) -> tuple[float, float]:
        keys = tenant_keys(tenant, now)
        try:
            day, month = await self._client.mget(keys[1], keys[2])
        except OUTAGE_ERRORS as err:
            self._failed("other", err)
            raise StateUnavailableError("the state store is unreachable: spending is unknown") from err
        self._recovered()
        return from_micro(int(day or 0)), from_micro(int(month or 0))

    async def record_outcome(
        self, deployment: str, ok: bool, *, failures: int, window_s: float, cooldown_s: float, now: float
    ) -> CircuitState:
        ttl_s = CIRCUIT_TTL_S + math.ceil(cooldown_s)
        args = [1 if ok else 0, failures, window_s, now, now + cooldown_s, uuid.uuid4().hex, ttl_s]
        try:
            phase, open_until, count = await self._record_lua(circuit_keys(deployment), args)
        except OUTAGE_ERRORS as err:
            self._failed("circuit", err)
            return self._local.record(
                deployment, ok, failures=failures, window_s=window_s, cooldown_s=cooldown_s, now=now
            )
        self._recovered()
        return CircuitState(CircuitPhase(phase), float(open_until), int(count))

    async def circuit_states(self, deployments: Sequence[str], now: float) -> dict[str, CircuitState]:
        if not deployments:
            return {}
        pipe = self._client.pipeline(transaction=False)
        for name in deployments:
            open_key, fails_key, _ = circuit_keys(name)
            pipe.get(open_key)
            pipe.zcard(fails_key)
        try:
            values = await pipe.execute()
        except OUTAGE_ERRORS as err:
            self._failed("circuit", err)
            return {name: self._local.state(name, now) for name in deployments}
        self._recovered()
        states: dict[str, CircuitState] = {}
        for i, name in enumerate(deployments):
            open_until, failures = float(values[2 * i] or 0), int(values[2 * i + 1])
            if not open_until:
                states[name] = CircuitState(CircuitPhase.CLOSED, 0.0, failures)
            else:
                phase = CircuitPhase.OPEN if now < open_until else CircuitPhase.HALF_OPEN
                states[name] = CircuitState(phase, open_until, failures)
        return states

    async def claim_probe(self, deployment: str, now: float, cooldown_s: float) -> bool:
        open_key, _, probe_key = circuit_keys(deployment)
        ttl_ms = max(1, round(cooldown_s * 1000))
        try:
            claimed = await self._probe_lua([open_key, probe_key], [now, now + cooldown_s, ttl_ms])
        except OUTAGE_ERRORS as err:
            self._failed("circuit", err)
            return self._local.claim_probe(deployment, now, cooldown_s)
        self._recovered()
        return bool(claimed)

    async def record_usage(self, records: Sequence[UsageRecord]) -> None:
        """Add records to their days' rows; while Redis is away, keep them (bounded) and let the flusher retry."""
        await self._usage.record(records)

    async def usage(self, since_day: str, until_day: str) -> list[UsageRow]:
        start, end = date.fromisoformat(since_day), date.fromisoformat(until_day)
        start = max(start, end - timedelta(days=USAGE_RETENTION_DAYS))  # older days have expired anyway
        days = [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]
        if not days:
            return []
        pipe = self._client.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(usage_key(day))
        try:
            hashes = await pipe.execute()
        except OUTAGE_ERRORS as err:
            self._failed("usage", err)
            raise StateUnavailableError("the state store is unreachable: usage cannot be read") from err
        self._recovered()
        rows: list[UsageRow] = []
        for day, stored in zip(days, hashes, strict=True):
            counters: dict[UsageKey, dict[str, int]] = {}
            for field, value in stored.items():
                parsed = parse_usage_field(field)
                if parsed is not None:
                    counters.setdefault(parsed[0], {})[parsed[1]] = int(value)
            rows += [usage_row(day, key, counts) for key, counts in counters.items()]
        return sort_rows(rows)

    async def routing_facts(self, since_day: str, until_day: str) -> RoutingFacts:
        start, end = date.fromisoformat(since_day), date.fromisoformat(until_day)
        start = max(start, end - timedelta(days=FACT_RETENTION_DAYS))  # older days have expired anyway
        days = [(start + timedelta(days=n)).isoformat() for n in range((end - start).days + 1)]
        if not days:
            return RoutingFacts()
        pipe = self._client.pipeline(transaction=False)
        for day in days:
            pipe.hgetall(facts_key(usage_key(day)))
        try:
            hashes = await pipe.execute()
        except OUTAGE_ERRORS as err:
            self._failed("usage", err)
            raise StateUnavailableError("the state store is unreachable: routing facts cannot be read") from err
        self._recovered()
        rows: list[RoutingFactRow] = []
        dropped = 0
        for day, stored in zip(days, hashes, strict=True):
            day_rows, day_dropped = fact_rows(day, stored)
            rows += day_rows
            dropped += day_dropped
        return RoutingFacts(tuple(rows), dropped)

    async def flush(self) -> bool:
        """Write buffered usage records to Redis; True when none are left."""
        return await self._usage.flush()

    # --- internals ---

    async def _warm(self) -> None:
        """Cluster and Sentinel: open the connections that requests will use before the first request, one at a
        time, so that a first burst opens none (standalone's per-request path keeps one connection)."""
        try:
            if isinstance(self._client, RedisCluster):
                await self._lanes.warm(self._client)
            elif isinstance(self._client.connection_pool, PacedSentinelPool):
                await self._client.connection_pool.fill()
        except OUTAGE_ERRORS as err:
            self._failed("ping", err)

    def _script(self, client: Redis | RedisCluster, text: str, *, lean: bool = True) -> ScriptCall:
        if self._scripts is not None and lean and not isinstance(client, RedisCluster):
            return self._scripts.script(text)
        return _plain(client, text, self._lanes)

    async def _admit_atomic(self, r: AdmissionRequest) -> Counted:
        keys = tenant_keys(r.tenant, r.now) + deployment_keys(r.deployments)
        raw = await self._admit_lua(keys, admit_args(r, r.deployments))
        return admit_reply(raw, r.deployments)

    async def _admit_split(self, r: AdmissionRequest) -> Counted:
        counted = admit_reply(await self._admit_lua(tenant_keys(r.tenant, r.now), admit_args(r, ())), ())
        if not counted.allowed or not r.deployments:
            return counted
        if not any(has_quota(q) for q in r.deployments):
            return replace(counted, deployment=r.deployments[0].name)
        chosen, saturated, passes_at = await self._reserve(r.deployments, r.tokens, r.now)
        if chosen is not None:
            return replace(counted, deployment=chosen, saturated=saturated)
        cost = to_micro(r.est_cost_usd)
        await self._adjust(r.tenant, r.now, requests=-1, tokens=-r.tokens, cost=-cost)
        return Counted(
            allowed=False,
            reason="deployments_saturated",
            deployment=None,
            saturated=saturated,
            rpm_used=counted.rpm_used - 1,
            tpm_used=counted.tpm_used - r.tokens,
            spent_day_micro=counted.spent_day_micro - cost,
            spent_month_micro=counted.spent_month_micro - cost,
            passes_at_bucket=passes_at,
        )

    async def _reserve(
        self, quotas: Sequence[DeploymentQuota], tokens: int, now: float
    ) -> tuple[str | None, tuple[str, ...], int]:
        args = [tokens, WINDOW_TTL_S, *window_args(now), len(quotas), *quota_args(quotas)]
        chosen, saturated, passes_at = await self._reserve_lua(deployment_keys(quotas), args)
        name = quotas[int(chosen) - 1].name if int(chosen) else None
        return name, tuple(quotas[int(i) - 1].name for i in saturated), int(passes_at)

    async def _adjust(self, tenant: str, now: float, *, requests: int, tokens: int, cost: int) -> None:
        args = [requests, tokens, cost, WINDOW_TTL_S, DAY_TTL_S, MONTH_TTL_S, *window_args(now)]
        await self._adjust_lua(tenant_keys(tenant, now), args)
