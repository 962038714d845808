"""The lock-in report: who the traffic depends on, and whether the rules would let each alias leave its vendor."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gateway.policy.table import Hosting, PolicyTable
from gateway.portability.replay import Replayer
from gateway.portability.vendor_params import vendor_params
from gateway.state.base import RoutingFactRow, RoutingFacts, UsageRow

SHARE_DIMENSIONS = ("vendor", "jurisdiction", "hosting")


def hhi(amounts: Iterable[float]) -> float:
    """Herfindahl-Hirschman index of the amounts' shares in percent: 10,000 = one party has everything; 0 = nothing."""
    values = [a for a in amounts if a > 0]
    total = sum(values)
    if not total:
        return 0.0
    return round(sum((100.0 * a / total) ** 2 for a in values), 1)


def _share(part: float, whole: float) -> float:
    return round(part / whole, 4) if whole else 0.0


def shares(rows: Sequence[UsageRow], dim: str) -> dict[str, dict[str, float]]:
    """Requests, tokens (input + output) and spend of each value of `dim`, and each one's share of the total."""
    sums: dict[str, list[float]] = {}
    for row in rows:
        acc = sums.setdefault(str(getattr(row, dim)), [0.0, 0.0, 0.0])
        acc[0] += row.requests
        acc[1] += row.input_tokens + row.output_tokens
        acc[2] += row.cost_usd
    totals = [sum(acc[i] for acc in sums.values()) for i in range(3)]
    return {
        name: {
            "requests": int(r),
            "request_share": _share(r, totals[0]),
            "tokens": int(t),
            "token_share": _share(t, totals[1]),
            "cost_usd": round(c, 8),
            "spend_share": _share(c, totals[2]),
        }
        for name, (r, t, c) in sorted(sums.items())
    }


def lockin_report(
    table: PolicyTable, usage: Sequence[UsageRow], facts: RoutingFacts, proven: Mapping[str, list[str]] | None = None
) -> dict[str, Any]:
    """The whole report as JSON-ready data (GET /admin/lockin and `polyroute lockin --json` print it as is);
    `proven`: per alias, the deployments that passed shadow evaluation (portability/shadow_results.py)."""
    by_vendor = shares(usage, "vendor")
    replayer = Replayer(table)
    by_alias: dict[str, list[RoutingFactRow]] = {}
    for row in facts.rows:
        by_alias.setdefault(row.alias, []).append(row)
    return {
        "totals": {
            "requests": sum(r.requests for r in usage),
            "tokens": sum(r.input_tokens + r.output_tokens for r in usage),
            "cost_usd": round(sum(r.cost_usd for r in usage), 8),
        },
        "share": {"vendor": by_vendor, **{d: shares(usage, d) for d in SHARE_DIMENSIONS[1:]}},
        "hhi": {
            "spend": hhi(v["cost_usd"] for v in by_vendor.values()),
            "tokens": hhi(v["tokens"] for v in by_vendor.values()),
        },
        "aliases": {
            name: {
                **alias_lockin(table, name, by_alias.get(name, []), replayer),
                "proven_alternatives": sorted((proven or {}).get(name, [])),
            }
            for name in sorted(table.aliases)
        },
        "facts": {"requests": sum(r.requests for r in facts.rows), "dropped": facts.dropped},
    }


def alias_lockin(table: PolicyTable, name: str, rows: Sequence[RoutingFactRow], replayer: Replayer) -> dict[str, Any]:
    """One alias: its targets' vendors, its dominant vendor, and for the traffic it received what the rules allow."""
    alias = table.aliases[name]
    served: dict[str, int] = {}
    for row in rows:
        vendor = _vendor(table, row.deployment)
        served[vendor] = served.get(vendor, 0) + row.requests
    first = table.deployments[alias.targets[0]].provider.vendor if alias.targets else "none"
    dominant = max(sorted(served), key=lambda v: served[v]) if served else first
    requests = stranded = self_hosted = with_params = 0
    params: dict[str, int] = {}
    known_params = vendor_params()
    for row in rows:
        eligible = replayer.replay(row).eligible
        requests += row.requests
        if not any(d.provider.vendor != dominant for d in eligible):
            stranded += row.requests
        if any(d.provider.hosting is Hosting.SELF_HOSTED for d in eligible):
            self_hosted += row.requests
        if row.params:
            with_params += row.requests
            for param in row.params:
                params[param] = params.get(param, 0) + row.requests
    if not rows:  # no traffic yet: judge a plain request of the alias
        eligible = replayer.replay(_plain_request(name)).eligible
        other_ok = any(d.provider.vendor != dominant for d in eligible)
        self_ok = any(d.provider.hosting is Hosting.SELF_HOSTED for d in eligible)
    else:
        other_ok, self_ok = stranded == 0, self_hosted == requests
    return {
        "critical": alias.critical,
        "targets": [
            {
                "deployment": t,
                "vendor": table.deployments[t].provider.vendor,
                "hosting": table.deployments[t].provider.hosting.value,
                "jurisdiction": table.deployments[t].provider.jurisdiction,
            }
            for t in alias.targets
        ],
        "vendors": sorted({table.deployments[t].provider.vendor for t in alias.targets}),
        "dominant_vendor": dominant,
        "requests": requests,
        "served_by_vendor": dict(sorted(served.items())),
        "other_vendor_allowed": other_ok,
        "self_hosted_allowed": self_ok,
        "stranded_share": _share(stranded, requests) if rows else (0.0 if other_ok else 1.0),
        "stranded_requests": stranded,
        "self_hosted_share": _share(self_hosted, requests),
        "provider_params": {
            "share": _share(with_params, requests),
            "requests": with_params,
            "params": {
                p: {"vendor": known_params.get(p, "unknown"), "requests": n, "share": _share(n, requests)}
                for p, n in sorted(params.items())
            },
        },
        "proven_alternatives": [],  # filled in by lockin_report from shadow evaluation
    }


def _vendor(table: PolicyTable, deployment: str) -> str:
    found = table.deployments.get(deployment)
    return found.provider.vendor if found is not None else "unknown"


def _plain_request(alias: str) -> RoutingFactRow:
    return RoutingFactRow(
        day="", alias=alias, tenant="", deployment="", endpoint="chat", stream=False, data_class=None, tags=(),
        prompt_tokens=1, max_output_tokens=None, needs=(), params=(),
    )
