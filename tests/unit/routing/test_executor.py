"""The executor: plan order, fallback by error class, retries with backoff, context windows, circuits, quotas."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from gateway.error_classes import ErrorClass
from gateway.errors import AllTargetsFailedError, UpstreamError, UpstreamRejectedError
from gateway.policy.engine import decide
from gateway.policy.loader import load_policy_text
from gateway.policy.plan import HealthSnapshot, RequestFacts, RoutePlan
from gateway.policy.pricing import CurrencyRates
from gateway.policy.table import Deployment, PolicyTable
from gateway.routing.executor import AttemptObserver, Executor, Outcome, backoff_delay
from gateway.routing.health import HealthTracker
from gateway.state.base import DeploymentQuota
from gateway.state.memory import MemoryStateStore

POLICY = """
version: 1
providers:
  p: {type: openai, base_url: "http://127.0.0.1:9/v1", hosting: cloud, jurisdiction: sg, vendor: v}
deployments:
  small:  {provider: p, model: s, context_window: 8000}
  medium: {provider: p, model: m, context_window: 32000, rpm: 5}
  large:  {provider: p, model: l, context_window: 1000000}
  same:   {provider: p, model: x, context_window: 8000}
aliases:
  chain:  {targets: [small, medium, large], strategy: priority}
  ctx:    {targets: [small, same, medium, large], strategy: priority}
fallback:
  on: [rate_limit, timeout, server_error, connection_error, context_window, content_policy, auth, account,
       quota_exhausted]
  retries: {attempts: 2, backoff: 100ms, max_backoff: 1s}
  circuit_breaker: {failures: 3, window: 30s, cooldown: 30s}
"""


@pytest.fixture(scope="module")
def table() -> PolicyTable:
    return load_policy_text(POLICY, {}, fx=CurrencyRates(usd_per_cny=0.14, usd_per_eur=1.08))


class CountingStore(MemoryStateStore):
    """The in-process store, counting the deployment reservations the executor asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.reservations: list[str] = []

    async def reserve_deployment(self, quota: DeploymentQuota, tokens: int, now: float) -> bool:
        self.reservations.append(quota.name)
        return await super().reserve_deployment(quota, tokens, now)


@dataclass
class Recorder(AttemptObserver):
    attempts: list[tuple[str, str]] = field(default_factory=list)
    fallbacks: list[tuple[str, str, str]] = field(default_factory=list)

    def attempt(self, deployment: Deployment, outcome: str) -> None:
        self.attempts.append((deployment.name, outcome))

    def fallback(self, from_deployment: str, to_deployment: str, reason: str) -> None:
        self.fallbacks.append((from_deployment, to_deployment, reason))


@dataclass
class Scripted:
    """An upstream stand-in: per deployment, what each call does (raise a failure or answer with its name)."""

    failures: dict[str, list[UpstreamError | None]]  # None: answer; the last entry repeats
    calls: list[str] = field(default_factory=list)

    async def __call__(self, deployment: Deployment) -> str:
        self.calls.append(deployment.name)
        queue = self.failures.get(deployment.name, [])
        failure = (queue.pop(0) if len(queue) > 1 else queue[0]) if queue else None
        if failure is not None:
            raise failure
        return deployment.name


def err(cls: ErrorClass, retry_after: float | None = None, status: int | None = None) -> UpstreamError:
    return UpstreamError(f"simulated {cls.value}", error_class=cls, retry_after=retry_after, upstream_status=status)


