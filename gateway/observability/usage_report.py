"""Usage reports: usage rows grouped by chosen dimensions, with each vendor's and hosting type's share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from gateway.state.base import UsageRow

MAX_DAYS = 400  # how far back a usage report may reach, by GET /admin/usage or `polyroute usage`
DIMENSIONS = ("day", "tenant", "alias", "deployment", "provider", "vendor", "hosting", "jurisdiction")
_SUMS = (
    "requests",
    "errors",
    "fallbacks",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "audio_input_tokens",
    "audio_output_tokens",
    "audio_seconds",
    "characters",
    "images",
)


def dimensions(group_by: Sequence[str]) -> list[str]:
    """The dimensions to group by, blanks dropped; ValueError naming the choices for an unknown one."""
    dims = [d.strip() for d in group_by if d.strip()]
    unknown = [d for d in dims if d not in DIMENSIONS]
    if unknown:
        raise ValueError(f"unknown group_by dimension(s) {unknown}; choose from {list(DIMENSIONS)}")
    return dims


def summarize(rows: Iterable[UsageRow], group_by: Sequence[str]) -> dict[str, Any]:
    """Totals, groups (largest spend first) and the share of requests and spend per vendor and hosting."""
    dims = dimensions(group_by)
    rows = list(rows)
    groups: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple(str(getattr(row, d)) for d in dims)
        _add(groups.setdefault(key, _empty(dict(zip(dims, key, strict=True)))), row)
    total = _empty({})
    for row in rows:
        _add(total, row)
    return {
        "group_by": dims,
        "total": _finish(total),
        "groups": sorted((_finish(g) for g in groups.values()), key=lambda g: -g["cost_usd"]),
        "share_by_vendor": _shares(rows, "vendor", total),
        "share_by_hosting": _shares(rows, "hosting", total),
    }


def _empty(keys: dict[str, str]) -> dict[str, Any]:
    return {**keys, **{k: 0 for k in _SUMS}, "cost_usd": 0.0, "latency_s_sum": 0.0, "cost_usd_by_price": {}}


def _add(acc: dict[str, Any], row: UsageRow) -> None:
    for k in _SUMS:
        acc[k] += getattr(row, k)
    acc["cost_usd"] += row.cost_usd
    acc["latency_s_sum"] += row.latency_s_sum
    by_price = acc["cost_usd_by_price"]
    for entry, usd in row.cost_usd_by_price.items():
        by_price[entry] = by_price.get(entry, 0.0) + usd


def _finish(acc: dict[str, Any]) -> dict[str, Any]:
    requests = acc["requests"]
    acc["mean_latency_s"] = round(acc.pop("latency_s_sum") / requests, 6) if requests else 0.0
    acc["cost_usd"] = round(acc["cost_usd"], 8)
    acc["audio_seconds"] = round(acc["audio_seconds"], 3)
    acc["cost_usd_by_price"] = {k: round(v, 8) for k, v in sorted(acc["cost_usd_by_price"].items())}
    return acc


def _shares(rows: list[UsageRow], dim: str, total: dict[str, Any]) -> dict[str, dict[str, float]]:
    by: dict[str, list[float]] = {}
    for row in rows:
        acc = by.setdefault(str(getattr(row, dim)), [0.0, 0.0])
        acc[0] += row.requests
        acc[1] += row.cost_usd
    req_total = total["requests"] or 1
    cost_total = total["cost_usd"] or 1.0
    return {
        name: {"requests": int(r), "request_share": round(r / req_total, 4), "cost_usd": round(c, 8),
               "spend_share": round(c / cost_total, 4) if total["cost_usd"] else 0.0}
        for name, (r, c) in sorted(by.items())
    }
