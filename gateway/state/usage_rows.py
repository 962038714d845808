"""Usage rows as every store keeps them: integer counters summed by day and key, read back as a UsageRow."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.state.base import UsageRecord, UsageRow, from_micro, to_micro, utc_day

USAGE_RETENTION_DAYS = 400

# tenant, alias, deployment, provider, vendor, hosting, jurisdiction: what one UsageRow sums over (besides the day)
UsageKey = tuple[str, str, str, str, str, str, str]
# Counters of a usage row, all integers so that sums never drift: cost in micro-USD, latency in microseconds.
USAGE_COUNTERS = (
    "requests",
    "errors",
    "fallbacks",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_micro_usd",
    "latency_us",
    "cache_write_tokens",
    "audio_input_tokens",
    "audio_output_tokens",
    "audio_ms",
    "characters",
    "images",
)
PRICE_COST_PREFIX = "cost_micro_usd@"  # + a price entry: the cost billed under that entry (`cost_micro_usd@policy[1]`)


def usage_key(record: UsageRecord) -> UsageKey:
    return (
        record.tenant,
        record.alias,
        record.deployment,
        record.provider,
        record.vendor,
        record.hosting,
        record.jurisdiction,
    )


# The counters of a usage row, in the order tally_usage reads them from a record.
_COUNTER_NAMES = (
    "requests", "errors", "fallbacks", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens",
    "cost_micro_usd", "latency_us", "cache_write_tokens", "audio_input_tokens", "audio_output_tokens", "audio_ms",
    "characters", "images",
)


def tally_usage(records: Iterable[UsageRecord]) -> dict[str, dict[UsageKey, dict[str, int]]]:
    """Sum records by day and key, so that a batch costs one write per row, not one per record."""
    days: dict[str, dict[UsageKey, dict[str, int]]] = {}
    for record in records:
        counts = days.setdefault(utc_day(record.ts), {}).setdefault(usage_key(record), {})
        values = (
            1,
            1 if record.status >= 400 else 0,
            1 if record.fallback else 0,
            record.input_tokens,
            record.output_tokens,
            record.cached_tokens,
            record.reasoning_tokens,
            to_micro(record.cost_usd),
            round(record.latency_s * 1_000_000),
            record.cache_write_tokens,
            record.audio_input_tokens,
            record.audio_output_tokens,
            record.audio_ms,
            record.characters,
            record.images,
        )
        for name, value in zip(_COUNTER_NAMES, values, strict=True):
            counts[name] = counts.get(name, 0) + value
        if record.price_entry and record.cost_usd:
            name = PRICE_COST_PREFIX + record.price_entry
            counts[name] = counts.get(name, 0) + to_micro(record.cost_usd)
    return days


def usage_row(day: str, key: UsageKey, counts: Mapping[str, int]) -> UsageRow:
    """A UsageRow from stored counters; counters this version does not know land in `extra`."""
    return UsageRow(
        day,
        *key,
        requests=counts.get("requests", 0),
        errors=counts.get("errors", 0),
        fallbacks=counts.get("fallbacks", 0),
        input_tokens=counts.get("input_tokens", 0),
        output_tokens=counts.get("output_tokens", 0),
        cached_tokens=counts.get("cached_tokens", 0),
        reasoning_tokens=counts.get("reasoning_tokens", 0),
        cost_usd=from_micro(counts.get("cost_micro_usd", 0)),
        latency_s_sum=counts.get("latency_us", 0) / 1_000_000,
        extra={
            name: float(value)
            for name, value in counts.items()
            if name not in USAGE_COUNTERS and not name.startswith(PRICE_COST_PREFIX)
        },
        cache_write_tokens=counts.get("cache_write_tokens", 0),
        audio_input_tokens=counts.get("audio_input_tokens", 0),
        audio_output_tokens=counts.get("audio_output_tokens", 0),
        audio_seconds=counts.get("audio_ms", 0) / 1000,
        characters=counts.get("characters", 0),
        images=counts.get("images", 0),
        cost_usd_by_price={
            name.removeprefix(PRICE_COST_PREFIX): from_micro(value)
            for name, value in counts.items()
            if name.startswith(PRICE_COST_PREFIX)
        },
    )


def sort_rows(rows: Iterable[UsageRow]) -> list[UsageRow]:
    return sorted(
        rows,
        key=lambda r: (r.day, r.tenant, r.alias, r.deployment, r.provider, r.vendor, r.hosting, r.jurisdiction),
    )
