"""Routing facts in Redis: one hash per UTC day beside (and in the same Cluster slot as) that day's usage hash."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from gateway.state.base import RoutingFactRow, UsageRecord
from gateway.state.facts import FACT_COUNTERS, FACT_KEY_LENGTH, FACT_RETENTION_DAYS, FactKey, fact_row, tally_facts

FACTS_TTL_S = (FACT_RETENTION_DAYS + 1) * 86_400
DROPPED_FIELD = "#dropped"


def facts_key(usage_key: str) -> str:
    """The facts hash of the day whose usage hash is `usage_key`: its hash tag is that whole key, hence one slot."""
    return f"{{{usage_key}}}:facts"


def fact_args(records: Sequence[UsageRecord]) -> list[str | int]:
    """The facts part of usage_facts.lua's ARGV for records of one day: five field/increment pairs per fact."""
    args: list[str | int] = []
    for facts in tally_facts(records).values():
        for key, counts in facts.items():
            for counter, value in zip(FACT_COUNTERS, counts, strict=True):
                args += [_field(key, counter), value]
    return args


def _field(key: FactKey, counter: str) -> str:
    return json.dumps([*key, counter], separators=(",", ":"), ensure_ascii=False)


def fact_rows(day: str, stored: Mapping[str, str]) -> tuple[list[RoutingFactRow], int]:
    """A day's rows from its hash, and the requests dropped over the cap; fields of another schema are skipped."""
    counters: dict[FactKey, dict[str, int]] = {}
    for field, value in stored.items():
        try:
            parts = json.loads(field) if field.startswith("[") else None
        except ValueError:
            continue
        if not isinstance(parts, list) or len(parts) != FACT_KEY_LENGTH + 1:
            continue
        if not all(isinstance(p, str) for p in parts):
            continue
        key: FactKey = tuple(parts[:FACT_KEY_LENGTH])
        counters.setdefault(key, {})[parts[-1]] = int(value)
    rows = [fact_row(day, key, counts) for key, counts in counters.items()]
    return rows, int(stored.get(DROPPED_FIELD, 0))