@dataclass
class Harness:
    table: PolicyTable
    store: CountingStore = field(default_factory=CountingStore)
    observer: Recorder = field(default_factory=Recorder)
    sleeps: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.health = HealthTracker(self.store, on_circuit=lambda _d, _o: None)
        self.health.configure(tuple(self.table.deployments), self.table.fallback.circuit_breaker)

        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        self.executor = Executor(self.store, self.health, self.observer, sleep=sleep)

    def plan(self, alias: str, prompt_tokens: int = 10) -> RoutePlan:
        return decide(RequestFacts(alias=alias, tenant="t", prompt_tokens=prompt_tokens), self.table, HealthSnapshot())

    async def run(
        self, alias: str, upstream: Scripted, *, reserved: str | None = None, saturated: frozenset[str] = frozenset()
    ) -> tuple[str, Outcome]:
        outcome = Outcome()
        result = await self.executor.run(
            self.plan(alias), self.table.fallback, upstream, reserved=reserved, tokens=10, outcome=outcome,
            saturated=saturated,
        )
        return result, outcome


async def test_falls_back_in_plan_order_and_reports_why(table: PolicyTable) -> None:
    h = Harness(table)
    upstream = Scripted({"small": [err(ErrorClass.RATE_LIMIT), err(ErrorClass.RATE_LIMIT)]})
    result, outcome = await h.run("chain", upstream, reserved="medium")
    assert result == "medium"
    assert upstream.calls == ["small", "medium"]
    assert (outcome.attempts, outcome.fallback_reason) == (2, "rate_limit")
    assert h.observer.fallbacks == [("small", "medium", "rate_limit")]
    assert h.observer.attempts == [("small", "rate_limit"), ("medium", "success")]


async def test_bad_request_goes_back_to_the_client_without_fallback(table: PolicyTable) -> None:
    h = Harness(table)
    upstream = Scripted({"small": [err(ErrorClass.BAD_REQUEST, status=400)]})
    with pytest.raises(UpstreamRejectedError) as info:
        await h.run("chain", upstream)
    assert upstream.calls == ["small"]
    assert info.value.status == 400 and "simulated bad_request" in info.value.message


async def test_auth_is_not_retried_on_the_same_deployment_but_falls_back(table: PolicyTable) -> None:
    h = Harness(table)
    upstream = Scripted({"small": [err(ErrorClass.AUTH, status=401)], "medium": [err(ErrorClass.SERVER_ERROR)] * 2,
                         "large": [err(ErrorClass.SERVER_ERROR)] * 2})
    with pytest.raises(AllTargetsFailedError):
        await h.run("chain", upstream, reserved="medium")
    assert upstream.calls.count("small") == 1
    assert upstream.calls.count("medium") == 3 and upstream.calls.count("large") == 3  # 1 + 2 retry rounds


async def test_context_window_falls_back_only_to_larger_windows(table: PolicyTable) -> None:
    h = Harness(table)
    upstream = Scripted({"small": [err(ErrorClass.CONTEXT_WINDOW, status=400)],
                         "medium": [err(ErrorClass.CONTEXT_WINDOW, status=400)]})
    result, outcome = await h.run("ctx", upstream, reserved="medium")
    assert result == "large"
    assert upstream.calls == ["small", "medium", "large"]  # `same` has the same window: skipped
    skipped = [f for f in outcome.failures if f.deployment == "same"]
    assert skipped and "not larger" in skipped[0].message


async def test_retries_back_off_and_honour_retry_after(table: PolicyTable) -> None:
    h = Harness(table)
    upstream = Scripted({"small": [err(ErrorClass.RATE_LIMIT, retry_after=0.7)] * 2,
                         "medium": [err(ErrorClass.TIMEOUT)] * 2, "large": [err(ErrorClass.TIMEOUT)] * 2})
    with pytest.raises(AllTargetsFailedError):
        await h.run("chain", upstream, reserved="medium")
    assert upstream.calls == ["small", "medium", "large"] * 3  # the first round, then two retry rounds
    assert len(h.sleeps) == 2  # none after the last round
    assert all(0.7 <= s <= 1.0 for s in h.sleeps)  # never shorter than Retry-After, never past max_backoff


