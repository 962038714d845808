"""Rate limits, budgets and deployment quotas behave the same in every StateStore (memory, Redis, Redis split)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from gateway.state.base import AdmissionRequest, DeploymentQuota, StateStore

# 2025-03-31 23:59:00 UTC: one minute before a new day and a new month; window boundaries fall on whole minutes.
T0 = datetime(2025, 3, 31, 23, 59, tzinfo=UTC).timestamp()
DAY = 86_400.0


def req(now: float = T0 + 5, **kw: object) -> AdmissionRequest:
    fields: dict[str, object] = {"tenant": "team-a", "tokens": 100, "est_cost_usd": 0.0, "now": now}
    fields.update(kw)
    return AdmissionRequest(**fields)  # type: ignore[arg-type]


async def test_rpm_is_exact_under_200_concurrent_admits(store: StateStore) -> None:
    results = await asyncio.gather(*(store.admit(req(tenant_rpm=50)) for _ in range(200)))

    allowed = [r for r in results if r.allowed]
    assert len(allowed) == 50
    rejected = [r for r in results if not r.allowed]
    assert {r.reason for r in rejected} == {"tenant_rpm"}
    assert all(r.retry_after_s == 61.0 and r.rpm_remaining == 0 for r in rejected)  # the 5th second leaves at +66
    assert sorted(r.rpm_remaining or 0 for r in allowed) == list(range(50))


async def test_the_window_slides_past_a_request(store: StateStore) -> None:
    assert (await store.admit(req(tenant_rpm=1))).allowed
    assert not (await store.admit(req(now=T0 + 60, tenant_rpm=1))).allowed
    assert not (await store.admit(req(now=T0 + 65.9, tenant_rpm=1))).allowed
    fresh = await store.admit(req(now=T0 + 66, tenant_rpm=1))
    assert fresh.allowed
    assert (fresh.rpm_limit, fresh.rpm_remaining, fresh.reset_s) == (1, 0, 61.0)


async def test_tpm_counts_estimated_tokens_and_settle_corrects_them(store: StateStore) -> None:
    first = await store.admit(req(tokens=300, tenant_tpm=1000))
    assert (first.tpm_limit, first.tpm_remaining) == (1000, 700)
    assert (await store.admit(req(tokens=300, tenant_tpm=1000))).allowed
    assert (await store.admit(req(tokens=300, tenant_tpm=1000))).allowed

    over = await store.admit(req(tokens=300, tenant_tpm=1000))
    assert (over.allowed, over.reason, over.tpm_remaining) == (False, "tenant_tpm", 100)

    # the three responses used 100 tokens each instead of 300
    for _ in range(3):
        await store.settle("team-a", token_delta=-200, cost_delta_usd=0.0, now=T0 + 20)
    after = await store.admit(req(now=T0 + 30, tokens=300, tenant_tpm=1000))
    assert (after.allowed, after.tpm_remaining) == (True, 400)


async def test_rejected_requests_count_nothing(store: StateStore) -> None:
    for _ in range(3):
        refused = await store.admit(req(tokens=5000, est_cost_usd=2.0, tenant_tpm=1000, budget_day_usd=1.0))
        assert refused.reason == "tenant_tpm"
    ok = await store.admit(req(tokens=1000, est_cost_usd=1.0, tenant_rpm=1, tenant_tpm=1000, budget_day_usd=1.0))
    assert ok.allowed
    assert await store.spent("team-a", T0 + 10) == (1.0, 1.0)


async def test_day_budget_rejects_until_midnight_and_sums_without_float_drift(store: StateStore) -> None:
    results = [await store.admit(req(est_cost_usd=0.1, budget_day_usd=1.0)) for _ in range(11)]

    assert [r.allowed for r in results] == [True] * 10 + [False]
    last = results[-1]
    assert (last.reason, last.retry_after_s, last.spent_day_usd) == ("budget_day", 55.0, 1.0)
    assert (await store.admit(req(now=T0 + 60, est_cost_usd=0.1, budget_day_usd=1.0))).allowed  # a new UTC day


async def test_settle_reconciles_the_reserved_cost(store: StateStore) -> None:
    assert (await store.admit(req(est_cost_usd=0.6, budget_day_usd=1.0))).allowed
    assert not (await store.admit(req(est_cost_usd=0.6, budget_day_usd=1.0))).allowed

    await store.settle("team-a", token_delta=0, cost_delta_usd=-0.45, now=T0 + 10)  # it cost 0.15
    assert await store.spent("team-a", T0 + 10) == (0.15, 0.15)
    ok = await store.admit(req(est_cost_usd=0.6, budget_day_usd=1.0))
    assert (ok.allowed, ok.spent_day_usd) == (True, 0.75)

    await store.settle("team-a", token_delta=0, cost_delta_usd=0.5, now=T0 + 10)  # it cost more than estimated
    refused = await store.admit(req(est_cost_usd=0.1, budget_day_usd=1.0))
    assert (refused.reason, refused.spent_day_usd) == ("budget_day", 1.25)


async def test_month_budget_spans_days_and_resets_with_the_month(store: StateStore) -> None:
    early = T0 - 10 * DAY
    assert (await store.admit(req(now=early, est_cost_usd=1.5, budget_month_usd=2.0))).allowed

    refused = await store.admit(req(now=T0 + 5, est_cost_usd=1.0, budget_day_usd=5.0, budget_month_usd=2.0))
    assert (refused.allowed, refused.reason, refused.retry_after_s) == (False, "budget_month", 55.0)
    assert (refused.spent_day_usd, refused.spent_month_usd) == (0.0, 1.5)

    april = await store.admit(req(now=T0 + 65, est_cost_usd=1.0, budget_month_usd=2.0))
    assert (april.allowed, april.spent_month_usd) == (True, 1.0)


async def test_the_first_deployment_with_capacity_is_reserved(store: StateStore) -> None:
    plan = (DeploymentQuota("a", rpm=1), DeploymentQuota("b", rpm=2), DeploymentQuota("c"))

    picks = [await store.admit(req(deployments=plan)) for _ in range(4)]

    assert [(p.deployment, p.saturated) for p in picks] == [
        ("a", ()),
        ("b", ("a",)),
        ("b", ("a",)),
        ("c", ("a", "b")),
    ]


async def test_all_deployments_saturated_rejects_without_counting_the_tenant(store: StateStore) -> None:
    plan = (DeploymentQuota("a", rpm=1), DeploymentQuota("b", tpm=150))
    assert (await store.admit(req(tenant_rpm=3, budget_day_usd=1.0, est_cost_usd=0.5, deployments=plan))).allowed
    assert (await store.admit(req(tenant_rpm=3, budget_day_usd=1.0, est_cost_usd=0.5, deployments=plan))).allowed

    full = await store.admit(req(tenant_rpm=3, budget_day_usd=1.0, est_cost_usd=0.0, deployments=plan))
    assert (full.allowed, full.reason, full.saturated, full.retry_after_s) == (
        False,
        "deployments_saturated",
        ("a", "b"),
        61.0,
    )
    assert full.rpm_remaining == 1

    elsewhere = await store.admit(req(tenant_rpm=3, deployments=(DeploymentQuota("c", rpm=5),)))
    assert (elsewhere.allowed, elsewhere.deployment, elsewhere.rpm_remaining) == (True, "c", 0)


async def test_deployment_quotas_are_exact_under_concurrency(store: StateStore) -> None:
    plan = (DeploymentQuota("a", rpm=30), DeploymentQuota("b", rpm=20))

    results = await asyncio.gather(*(store.admit(req(deployments=plan)) for _ in range(100)))

    chosen = [r.deployment for r in results if r.allowed]
    assert (chosen.count("a"), chosen.count("b")) == (30, 20)
    assert {r.reason for r in results if not r.allowed} == {"deployments_saturated"}


async def test_reserve_deployment_for_fallbacks(store: StateStore) -> None:
    quota = DeploymentQuota("b", rpm=2, tpm=1000)
    assert await store.reserve_deployment(quota, 400, T0 + 1)
    assert await store.reserve_deployment(quota, 400, T0 + 2)
    assert not await store.reserve_deployment(quota, 100, T0 + 3)
    assert not await store.reserve_deployment(quota, 100, T0 + 61.5)  # both are still in the window
    assert await store.reserve_deployment(quota, 100, T0 + 62)  # the first one has left it
    assert not await store.reserve_deployment(DeploymentQuota("c", tpm=10), 11, T0)
    assert await store.reserve_deployment(DeploymentQuota("free"), 10**9, T0)

    # admission sees what fallbacks reserved
    after = await store.admit(req(now=T0 + 62.5, tokens=950, deployments=(quota, DeploymentQuota("c"))))
    assert (after.deployment, after.saturated) == ("c", ("b",))


async def test_no_burst_across_a_minute_boundary(store: StateStore) -> None:
    """A full minute's quota sent just before a whole minute leaves nothing for the seconds just after it."""
    late = [await store.admit(req(now=T0 + 58.5, tenant_rpm=10)) for _ in range(10)]
    assert all(r.allowed for r in late)

    early = [await store.admit(req(now=T0 + 61, tenant_rpm=10)) for _ in range(10)]

    assert not any(r.allowed for r in early)
    assert {(r.reason, r.retry_after_s) for r in early} == {("tenant_rpm", 58.0)}  # second 58 leaves at +119


