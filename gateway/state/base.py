"""The StateStore protocol and the records it keeps; implementations: memory (default) and Redis."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from gateway.errors import StateUnavailableError

__all__ = ["StateUnavailableError"]  # defined in the one error tree, raised by the stores


@dataclass(slots=True)  # one per request: a frozen dataclass costs several times as much to build
class DeploymentQuota:
    """A deployment's own limits, protecting the upstream's quota."""

    name: str
    rpm: int | None = None
    tpm: int | None = None


@dataclass(slots=True)  # one per request: a frozen dataclass costs several times as much to build
class AdmissionRequest:
    """Everything admission checks for one request, in one store round trip."""

    tenant: str
    tokens: int  # estimated prompt + output tokens, counted against TPM now and settled later
    est_cost_usd: float  # reserved against budgets now and settled later
    now: float  # unix seconds
    tenant_rpm: int | None = None
    tenant_tpm: int | None = None
    budget_day_usd: float | None = None
    budget_month_usd: float | None = None
    deployments: tuple[DeploymentQuota, ...] = ()  # in plan order


@dataclass(slots=True)  # one per request: a frozen dataclass costs several times as much to build
class AdmissionResult:
    """The verdict: allowed (with the first deployment that had capacity, already counted) or why not."""

    allowed: bool
    reason: str | None = None  # tenant_rpm | tenant_tpm | budget_day | budget_month | deployments_saturated
    retry_after_s: float = 0.0
    deployment: str | None = None
    saturated: tuple[str, ...] = ()
    rpm_limit: int | None = None
    rpm_remaining: int | None = None
    tpm_limit: int | None = None
    tpm_remaining: int | None = None
    reset_s: float = 0.0
    spent_day_usd: float = 0.0
    spent_month_usd: float = 0.0
    degraded: bool = False  # the store was unreachable and the failure mode admitted the request


class CircuitPhase(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class CircuitState:
    phase: CircuitPhase = CircuitPhase.CLOSED
    open_until: float = 0.0  # unix seconds; after this the circuit is half-open
    failures: int = 0


class RoutingFact(Protocol):
    """What routing knew of one request (never its text), kept with its usage so that a drill can replay it.

    The engine's RequestFacts is one: accounting keeps a reference to it, building nothing per request.
    """

    @property
    def endpoint(self) -> str: ...
    @property
    def stream(self) -> bool: ...
    @property
    def data_class(self) -> str | None: ...
    @property
    def tags(self) -> frozenset[str]: ...
    @property
    def prompt_tokens(self) -> int: ...  # routing's estimate
    @property
    def max_output_tokens(self) -> int | None: ...
    @property
    def needs(self) -> frozenset[str]: ...


@dataclass(frozen=True)
class RoutingFactRow:
    """Identical routing facts of one day, alias, tenant and serving deployment, with their count and sums.

    Prompt and output sizes are rounded up to at most 1/8 above the estimate, so that near-identical requests share a
    row; a replay therefore never finds room in a context window that the real request might not have had.
    """

    day: str
    alias: str
    tenant: str
    deployment: str
    endpoint: str
    stream: bool
    data_class: str | None
    tags: tuple[str, ...]
    prompt_tokens: int
    max_output_tokens: int | None
    needs: tuple[str, ...]
    params: tuple[str, ...]
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s_sum: float = 0.0


@dataclass(frozen=True)
class RoutingFacts:
    """The routing facts of some days, and how many requests were not kept because a day's cap was reached."""

    rows: tuple[RoutingFactRow, ...] = ()
    dropped: int = 0


@dataclass(slots=True)  # one per request: a frozen dataclass costs twice as much to build
class UsageRecord:
    """One finished request, as accounting reports it."""

    ts: float
    tenant: str
    alias: str
    deployment: str
    provider: str
    vendor: str
    hosting: str
    jurisdiction: str
    status: int
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    tokens_estimated: bool = False
    cost_usd: float = 0.0
    latency_s: float = 0.0
    fallback: bool = False
    attempts: int = 1
    fact: RoutingFact | None = None  # None when the request's routing facts are unknown
    params: frozenset[str] = frozenset()  # provider-specific body parameters the request carried
    cache_write_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    audio_ms: int = 0  # input audio transcribed, in milliseconds
    characters: int = 0  # input text spoken
    images: int = 0  # images an image endpoint returned
    price_entry: str = ""  # the price book entry the cost came from (`policy[1] from 2027-01-01`, `litellm:...`)


@dataclass(frozen=True)
class UsageRow:
    """Usage summed over one day and one (tenant, alias, deployment, provider, vendor, hosting, jurisdiction)."""

    day: str  # YYYY-MM-DD, UTC
    tenant: str
    alias: str
    deployment: str
    provider: str
    vendor: str
    hosting: str
    jurisdiction: str
    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    latency_s_sum: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)
    cache_write_tokens: int = 0
    audio_input_tokens: int = 0
    audio_output_tokens: int = 0
    audio_seconds: float = 0.0
    characters: int = 0
    images: int = 0
    cost_usd_by_price: dict[str, float] = field(default_factory=dict)  # the part of cost_usd from each price entry