async def test_a_retry_round_succeeds_where_the_first_failed(table: PolicyTable) -> None:
    h = Harness(table)
    upstream = Scripted({"small": [err(ErrorClass.SERVER_ERROR), None],  # fails once, answers when retried
                         "medium": [err(ErrorClass.SERVER_ERROR)], "large": [err(ErrorClass.CONNECTION_ERROR)]})
    result, outcome = await h.run("chain", upstream, reserved="medium")
    assert result == "small"
    assert upstream.calls == ["small", "medium", "large", "small"]
    assert outcome.attempts == 4 and len(h.sleeps) == 1 and 0.05 <= h.sleeps[0] <= 0.1


async def test_retry_after_longer_than_max_backoff_moves_on_without_retrying(table: PolicyTable) -> None:
    h = Harness(table)
    upstream = Scripted({"small": [err(ErrorClass.RATE_LIMIT, retry_after=60.0)] * 2})
    result, _ = await h.run("chain", upstream, reserved="medium")
    assert result == "medium" and upstream.calls == ["small", "medium"]
    h2 = Harness(table)
    upstream = Scripted({name: [err(ErrorClass.RATE_LIMIT, retry_after=60.0)] * 2 for name in ("small", "large")}
                        | {"medium": [err(ErrorClass.RATE_LIMIT, retry_after=60.0)] * 2})
    with pytest.raises(AllTargetsFailedError):
        await h2.run("chain", upstream, reserved="medium")
    assert upstream.calls == ["small", "medium", "large"] and h2.sleeps == []


@pytest.mark.parametrize(
    ("classes", "status", "code"),
    [
        ([ErrorClass.TIMEOUT] * 3, 504, "upstream_timeout"),
        ([ErrorClass.RATE_LIMIT, ErrorClass.CONNECTION_ERROR, ErrorClass.RATE_LIMIT], 503, "upstream_unavailable"),
        ([ErrorClass.SERVER_ERROR, ErrorClass.TIMEOUT, ErrorClass.RATE_LIMIT], 502, "upstream_error"),
    ],
)
async def test_when_all_fail_the_status_fits_and_each_target_is_named(
    table: PolicyTable, classes: list[ErrorClass], status: int, code: str
) -> None:
    h = Harness(table)
    names = ("small", "medium", "large")
    upstream = Scripted({name: [err(cls)] * 2 for name, cls in zip(names, classes, strict=True)})
    with pytest.raises(AllTargetsFailedError) as info:
        await h.run("chain", upstream, reserved="medium")
    assert (info.value.status, info.value.code) == (status, code)
    for name, cls in zip(names, classes, strict=True):
        assert f"{name}: {cls.value}" in info.value.message


@pytest.mark.parametrize(
    ("classes", "status", "code"),
    [
        ([ErrorClass.CONTENT_POLICY] * 3, 400, "content_policy_violation"),
        ([ErrorClass.CONTEXT_WINDOW, ErrorClass.CONTENT_POLICY, ErrorClass.CONTENT_POLICY], 400,
         "content_policy_violation"),  # a shorter prompt would still be refused
        ([ErrorClass.AUTH, ErrorClass.NOT_FOUND, ErrorClass.ACCOUNT], 502, "upstream_error"),
        ([ErrorClass.QUOTA_EXHAUSTED] * 3, 502, "upstream_error"),  # a used-up quota is not a rate limit
        ([ErrorClass.CONTEXT_WINDOW, ErrorClass.SERVER_ERROR, ErrorClass.SERVER_ERROR], 502, "upstream_error"),
    ],
)
async def test_the_status_follows_what_the_client_can_act_on(
    table: PolicyTable, classes: list[ErrorClass], status: int, code: str
) -> None:
    h = Harness(table)
    upstream = Scripted({name: [err(cls)] * 3 for name, cls in zip(("small", "medium", "large"), classes, strict=True)})
    with pytest.raises(AllTargetsFailedError) as info:
        await h.run("chain", upstream, reserved="medium")
    assert (info.value.status, info.value.code) == (status, code)
    assert info.value.error_type == ("invalid_request_error" if status == 400 else "api_error")
    assert info.value.headers() == {}