async def test_any_60_second_span_holds_at_most_the_limit(store: StateStore) -> None:
    """Requests every 1.5 s for three minutes: every 60-second span of admitted ones holds at most the limit."""
    admitted: list[float] = []
    for n in range(120):
        now = T0 + 30 + 1.5 * n  # starting mid-minute, as a fixed window's worst case does
        if (await store.admit(req(now=now, tenant_rpm=12))).allowed:
            admitted.append(now)

    busiest = max(sum(1 for t in admitted if start <= t < start + 60) for start in admitted)
    assert busiest == 12
    assert len(admitted) >= 3 * 12 - 1  # and the limit is used, not starved: about one a minute-span's worth


async def test_retry_after_says_when_the_next_request_passes(store: StateStore) -> None:
    assert (await store.admit(req(now=T0 + 10.2, tenant_rpm=2))).allowed
    assert (await store.admit(req(now=T0 + 30.7, tenant_rpm=2))).allowed
    refused = await store.admit(req(now=T0 + 40, tenant_rpm=2))
    assert (refused.reason, refused.retry_after_s) == ("tenant_rpm", 31.0)  # the 10th second leaves at +71

    assert not (await store.admit(req(now=T0 + 70.9, tenant_rpm=2))).allowed
    assert (await store.admit(req(now=T0 + 71, tenant_rpm=2))).allowed


