"""The Redis key schema and Lua script arguments; hash tags keep each script's keys in one Cluster slot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from gateway.state.base import (
    WINDOW_BUCKETS,
    AdmissionRequest,
    Counted,
    DeploymentQuota,
    bucket_index,
    to_micro,
    utc_day,
    utc_month,
)
from gateway.state.usage_rows import USAGE_RETENTION_DAYS, UsageKey

PREFIX = "polyroute"
WINDOW_TTL_S = 120
DAY_TTL_S = 3 * 86_400
MONTH_TTL_S = 62 * 86_400
USAGE_TTL_S = USAGE_RETENTION_DAYS * 86_400
CIRCUIT_TTL_S = 86_400  # an open circuit that nobody reports on is forgotten a day after its cooldown


def lua(*names: str) -> str:
    """The text of scripts under gateway/state/lua/, joined (a library file first, then the script using it)."""
    folder = resources.files("gateway.state").joinpath("lua")
    return "\n".join(folder.joinpath(name).read_text(encoding="utf-8") for name in names)


def tenant_keys(tenant: str, now: float) -> list[str]:
    """The sliding window of requests and tokens, micro-USD spent this day and month; one hash tag, one Cluster slot."""
    tag = f"{PREFIX}:{{t:{tenant}}}"
    return [f"{tag}:window", f"{tag}:usd:{utc_day(now)}", f"{tag}:usd:{utc_month(now)}"]


def deployment_keys(quotas: Sequence[DeploymentQuota]) -> list[str]:
    """Every deployment shares one hash tag, so that one script can walk a plan's deployments even in Cluster."""
    return [f"{PREFIX}:{{deployments}}:{q.name}:window" for q in quotas]


def window_args(now: float) -> list[int]:
    """The bucket `now` falls in and how many buckets a window counts: the window.lua arguments of every script."""
    return [bucket_index(now), WINDOW_BUCKETS]


def circuit_keys(deployment: str) -> list[str]:
    tag = f"{PREFIX}:{{c:{deployment}}}"
    return [f"{tag}:open", f"{tag}:fails", f"{tag}:probe"]


def usage_key(day: str) -> str:
    """One hash per UTC day holds every usage row of that day."""
    return f"{PREFIX}:usage:{day}"


def limit_arg(value: int | None) -> int:
    """Scripts read -1 as "no limit"."""
    return -1 if value is None else value


def budget_arg(usd: float | None) -> int:
    return -1 if usd is None else to_micro(usd)


def quota_args(quotas: Sequence[DeploymentQuota]) -> list[int]:
    return [v for q in quotas for v in (limit_arg(q.rpm), limit_arg(q.tpm))]


def has_quota(quota: DeploymentQuota) -> bool:
    return quota.rpm is not None or quota.tpm is not None


def usage_field(key: UsageKey, counter: str) -> str:
    """A row's dimensions and one of its counters, as JSON so that any tenant or alias name round-trips."""
    return json.dumps([*key, counter], separators=(",", ":"), ensure_ascii=False)


def parse_usage_field(field: str) -> tuple[UsageKey, str] | None:
    """None for a field this schema did not write."""
    try:
        parts = json.loads(field)
    except ValueError:
        return None
    if not isinstance(parts, list) or len(parts) != 8 or not all(isinstance(p, str) for p in parts):
        return None
    return (parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], parts[6]), parts[7]


def admit_args(r: AdmissionRequest, quotas: Sequence[DeploymentQuota]) -> list[int]:
    """ARGV of admit.lua, with the deployments in `quotas` (none in Cluster mode's first step)."""
    return [
        r.tokens,
        to_micro(r.est_cost_usd),
        limit_arg(r.tenant_rpm),
        limit_arg(r.tenant_tpm),
        budget_arg(r.budget_day_usd),
        budget_arg(r.budget_month_usd),
        WINDOW_TTL_S,
        DAY_TTL_S,
        MONTH_TTL_S,
        *window_args(r.now),
        len(quotas),
        *quota_args(quotas),
    ]


def admit_reply(raw: list[Any], quotas: Sequence[DeploymentQuota]) -> Counted:
    """What admit.lua returned, with deployment numbers turned back into names."""
    allowed, reason, chosen, saturated, requests, used, day, month, passes_at = raw
    return Counted(
        allowed=bool(allowed),
        reason=reason or None,
        deployment=quotas[int(chosen) - 1].name if int(chosen) else None,
        saturated=tuple(quotas[int(i) - 1].name for i in saturated),
        rpm_used=int(requests),
        tpm_used=int(used),
        spent_day_micro=int(day),
        spent_month_micro=int(month),
        passes_at_bucket=int(passes_at),
    )