async def test_a_prompt_too_long_for_every_target_is_context_length_exceeded(table: PolicyTable) -> None:
    h = Harness(table)
    upstream = Scripted({name: [err(ErrorClass.CONTEXT_WINDOW, status=400)] for name in ("small", "medium", "large")})
    with pytest.raises(AllTargetsFailedError) as info:
        await h.run("ctx", upstream, reserved="medium")
    assert upstream.calls == ["small", "medium", "large"]  # `same` was skipped as no larger: it counts as too small
    assert (info.value.status, info.value.error_type, info.value.code) == (
        400, "invalid_request_error", "context_length_exceeded")
    assert info.value.context_window == 1_000_000  # the largest window that refused it
    assert info.value.message.startswith("the prompt is too long for every target: small: context_window")


async def test_context_window_not_in_fallback_on_keeps_its_code(table: PolicyTable) -> None:
    h = Harness(table)
    fallback = replace(table.fallback, on=frozenset({ErrorClass.SERVER_ERROR}))
    for cls, code in ((ErrorClass.CONTEXT_WINDOW, "context_length_exceeded"),
                      (ErrorClass.CONTENT_POLICY, "content_policy_violation"),
                      (ErrorClass.BAD_REQUEST, "upstream_rejected_request")):
        with pytest.raises(UpstreamRejectedError) as info:
            await h.executor.run(h.plan("chain"), fallback, Scripted({"small": [err(cls, status=400)]}),
                                 reserved=None, tokens=10, outcome=Outcome())
        assert (info.value.status, info.value.code) == (400, code)
        assert info.value.context_window == (8000 if cls is ErrorClass.CONTEXT_WINDOW else None)


async def test_every_target_rate_limited_is_a_429_with_the_shortest_wait(table: PolicyTable) -> None:
    h = Harness(table)
    upstream = Scripted({"small": [err(ErrorClass.RATE_LIMIT, retry_after=30.0, status=429)],
                         "medium": [err(ErrorClass.RATE_LIMIT, retry_after=12.2, status=429)],
                         "large": [err(ErrorClass.RATE_LIMIT, status=429)]})  # said nothing of when
    with pytest.raises(AllTargetsFailedError) as info:
        await h.run("chain", upstream, reserved="medium")
    assert (info.value.status, info.value.error_type, info.value.code) == (429, "rate_limit_error",
                                                                            "rate_limit_exceeded")
    assert info.value.headers() == {"retry-after": "13"}
    assert "try again in 13s" in info.value.message


async def test_an_unknown_wait_is_one_second(table: PolicyTable) -> None:
    h = Harness(table)
    upstream = Scripted({name: [err(ErrorClass.RATE_LIMIT, status=429)] for name in ("small", "medium", "large")})
    with pytest.raises(AllTargetsFailedError) as info:
        await h.run("chain", upstream, reserved="medium")
    assert info.value.status == 429 and info.value.headers() == {"retry-after": "1"}


async def test_own_limits_and_open_circuits_count_as_waits(table: PolicyTable) -> None:
    h = Harness(table)
    for _ in range(3):  # failures: 3 opens its circuit for the 30 s cooldown
        await h.health.failed("large", ErrorClass.SERVER_ERROR)
    upstream = Scripted({"small": [err(ErrorClass.RATE_LIMIT, retry_after=45.0, status=429)]})
    with pytest.raises(AllTargetsFailedError) as info:
        await h.run("chain", upstream, saturated=frozenset({"medium"}))
    assert upstream.calls == ["small"]
    assert info.value.status == 429
    wait = int(info.value.headers()["retry-after"])
    assert 1 <= wait <= 30  # the circuit (30 s) or medium's minute window, whichever frees first
    skipped = {f.deployment: f.retry_after for f in info.value.failures if f.skipped}
    assert skipped.keys() == {"medium", "large"}
    assert all(w is not None and 0 <= w <= 61 for w in skipped.values())  # a minute window plus its current second


