"""`polyroute usage`: the usage report from the shared store, or from a running gateway's admin API."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson

from gateway.observability.usage_report import summarize
from gateway.settings import Settings
from gateway.state.factory import create_state_store


async def run_usage(settings: Settings, days: int, group_by: str, url: str | None, as_json: bool) -> int:
    if url is None and settings.redis_url is None:
        url = f"http://{settings.host}:{settings.port}"
    if url is not None:
        report = await _from_gateway(url, settings.admin_key, days, group_by)
    else:
        report = await _from_store(settings, days, group_by)
    if as_json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_table(report))
    return 0


async def _from_store(settings: Settings, days: int, group_by: str) -> dict[str, Any]:
    store = create_state_store(settings, on_error=lambda op: None)
    await store.start()
    try:
        today = datetime.now(UTC).date()
        since = (today - timedelta(days=days - 1)).isoformat()
        rows = await store.usage(since, today.isoformat())
    finally:
        await store.close()
    report = summarize(rows, group_by.split(","))
    report["since"], report["until"] = since, today.isoformat()
    return report


async def _from_gateway(url: str, admin_key: str | None, days: int, group_by: str) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
    params = {"days": str(days), "group_by": group_by}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url.rstrip('/')}/admin/usage", params=params, headers=headers) as resp,
    ):
        body = await resp.read()
        if resp.status != 200:
            print(f"error: {url} answered {resp.status}: {body.decode(errors='replace')}", file=sys.stderr)
            raise SystemExit(1)
    data: dict[str, Any] = orjson.loads(body)
    return data


def render_table(report: dict[str, Any]) -> str:
    dims: list[str] = report["group_by"]
    cols = [*dims, "requests", "errors", "fallbacks", "input_tokens", "output_tokens", "cost_usd"]
    rows = [[str(g.get(c, "")) for c in cols] for g in report["groups"]]
    total = report["total"]
    rows.append(["TOTAL", *[""] * (len(dims) - 1), *[str(total[c]) for c in cols[len(dims):]]])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = [f"usage {report.get('since')} .. {report.get('until')}"]
    lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    for dim in ("vendor", "hosting"):
        shares = report.get(f"share_by_{dim}", {})
        if shares:
            parts = [f"{k}: {v['request_share']:.0%} of requests, {v['spend_share']:.0%} of spend"
                     for k, v in shares.items()]
            lines.append(f"share by {dim}: " + "; ".join(parts))
    return "\n".join(lines)
