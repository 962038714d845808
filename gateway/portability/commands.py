"""`polyroute lockin` and `polyroute drill`: from a running gateway's admin API, or from Redis and a policy file."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from gateway.errors import PolyrouteError
from gateway.observability.usage_cli import fetch_admin
from gateway.policy.table import PolicyTable
from gateway.portability.drill import vendor_drill
from gateway.portability.lockin import lockin_report
from gateway.portability.render import render_drill, render_lockin, render_shadow, render_whatif
from gateway.portability.whatif import what_if
from gateway.settings import Settings
from gateway.state.base import RoutingFactRow, RoutingFacts, StateStore, UsageRow
from gateway.state.facts import FACT_RETENTION_DAYS

_TIMEOUT_S = 60.0
DRILL_FAILED = 3  # the exit status of a drill in which a critical alias loses too much: a CI step fails on it


def check_days(days: int) -> None:
    if not 1 <= days <= FACT_RETENTION_DAYS:
        raise PolyrouteError(f"days must be between 1 and {FACT_RETENTION_DAYS} (routing facts are kept that long)")


def check_share(value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise PolyrouteError("max_stranded must be a fraction between 0 and 1")


async def read_usage(store: StateStore, days: int) -> tuple[list[UsageRow], RoutingFacts, str, str]:
    """Usage rows and routing facts of the last `days` UTC days (today included), with the first and last day."""
    today = datetime.now(UTC).date()
    since, until = (today - timedelta(days=days - 1)).isoformat(), today.isoformat()
    return await store.usage(since, until), await store.routing_facts(since, until), since, until


async def lockin_from_store(
    store: StateStore, table: PolicyTable, days: int, proven: Mapping[str, list[str]] | None = None
) -> dict[str, Any]:
    usage, facts, since, until = await read_usage(store, days)
    # Up to a few thousand engine decisions: in a thread, so that a gateway's event loop keeps serving meanwhile.
    report = await asyncio.to_thread(lockin_report, table, usage, facts, proven)
    return {"since": since, "until": until, **report}


async def drill_from_store(
    store: StateStore, table: PolicyTable, days: int, without: str, max_stranded: float
) -> dict[str, Any]:
    usage, facts, since, until = await read_usage(store, days)
    report = await asyncio.to_thread(
        functools.partial(vendor_drill, table, usage, facts, without=without, max_stranded=max_stranded)
    )
    return {"since": since, "until": until, **report}


async def recorded_from_store(store: StateStore, days: int) -> dict[str, Any]:
    """What GET /admin/recorded answers: the usage rows and routing facts of the last `days`, as JSON-ready dicts."""
    usage, facts, since, until = await read_usage(store, days)
    return {
        "since": since,
        "until": until,
        "usage": [dataclasses.asdict(row) for row in usage],
        "facts": {"rows": [dataclasses.asdict(row) for row in facts.rows], "dropped": facts.dropped},
    }


def _recorded(data: dict[str, Any]) -> tuple[list[UsageRow], RoutingFacts]:
    usage = [UsageRow(**row) for row in data["usage"]]
    rows = tuple(
        RoutingFactRow(**{**row, **{k: tuple(row[k]) for k in ("tags", "needs", "params")}})
        for row in data["facts"]["rows"]
    )
    return usage, RoutingFacts(rows=rows, dropped=data["facts"]["dropped"])


async def run_whatif(settings: Settings, policy: Path, days: int, url: str | None, as_json: bool) -> int:
    """`polyroute what-if`: recorded usage (from `url`, else Redis, else the gateway on POLYROUTE_HOST/PORT) priced
    and routed under the policy file `policy`."""
    from gateway.runtime import load_table

    check_days(days)
    table = load_table(settings, policy)
    if url is None and settings.redis_url is None:
        url = f"http://{settings.host}:{settings.port}"
    if url is not None:
        data = await _from_gateway(url, "/admin/recorded", {"days": str(days)}, settings.admin_key)
    else:
        from gateway.state.factory import create_state_store

        store = create_state_store(settings, on_error=lambda op: None)
        await store.start()
        try:
            data = await recorded_from_store(store, days)
        finally:
            await store.close()
    usage, facts = _recorded(data)
    report = {
        "policy": str(policy),
        "since": data["since"],
        "until": data["until"],
        **await asyncio.to_thread(what_if, table, usage, facts, time.time()),
    }
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if as_json else render_whatif(report))
    return 0


async def run_lockin(settings: Settings, days: int, url: str | None, as_json: bool) -> int:
    check_days(days)
    report = await _report(settings, url, "/admin/lockin", {"days": str(days)}, days, None, 0.0)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if as_json else render_lockin(report))
    return 0


async def run_shadow(settings: Settings, alias: str | None, url: str | None, as_json: bool) -> int:
    """Shadow results live in each gateway process's memory: they are always asked of a gateway."""
    params = {"alias": alias} if alias else {}
    report = await _from_gateway(url or f"http://{settings.host}:{settings.port}", "/admin/shadow", params,
                                 settings.admin_key)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if as_json else render_shadow(report))
    return 0


async def run_drill(
    settings: Settings, without: str, days: int, url: str | None, as_json: bool, max_stranded: float
) -> int:
    check_days(days)
    check_share(max_stranded)
    params = {"without": without, "days": str(days), "max_stranded": str(max_stranded)}
    report = await _report(settings, url, "/admin/drill", params, days, without, max_stranded)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if as_json else render_drill(report))
    return 0 if report["passed"] else DRILL_FAILED


async def _report(
    settings: Settings,
    url: str | None,
    path: str,
    params: dict[str, str],
    days: int,
    without: str | None,
    max_stranded: float,
) -> dict[str, Any]:
    """From `url`, else from Redis with the policy file, else from the gateway on POLYROUTE_HOST/PORT."""
    if url is None and (settings.redis_url is None or settings.policy is None):
        url = f"http://{settings.host}:{settings.port}"
    if url is not None:
        return await _from_gateway(url, path, params, settings.admin_key)
    from gateway.runtime import load_table
    from gateway.state.factory import create_state_store

    assert settings.policy is not None
    table = load_table(settings, settings.policy)
    store = create_state_store(settings, on_error=lambda op: None)
    await store.start()
    try:
        if without is None:
            return await lockin_from_store(store, table, days)
        return await drill_from_store(store, table, days, without, max_stranded)
    finally:
        await store.close()


async def _from_gateway(url: str, path: str, params: dict[str, str], admin_key: str | None) -> dict[str, Any]:
    return await fetch_admin(
        url, path, params, admin_key, total_s=_TIMEOUT_S, direct="POLYROUTE_REDIS_URL and POLYROUTE_POLICY"
    )