async def test_a_context_overflow_beside_rate_limits_is_a_429(table: PolicyTable) -> None:
    h = Harness(table)
    upstream = Scripted({"small": [err(ErrorClass.CONTEXT_WINDOW, status=400)],
                         "medium": [err(ErrorClass.RATE_LIMIT, retry_after=5.0, status=429)],
                         "large": [err(ErrorClass.RATE_LIMIT, retry_after=60.0, status=429)]})
    with pytest.raises(AllTargetsFailedError) as info:
        await h.run("chain", upstream, reserved="medium")
    assert info.value.status == 429 and info.value.headers() == {"retry-after": "5"}  # a larger window frees soon


async def test_saturated_deployments_are_skipped_without_asking_the_store(table: PolicyTable) -> None:
    h = Harness(table)
    result, outcome = await h.run("chain", Scripted({}), saturated=frozenset({"small", "medium"}))
    assert result == "large"
    assert h.store.reservations == []
    assert [f.deployment for f in outcome.failures] == ["small", "medium"]
    assert all(f.error_class is ErrorClass.RATE_LIMIT for f in outcome.failures)


async def test_a_limited_deployment_that_admission_did_not_reserve_is_reserved_here(table: PolicyTable) -> None:
    h = Harness(table)
    upstream = Scripted({"small": [err(ErrorClass.SERVER_ERROR)] * 2})
    result, _ = await h.run("chain", upstream)
    assert result == "medium" and h.store.reservations == ["medium"]


async def test_open_circuit_is_skipped(table: PolicyTable) -> None:
    h = Harness(table)
    for _ in range(3):  # failures: 3 opens it
        await h.health.failed("small", ErrorClass.SERVER_ERROR)
    upstream = Scripted({})
    result, outcome = await h.run("chain", upstream, reserved="medium")
    assert result == "medium" and upstream.calls == ["medium"]
    assert "circuit breaker is open" in outcome.failures[0].message
    assert "small" in h.health.snapshot().open_circuits


async def test_rate_limits_and_bad_requests_do_not_open_circuits(table: PolicyTable) -> None:
    h = Harness(table)
    for cls in (ErrorClass.RATE_LIMIT, ErrorClass.RATE_LIMIT, ErrorClass.BAD_REQUEST, ErrorClass.AUTH):
        await h.health.failed("small", cls)
    assert h.health.snapshot().open_circuits == frozenset()


@pytest.mark.parametrize("cls", [ErrorClass.ACCOUNT, ErrorClass.QUOTA_EXHAUSTED])
async def test_an_account_or_spent_quota_fails_over_at_once_and_opens_the_circuit(
    table: PolicyTable, cls: ErrorClass
) -> None:
    h = Harness(table)
    upstream = Scripted({"small": [err(cls, status=400)]})
    result, outcome = await h.run("chain", upstream, reserved="medium")
    assert result == "medium" and upstream.calls == ["small", "medium"]  # no retry round, no backoff
    assert h.sleeps == [] and outcome.fallback_reason == cls.value
    assert h.observer.attempts[0] == ("small", cls.value)
    assert "small" in h.health.snapshot().open_circuits  # one failure, not `failures: 3`
    again = Scripted({})
    result, outcome = await h.run("chain", again, reserved="medium")
    assert result == "medium" and again.calls == ["medium"]
    assert "circuit breaker is open" in outcome.failures[0].message


@pytest.mark.parametrize("round_no", [0, 1, 2, 5])
def test_backoff_is_exponential_with_jitter_and_capped(round_no: int) -> None:
    base, cap = 0.1, 1.0
    exp = min(cap, base * 2**round_no)
    delays = [backoff_delay(round_no, base, cap, 0.0) for _ in range(200)]
    assert all(exp / 2 <= d <= exp for d in delays)
    assert len(set(delays)) > 1  # jittered
    assert all(backoff_delay(round_no, base, cap, 0.9) >= 0.9 for _ in range(20))
    assert backoff_delay(round_no, base, cap, 5.0) == cap
