"""`polyroute usage`: the usage report from the shared store, or from a running gateway's admin API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gateway.errors import PolyrouteError
from gateway.observability.usage_report import MAX_DAYS, summarize
from gateway.settings import Settings
from gateway.state.factory import create_state_store

_TIMEOUT_S = 30.0
_COLUMNS = (
    "requests",
    "errors",
    "fallbacks",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
)
# Shown only when the report has some (a gateway serving only text keeps its table as it was).
_MEDIA_COLUMNS = ("audio_input_tokens", "audio_output_tokens", "audio_seconds", "characters", "images")


async def run_usage(settings: Settings, days: int, group_by: str, url: str | None, as_json: bool) -> int:
    """Print usage of the last `days` UTC days: from `url`, else from Redis, else from the local gateway."""
    if not 1 <= days <= MAX_DAYS:
        raise PolyrouteError(f"--days must be between 1 and {MAX_DAYS}")
    if url is None and settings.redis_url is None:
        url = f"http://{settings.host}:{settings.port}"
    if url is not None:
        params = {"days": str(days), "group_by": group_by}
        report = await fetch_admin(
            url, "/admin/usage", params, settings.admin_key, total_s=_TIMEOUT_S, direct="POLYROUTE_REDIS_URL"
        )
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
    try:
        report = summarize(rows, group_by.split(","))
    except ValueError as exc:
        raise PolyrouteError(f"--group-by: {exc}") from None
    report["since"], report["until"] = since, today.isoformat()
    return report


async def fetch_admin(
    url: str,
    path: str,
    params: dict[str, str],
    admin_key: str | None,
    *,
    total_s: float,
    direct: str,
) -> dict[str, Any]:
    """GET an admin report from a running gateway (the CLI's `--url`); `direct` names what reads the store instead."""
    import aiohttp  # only the CLI asks a running gateway: a server does not pay for the import at startup

    headers = {"authorization": f"Bearer {admin_key}"} if admin_key else {}
    endpoint = f"{url.rstrip('/')}{path}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=total_s)) as session,
            session.get(endpoint, params=params, headers=headers) as resp,
        ):
            body = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise PolyrouteError(
            f"cannot reach a gateway at {url} ({type(exc).__name__}); pass --url, or set {direct} "
            "to read the shared store directly"
        ) from None
    if status != 200:
        raise PolyrouteError(f"{endpoint} answered {status}: {_error_message(body)}")
    data: dict[str, Any] = orjson.loads(body)
    return data


def _error_message(body: bytes) -> str:
    try:
        message = orjson.loads(body)["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return body[:300].decode(errors="replace")
    return str(message)


def _cell(column: str, value: Any) -> str:
    if column == "cost_usd":
        return f"{float(value):.6f}"
    return str(value)


def render_table(report: dict[str, Any]) -> str:
    """The report as an aligned text table, then each vendor's and hosting type's share of requests and spend."""
    dims: list[str] = report["group_by"]
    total = report["total"]
    columns = (*_COLUMNS, *(c for c in _MEDIA_COLUMNS if total.get(c)))
    cols = [*dims, *columns]
    rows = [[_cell(c, g.get(c, "")) for c in cols] for g in report["groups"]]
    label = ["TOTAL", *[""] * (len(dims) - 1)] if dims else []
    rows.append([*label, *(_cell(c, total[c]) for c in columns)])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = [f"usage {report.get('since')} .. {report.get('until')} (UTC days)"]
    lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    for dim in ("vendor", "hosting"):
        shares = report.get(f"share_by_{dim}", {})
        if shares:
            parts = [
                f"{name} {share['request_share']:.1%} of requests, {share['spend_share']:.1%} of spend "
                f"(${share['cost_usd']:.6f})"
                for name, share in shares.items()
            ]
            lines.append(f"share by {dim}: " + "; ".join(parts))
    return "\n".join(lines)
