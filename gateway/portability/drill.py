"""The vendor drill: recorded traffic replayed through the engine as if one vendor were gone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.errors import PolyrouteError
from gateway.policy.charges import charge
from gateway.policy.table import Deployment, PolicyTable
from gateway.portability.replay import Replayer, without_vendor
from gateway.state.base import RoutingFactRow, RoutingFacts, UsageRow


def observed_latency(usage: Sequence[UsageRow]) -> dict[str, float]:
    """Mean observed latency (s) per deployment over the usage rows."""
    sums: dict[str, list[float]] = {}
    for row in usage:
        acc = sums.setdefault(row.deployment, [0.0, 0.0])
        acc[0] += row.latency_s_sum
        acc[1] += row.requests
    return {name: s / n for name, (s, n) in sums.items() if n}


def _policy_cost(deployment: Deployment | None, row: RoutingFactRow) -> float | None:
    if deployment is None or deployment.price.source == "unknown":
        return None
    return charge(
        deployment.price, input_tokens=row.input_tokens, output_tokens=row.output_tokens, requests=row.requests
    ).usd


class _AliasDrill:
    """What one alias's traffic does without the vendor."""

    def __init__(self, critical: bool) -> None:
        self.critical = critical
        self.requests = 0
        self.refused = 0
        self.refused_by: dict[str, int] = {}
        self.before: dict[str, int] = {}
        self.after: dict[str, int] = {}
        self.cost_before = self.cost_after = 0.0
        self.priced = 0  # requests with a policy price both before and after
        self.latency_before = self.latency_after = 0.0
        self.timed = 0  # requests with an observed latency both before and after

    def result(self, max_stranded: float) -> dict[str, Any]:
        stranded = round(self.refused / self.requests, 4) if self.requests else 0.0
        return {
            "critical": self.critical,
            "requests": self.requests,
            "refused": self.refused,
            "stranded_share": stranded,
            "refused_by": dict(sorted(self.refused_by.items())),
            "served_by_before": dict(sorted(self.before.items())),
            "served_by_after": dict(sorted(self.after.items())),
            "cost": {
                "requests": self.priced,
                "before_usd": round(self.cost_before, 8),
                "after_usd": round(self.cost_after, 8),
                "change_usd": round(self.cost_after - self.cost_before, 8),
            },
            "latency": {
                "requests": self.timed,
                "mean_before_s": round(self.latency_before / self.timed, 6) if self.timed else None,
                "mean_after_s": round(self.latency_after / self.timed, 6) if self.timed else None,
            },
            "failed": self.critical and stranded > max_stranded,
        }


def vendor_drill(
    table: PolicyTable, usage: Sequence[UsageRow], facts: RoutingFacts, *, without: str, max_stranded: float = 0.0
) -> dict[str, Any]:
    """Per alias: refused requests and the rules that refuse them, where the rest go, and the cost and latency change.

    `failed` is true when a critical alias would lose more than `max_stranded` of its traffic.
    """
    vendors = sorted({p.vendor for p in table.providers.values()})
    if without not in vendors:
        raise PolyrouteError(f"no provider in the policy has vendor '{without}'; its vendors are {vendors}")
    drilled = without_vendor(table, without)
    replayer = Replayer(drilled)
    latency = observed_latency(usage)
    aliases = {name: _AliasDrill(alias.critical) for name, alias in table.aliases.items()}
    unknown = 0
    for row in facts.rows:
        drill = aliases.get(row.alias)
        if drill is None:
            unknown += row.requests  # an alias no longer in the policy: nothing to drill
            continue
        n = row.requests
        drill.requests += n
        drill.before[row.deployment] = drill.before.get(row.deployment, 0) + n
        replayed = replayer.replay(row)
        if not replayed.eligible:
            drill.refused += n
            cause = replayed.refused_by or "no eligible target"
            drill.refused_by[cause] = drill.refused_by.get(cause, 0) + n
            continue
        target = replayed.eligible[0]
        drill.after[target.name] = drill.after.get(target.name, 0) + n
        before_cost = _policy_cost(table.deployments.get(row.deployment), row)
        after_cost = _policy_cost(target, row)
        if before_cost is not None and after_cost is not None:
            drill.cost_before += before_cost
            drill.cost_after += after_cost
            drill.priced += n
        before_s, after_s = latency.get(row.deployment), latency.get(target.name)
        if before_s is not None and after_s is not None:
            drill.latency_before += before_s * n
            drill.latency_after += after_s * n
            drill.timed += n
    results = {name: drill.result(max_stranded) for name, drill in sorted(aliases.items())}
    return {
        "without": without,
        "removed_deployments": sorted(n for n, d in table.deployments.items() if d.provider.vendor == without),
        "max_stranded": max_stranded,
        "requests": sum(d.requests for d in aliases.values()),
        "refused": sum(d.refused for d in aliases.values()),
        "aliases": results,
        "failed_aliases": [name for name, r in results.items() if r["failed"]],
        "passed": not any(r["failed"] for r in results.values()),
        "facts": {"requests": sum(r.requests for r in facts.rows), "dropped": facts.dropped,
                  "unknown_alias": unknown},
    }

