"""The lock-in and retirement gauges: recomputed periodically off the request path."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from gateway.observability.metrics import Metrics
from gateway.policy.retirement import days_to_retirement
from gateway.policy.table import PolicyTable
from gateway.portability.commands import lockin_from_store
from gateway.state.base import StateStore

_SHARE_KEYS = {"requests": "request_share", "tokens": "token_share", "spend": "spend_share"}


def publish(metrics: Metrics, report: dict[str, Any]) -> None:
    """Set every lock-in gauge from a report (vendors without traffic today show 0)."""
    vendor_shares = {
        (by, vendor): share[key]
        for vendor, share in report["share"]["vendor"].items()
        for by, key in _SHARE_KEYS.items()
    }
    aliases = report["aliases"]
    metrics.lockin(
        vendor_shares=vendor_shares,
        hhi=report["hhi"],
        stranded={name: a["stranded_share"] for name, a in aliases.items()},
        portable={name: a["other_vendor_allowed"] for name, a in aliases.items()},
        critical=frozenset(name for name, a in aliases.items() if a["critical"]),
    )


class LockinGauges:
    """What the accountant runs every POLYROUTE_LOCKIN_REFRESH_SECONDS."""

    def __init__(self, store: StateStore, table: Callable[[], PolicyTable], metrics: Metrics) -> None:
        self._store = store
        self._table = table  # the active policy at the time of each refresh
        self._metrics = metrics

    async def __call__(self) -> None:
        table = self._table()
        report = await lockin_from_store(self._store, table, days=1)
        vendors = {p.vendor for p in table.providers.values()}
        for vendor in vendors - report["share"]["vendor"].keys():
            report["share"]["vendor"][vendor] = {k: 0.0 for k in _SHARE_KEYS.values()}
        publish(self._metrics, report)


RETIREMENT_REFRESH_S = 3600.0  # days to retirement change once a day; hourly keeps the gauge within the hour


class RetirementGauge:
    """Sets `polyroute_deployment_days_to_retirement` for the active policy's retiring deployments."""

    def __init__(self, table: Callable[[], PolicyTable], metrics: Metrics) -> None:
        self._table = table
        self._metrics = metrics

    async def __call__(self) -> None:
        self._metrics.days_to_retirement(days_to_retirement(self._table(), datetime.now(UTC).date()))
