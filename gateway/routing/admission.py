"""Admission of a routed request: the store's limits and budgets in one round trip, and what a refusal says."""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.errors import BudgetExceededError, LimitExceededError
from gateway.observability.metrics import Metrics
from gateway.policy.plan import RequestFacts, RoutePlan
from gateway.policy.strategies import expected_output_tokens
from gateway.policy.table import Tenant
from gateway.state.base import AdmissionRequest, AdmissionResult, DeploymentQuota, StateStore


@dataclass
class Admitted:
    reserved_deployment: str | None
    tokens: int
    cost_usd: float
    counted: bool
    headers: dict[str, str]
    saturated: frozenset[str] = frozenset()  # deployments admission found at their own rpm/tpm limit


class Admission:
    """Reserves what a request may use before it is carried out (429 when a limit or budget says no)."""

    def __init__(self, store: StateStore, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    async def admit(self, tenant: Tenant, plan: RoutePlan, facts: RequestFacts) -> Admitted:
        """One store round trip, and none at all when neither tenant nor deployments have limits."""
        tokens = facts.prompt_tokens + expected_output_tokens(facts)
        first = plan.attempts[0].name
        cost = plan.estimated_cost_usd.get(first, 0.0)
        limits, budget = tenant.limits, tenant.budget
        tenant_limited = any(
            v is not None for v in (limits.rpm, limits.tpm, budget.usd_per_day, budget.usd_per_month)
        )
        quota_limited = any(d.rpm or d.tpm for d in plan.attempts)
        # Every attempt in plan order, unlimited ones too: the store reserves the first one with capacity.
        quotas = tuple(DeploymentQuota(d.name, d.rpm, d.tpm) for d in plan.attempts) if quota_limited else ()
        if not tenant_limited and not quota_limited:
            return Admitted(None, tokens, cost, False, {})
        request = AdmissionRequest(
            tenant=tenant.name,
            tokens=tokens,
            est_cost_usd=cost,
            now=time.time(),
            tenant_rpm=limits.rpm,
            tenant_tpm=limits.tpm,
            budget_day_usd=budget.usd_per_day,
            budget_month_usd=budget.usd_per_month,
            deployments=quotas,
        )
        result = await self._store.admit(request)
        headers = ratelimit_headers(result)
        if not result.allowed:
            self._metrics.rate_limited(tenant=tenant.name, reason=result.reason or "other")
            refusal = BudgetExceededError if (result.reason or "").startswith("budget") else LimitExceededError
            raise refusal(limit_message(result, tenant, request, plan), retry_after=result.retry_after_s,
                          extra_headers=headers)
        self._report_budget(tenant, result)
        # Settling corrects the tokens and cost reserved above; only a TPM limit or a budget ever reads them.
        settle = limits.tpm is not None or budget.usd_per_day is not None or budget.usd_per_month is not None
        return Admitted(result.deployment, tokens, cost, settle, headers, frozenset(result.saturated))

    def _report_budget(self, tenant: Tenant, result: AdmissionResult) -> None:
        if result.degraded:
            return  # admitted without the store: what was spent is unknown, not zero
        if tenant.budget.usd_per_day is not None:
            self._metrics.budget_remaining(
                tenant=tenant.name, period="day", usd=tenant.budget.usd_per_day - result.spent_day_usd
            )
        if tenant.budget.usd_per_month is not None:
            self._metrics.budget_remaining(
                tenant=tenant.name, period="month", usd=tenant.budget.usd_per_month - result.spent_month_usd
            )


def ratelimit_headers(result: AdmissionResult) -> dict[str, str]:
    headers: dict[str, str] = {}
    reset = f"{max(0.0, result.reset_s):.0f}s"
    if result.rpm_limit is not None:
        headers["x-ratelimit-limit-requests"] = str(result.rpm_limit)
        headers["x-ratelimit-remaining-requests"] = str(max(0, result.rpm_remaining or 0))
        headers["x-ratelimit-reset-requests"] = reset
    if result.tpm_limit is not None:
        headers["x-ratelimit-limit-tokens"] = str(result.tpm_limit)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, result.tpm_remaining or 0))
        headers["x-ratelimit-reset-tokens"] = reset
    return headers


def limit_message(result: AdmissionResult, tenant: Tenant, request: AdmissionRequest, plan: RoutePlan) -> str:
    """What a 429 says: which limit, its value, what was used, and when to come back (as `Retry-After` says)."""

    def usd(value: float) -> str:  # micro-dollars are the stores' unit: never hide a small amount as $0.0000
        return "$" + (f"{value:.6f}".rstrip("0").rstrip(".") if value else "0")

    seconds = max(1, int(result.retry_after_s + 0.999))  # rounded as the Retry-After header is
    wait = f"Try again in {seconds}s."
    reason, name, limits, budget = result.reason, tenant.name, tenant.limits, tenant.budget
    if reason == "tenant_rpm":
        return f"Rate limit reached for tenant '{name}': {limits.rpm} requests per minute. {wait}"
    if reason == "tenant_tpm" and limits.tpm is not None and request.tokens > limits.tpm:
        return (
            f"Request too large for tenant '{name}': it may use about {request.tokens} tokens (its prompt and "
            f"expected output), more than the limit of {limits.tpm} tokens per minute. "
            "Send a shorter prompt or a lower max_tokens."
        )
    if reason == "tenant_tpm":
        return (
            f"Rate limit reached for tenant '{name}': {limits.tpm} tokens per minute "
            f"({result.tpm_remaining or 0} left, this request may use about {request.tokens}). {wait}"
        )
    if reason in ("budget_day", "budget_month"):
        day = reason == "budget_day"
        period, limit = ("Daily", budget.usd_per_day) if day else ("Monthly", budget.usd_per_month)
        spent = result.spent_day_usd if day else result.spent_month_usd
        resets = "at 00:00 UTC" if day else "on the 1st of the month, 00:00 UTC"
        return (
            f"{period} budget of {usd(limit or 0.0)} for tenant '{name}' would be exceeded: spent "
            f"{usd(spent)} {'today' if day else 'this month'}, this request is estimated at "
            f"{usd(request.est_cost_usd)}. The budget resets {resets}; try again in {seconds}s."
        )
    quotas = ", ".join(
        f"{d.name}: {d.rpm or '-'} requests / {d.tpm or '-'} tokens per minute"
        for d in plan.attempts
        if d.name in result.saturated
    )
    return (
        f"Every deployment that may serve '{plan.alias}' is at its own rate limit ({quotas}); "
        f"these limits protect the upstreams' quotas. {wait}"
    )