async def test_tpm_slides_and_settled_tokens_free_room(store: StateStore) -> None:
    assert (await store.admit(req(now=T0 + 50, tokens=600, tenant_tpm=1000))).allowed
    refused = await store.admit(req(now=T0 + 65, tokens=600, tenant_tpm=1000))
    assert (refused.reason, refused.tpm_remaining, refused.retry_after_s) == ("tenant_tpm", 400, 46.0)

    await store.settle("team-a", token_delta=-400, cost_delta_usd=0.0, now=T0 + 66)  # it used 200 tokens
    after = await store.admit(req(now=T0 + 67, tokens=600, tenant_tpm=1000))
    assert (after.allowed, after.tpm_remaining) == (True, 200)


async def test_saturated_deployments_say_when_the_first_frees(store: StateStore) -> None:
    plan = (DeploymentQuota("a", rpm=1), DeploymentQuota("b", rpm=1))
    assert (await store.admit(req(now=T0 + 20, deployments=plan))).deployment == "a"
    assert (await store.admit(req(now=T0 + 5, deployments=plan))).deployment == "b"

    full = await store.admit(req(now=T0 + 30, deployments=plan))
    assert (full.reason, full.retry_after_s) == ("deployments_saturated", 36.0)  # b's 5th second leaves at +66
    assert (await store.admit(req(now=T0 + 66, deployments=plan))).deployment == "b"


async def test_a_budget_overshoots_only_by_what_admitted_requests_cost_beyond_their_reservations(
    store: StateStore,
) -> None:
    # 20 requests at once, each reserving its estimate of $0.10 against a $1.00 budget: ten fit, ten are refused.
    results = await asyncio.gather(*(store.admit(req(est_cost_usd=0.1, budget_day_usd=1.0)) for _ in range(20)))
    admitted = [r for r in results if r.allowed]
    assert len(admitted) == 10 and {r.reason for r in results if not r.allowed} == {"budget_day"}

    # Each answer cost $0.13 (a longer reply than estimated): the budget is overshot by exactly the excess of the
    # requests that were in flight, never by a request admitted past it.
    for _ in admitted:
        await store.settle("team-a", token_delta=0, cost_delta_usd=0.03, now=T0 + 10)
    assert await store.spent("team-a", T0 + 10) == (1.3, 1.3)
    refused = await store.admit(req(now=T0 + 11, est_cost_usd=0.0, budget_day_usd=1.0))
    assert (refused.allowed, refused.reason, refused.spent_day_usd) == (False, "budget_day", 1.3)


async def test_a_replica_whose_clock_runs_behind_is_still_counted(store: StateStore) -> None:
    assert (await store.admit(req(now=T0 + 100, tenant_rpm=2))).allowed
    assert (await store.admit(req(now=T0 + 30, tenant_rpm=2))).allowed  # a replica 70 s behind
    assert not (await store.admit(req(now=T0 + 100.5, tenant_rpm=2))).allowed  # both count
    assert (await store.admit(req(now=T0 + 101, tenant_rpm=2))).allowed  # the late one counted as the oldest second
