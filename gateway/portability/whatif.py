"""What-if: recorded usage priced under another policy's price book and, with routing facts, under its routing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.policy.charges import charge
from gateway.policy.table import PolicyTable
from gateway.portability.replay import Replayer
from gateway.state.base import RoutingFacts, UsageRow


class _Spend:
    """Recorded ("then") and recomputed ("now") spend of one alias or vendor."""

    __slots__ = ("now", "refused", "requests", "then", "unpriced")

    def __init__(self) -> None:
        self.requests = self.unpriced = self.refused = 0
        self.then = self.now = 0.0

    def result(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "then_usd": round(self.then, 8),
            "now_usd": round(self.now, 8),
            "change_usd": round(self.now - self.then, 8),
            "unpriced_requests": self.unpriced,
            "refused_requests": self.refused,
        }


def _table(spends: dict[str, _Spend]) -> dict[str, dict[str, Any]]:
    return {name: spend.result() for name, spend in sorted(spends.items())}


def _total(spends: dict[str, _Spend]) -> dict[str, Any]:
    total = _Spend()
    for spend in spends.values():
        total.requests += spend.requests
        total.unpriced += spend.unpriced
        total.refused += spend.refused
        total.then += spend.then
        total.now += spend.now
    return total.result()


def price_change(table: PolicyTable, usage: Sequence[UsageRow], now: float) -> dict[str, Any]:
    """Each usage row priced under `table`'s entry in force at `now` for the deployment that served it.

    A row whose deployment the policy does not price (absent, or no known price) keeps its recorded cost and is
    counted as unpriced. A row's tier is chosen by its mean input per request.
    """
    aliases: dict[str, _Spend] = {}
    vendors: dict[str, _Spend] = {}
    for row in usage:
        deployment = table.deployments.get(row.deployment)
        by_alias = aliases.setdefault(row.alias, _Spend())
        then_vendor = vendors.setdefault(row.vendor, _Spend())
        by_alias.requests += row.requests
        by_alias.then += row.cost_usd
        then_vendor.then += row.cost_usd
        if deployment is None or deployment.price.source == "unknown":
            cost, now_vendor = row.cost_usd, then_vendor
            by_alias.unpriced += row.requests
            now_vendor.unpriced += row.requests
        else:
            cost = charge(
                deployment.price.at(now),
                input_tokens=row.input_tokens,
                output_tokens=row.output_tokens,
                cached_tokens=row.cached_tokens,
                cache_write_tokens=row.cache_write_tokens,
                reasoning_tokens=row.reasoning_tokens,
                requests=row.requests,
                audio_input_tokens=row.audio_input_tokens,
                audio_output_tokens=row.audio_output_tokens,
                audio_seconds=row.audio_seconds,
                characters=row.characters,
            ).usd
            now_vendor = vendors.setdefault(deployment.provider.vendor, _Spend())
        by_alias.now += cost
        now_vendor.now += cost
        now_vendor.requests += row.requests
    return {"aliases": _table(aliases), "vendors": _table(vendors), "total": _total(aliases)}


def routing_change(
    table: PolicyTable, facts: RoutingFacts, vendor_of: dict[str, str], now: float
) -> dict[str, Any]:
    """The recorded routing facts replayed through `table`'s engine: each goes to its first eligible deployment and
    is priced there (facts keep input and output sums, not the cache split: cached tokens count as input)."""
    replayer = Replayer(table)
    aliases: dict[str, _Spend] = {}
    vendors: dict[str, _Spend] = {}
    served_by: dict[str, dict[str, int]] = {}
    for row in facts.rows:
        by_alias = aliases.setdefault(row.alias, _Spend())
        then_vendor = vendors.setdefault(vendor_of.get(row.deployment, "unknown"), _Spend())
        by_alias.requests += row.requests
        by_alias.then += row.cost_usd
        then_vendor.then += row.cost_usd
        replayed = replayer.replay(row)
        if not replayed.eligible:
            by_alias.refused += row.requests
            continue
        target = replayed.eligible[0]
        counts = served_by.setdefault(row.alias, {})
        counts[target.name] = counts.get(target.name, 0) + row.requests
        now_vendor = vendors.setdefault(target.provider.vendor, _Spend())
        now_vendor.requests += row.requests
        if target.price.source == "unknown":
            by_alias.unpriced += row.requests
            now_vendor.unpriced += row.requests
            continue
        cost = charge(
            target.price.at(now),
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            requests=row.requests,
        ).usd
        by_alias.now += cost
        now_vendor.now += cost
    alias_results = _table(aliases)
    for name, counts in served_by.items():
        alias_results[name]["served_by_now"] = dict(sorted(counts.items()))
    return {
        "aliases": alias_results,
        "vendors": _table(vendors),
        "total": _total(aliases),
        "facts_dropped": facts.dropped,
    }


def what_if(table: PolicyTable, usage: Sequence[UsageRow], facts: RoutingFacts, now: float) -> dict[str, Any]:
    """Spend per alias and vendor as recorded (then) and under `table` (now): its prices on the recorded routing,
    and, when routing facts were recorded, its routing and prices together."""
    vendor_of = {row.deployment: row.vendor for row in usage}
    vendor_of.update((name, d.provider.vendor) for name, d in table.deployments.items() if name not in vendor_of)
    return {
        "prices": price_change(table, usage, now),
        "routing": routing_change(table, facts, vendor_of, now) if facts.rows else None,
    }