class StateStore(Protocol):
    """Where limits, budgets, circuit breakers and usage live; one instance per process."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the store is reachable (always for the in-process store)."""
        ...

    async def admit(self, request: AdmissionRequest) -> AdmissionResult:
        """Check and count tenant RPM/TPM, budgets, and reserve the first deployment with capacity."""
        ...

    async def reserve_deployment(self, quota: DeploymentQuota, tokens: int, now: float) -> bool:
        """Count one more request against a fallback deployment's own limits; False when it is saturated."""
        ...

    async def settle(self, tenant: str, *, token_delta: int, cost_delta_usd: float, now: float) -> None:
        """Correct the reservation with the actual tokens and cost once the response is known."""
        ...

    async def record_outcome(
        self, deployment: str, ok: bool, *, failures: int, window_s: float, cooldown_s: float, now: float
    ) -> CircuitState:
        """Feed one attempt's outcome into the deployment's circuit breaker."""
        ...

    async def circuit_states(self, deployments: Sequence[str], now: float) -> dict[str, CircuitState]: ...

    async def claim_probe(self, deployment: str, now: float, cooldown_s: float) -> bool:
        """In half-open, let exactly one request through as the probe."""
        ...

    async def record_usage(self, records: Sequence[UsageRecord]) -> None: ...

    async def usage(self, since_day: str, until_day: str) -> list[UsageRow]: ...

    async def routing_facts(self, since_day: str, until_day: str) -> RoutingFacts:
        """The routing facts recorded with usage (at most a capped number of distinct facts per day)."""
        ...

    async def spent(self, tenant: str, now: float) -> tuple[float, float]:
        """USD spent (day, month) by a tenant."""
        ...


# --- Periods and money, shared by every implementation so that they agree to the second and the micro-dollar ---

# Rate limits count over a sliding window of one minute, kept as one-second buckets: a request is admitted when the
# buckets of the last WINDOW_S seconds plus the current, partial one leave room for it. In any 60-second span a limit
# of N per minute therefore admits at most N; the price of whole buckets is that a request may wait up to one second
# longer than an exact sliding log would make it (never less).
WINDOW_S = 60
BUCKET_S = 1
WINDOW_BUCKETS = WINDOW_S // BUCKET_S + 1  # the buckets counted at any moment, the current one included
MICRO = 1_000_000  # budgets are kept in integer micro-dollars: sums never drift


def bucket_index(now: float) -> int:
    """The one-second bucket `now` falls in."""
    return int(now // BUCKET_S)


def seconds_until_bucket(bucket: int, now: float) -> float:
    """How long until the bucket `bucket` starts."""
    return max(0.0, bucket * BUCKET_S - now)


def seconds_to_next_window(now: float) -> float:
    """How long until everything counted at `now` has left the sliding window (the limit is whole again)."""
    return seconds_until_bucket(bucket_index(now) + WINDOW_BUCKETS, now)


def utc_day(now: float) -> str:
    """YYYY-MM-DD in UTC: the key of daily budgets and usage rows."""
    return _day_key(int(now // _DAY_S))


def utc_month(now: float) -> str:
    """YYYY-MM in UTC: the key of monthly budgets."""
    return _day_key(int(now // _DAY_S))[:7]


_DAY_S = 86_400  # POSIX time has no leap seconds: every UTC day is exactly this long


@functools.lru_cache(maxsize=8)
def _day_key(day: int) -> str:
    # Every request asks for today's keys: format the date once a day, not once a request.
    return datetime.fromtimestamp(day * _DAY_S, UTC).strftime("%Y-%m-%d")


def seconds_to_next_day(now: float) -> float:
    start = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (start + timedelta(days=1)).timestamp() - now


def seconds_to_next_month(now: float) -> float:
    start = datetime.fromtimestamp(now, UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if start.month == 12:
        following = start.replace(year=start.year + 1, month=1)
    else:
        following = start.replace(month=start.month + 1)
    return following.timestamp() - now


def to_micro(usd: float) -> int:
    return round(usd * MICRO)


def from_micro(micro: int) -> float:
    return micro / MICRO


@dataclass(slots=True)  # one per request: a frozen dataclass costs several times as much to build
class Counted:
    """What a store counted (or found) during one admission; turned into an AdmissionResult by `admission_result`."""

    allowed: bool
    reason: str | None
    deployment: str | None
    saturated: tuple[str, ...]
    rpm_used: int  # the tenant's requests in the sliding window, this one included when allowed
    tpm_used: int
    spent_day_micro: int
    spent_month_micro: int
    passes_at_bucket: int = 0  # refused by a rate limit: the bucket from which the same request would pass


def admission_result(request: AdmissionRequest, counted: Counted) -> AdmissionResult:
    """The verdict with everything `x-ratelimit-*` and `Retry-After` headers need; the same for every store."""
    reset = seconds_to_next_window(request.now)
    retry_after = 0.0
    if counted.reason == "budget_day":
        retry_after = seconds_to_next_day(request.now)
    elif counted.reason == "budget_month":
        retry_after = seconds_to_next_month(request.now)
    elif counted.reason is not None:
        retry_after = seconds_until_bucket(counted.passes_at_bucket, request.now) if counted.passes_at_bucket else reset
    rpm, tpm = request.tenant_rpm, request.tenant_tpm
    return AdmissionResult(
        allowed=counted.allowed,
        reason=counted.reason,
        retry_after_s=retry_after,
        deployment=counted.deployment,
        saturated=counted.saturated,
        rpm_limit=rpm,
        rpm_remaining=None if rpm is None else max(0, rpm - counted.rpm_used),
        tpm_limit=tpm,
        tpm_remaining=None if tpm is None else max(0, tpm - counted.tpm_used),
        reset_s=reset,
        spent_day_usd=from_micro(counted.spent_day_micro),
        spent_month_usd=from_micro(counted.spent_month_micro),
    )
