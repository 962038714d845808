"""Routing facts kept with usage: identical facts summed into one row, a capped number of distinct rows per day."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.state.base import RoutingFact, RoutingFactRow, UsageRecord, from_micro, to_micro, utc_day

# alias, tenant, deployment, endpoint, stream, data class, tags, prompt size, max output, needs, params: all text,
# so that a key is stored as it is in the memory store and as one JSON field prefix in Redis.
FactKey = tuple[str, str, str, str, str, str, str, str, str, str, str]
FACT_KEY_LENGTH = 11
FACT_COUNTERS = ("requests", "input_tokens", "output_tokens", "cost_micro_usd", "latency_us")
DEFAULT_FACTS_PER_DAY = 5_000
FACT_RETENTION_DAYS = 35  # what a drill or a lock-in report may look back on


def size_bucket(tokens: int) -> int:
    """`tokens` rounded up to at most 1/8 above it (exact below 16): near-identical requests share one row."""
    shift = max(0, tokens.bit_length() - 4)
    return -(-tokens >> shift) << shift


# What one request's fact is summed under within a batch: built cheaply (the sets as they are), turned into a FactKey
# once per distinct fact.
_RawKey = tuple[str, str, str, str, bool, str | None, frozenset[str], int, int | None, frozenset[str], frozenset[str]]


def _raw_key(record: UsageRecord, fact: RoutingFact) -> _RawKey:
    return (
        record.alias,
        record.tenant,
        record.deployment,
        fact.endpoint,
        fact.stream,
        fact.data_class,
        fact.tags,
        size_bucket(fact.prompt_tokens),
        None if fact.max_output_tokens is None else size_bucket(fact.max_output_tokens),
        fact.needs,
        record.params,
    )


def _fact_key(raw: _RawKey) -> FactKey:
    alias, tenant, deployment, endpoint, stream, data_class, tags, prompt, max_out, needs, params = raw
    return (
        alias,
        tenant,
        deployment,
        endpoint,
        "1" if stream else "0",
        data_class or "",
        ",".join(sorted(tags)),
        str(prompt),
        "" if max_out is None else str(max_out),
        ",".join(sorted(needs)),
        ",".join(sorted(params)),
    )


def tally_facts(records: Iterable[UsageRecord]) -> dict[str, dict[FactKey, list[int]]]:
    """Sum the records that carry routing facts by day and fact, in FACT_COUNTERS order."""
    raw_days: dict[str, dict[_RawKey, list[int]]] = {}
    for record in records:
        if record.fact is None:
            continue
        facts = raw_days.setdefault(utc_day(record.ts), {})
        key = _raw_key(record, record.fact)
        counts = facts.get(key)
        if counts is None:
            counts = facts[key] = [0, 0, 0, 0, 0]
        counts[0] += 1
        counts[1] += record.input_tokens
        counts[2] += record.output_tokens
        counts[3] += to_micro(record.cost_usd)
        counts[4] += round(record.latency_s * 1_000_000)
    return {day: {_fact_key(raw): counts for raw, counts in facts.items()} for day, facts in raw_days.items()}


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split(",")) if text else ()


def fact_row(day: str, key: FactKey, counts: Mapping[str, int]) -> RoutingFactRow:
    alias, tenant, deployment, endpoint, stream, data_class, tags, prompt, max_out, needs, params = key
    return RoutingFactRow(
        day=day,
        alias=alias,
        tenant=tenant,
        deployment=deployment,
        endpoint=endpoint,
        stream=stream == "1",
        data_class=data_class or None,
        tags=_split(tags),
        prompt_tokens=int(prompt),
        max_output_tokens=int(max_out) if max_out else None,
        needs=_split(needs),
        params=_split(params),
        requests=counts.get("requests", 0),
        input_tokens=counts.get("input_tokens", 0),
        output_tokens=counts.get("output_tokens", 0),
        cost_usd=from_micro(counts.get("cost_micro_usd", 0)),
        latency_s_sum=counts.get("latency_us", 0) / 1_000_000,
    )


class FactLedger:
    """The in-process store's routing facts: at most `per_day` distinct facts a day; the rest are counted as dropped."""

    def __init__(self, per_day: int = DEFAULT_FACTS_PER_DAY) -> None:
        self._per_day = per_day
        self._days: dict[str, dict[FactKey, list[int]]] = {}
        self._dropped: dict[str, int] = {}

    def add(self, records: Iterable[UsageRecord]) -> None:
        for day, facts in tally_facts(records).items():
            stored = self._days.setdefault(day, {})
            for key, counts in facts.items():
                row = stored.get(key)
                if row is None and len(stored) >= self._per_day:
                    self._dropped[day] = self._dropped.get(day, 0) + counts[0]
                elif row is None:
                    stored[key] = counts
                else:
                    for i, value in enumerate(counts):
                        row[i] += value

    def rows(self, since_day: str, until_day: str) -> tuple[list[RoutingFactRow], int]:
        rows = [
            fact_row(day, key, dict(zip(FACT_COUNTERS, counts, strict=True)))
            for day, facts in sorted(self._days.items())
            if since_day <= day <= until_day
            for key, counts in facts.items()
        ]
        dropped = sum(n for day, n in self._dropped.items() if since_day <= day <= until_day)
        return rows, dropped

    def forget_before(self, cutoff: str) -> None:
        for old in [d for d in self._days if d < cutoff]:
            del self._days[old]
        for old in [d for d in self._dropped if d < cutoff]:
            del self._dropped[old]
