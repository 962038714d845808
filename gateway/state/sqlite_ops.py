"""The SQLite store's transaction bodies: admission, sliding windows, budget counters, usage rows, routing facts.

Each function runs inside one transaction the caller opened (sqlite.SqliteStateStore._write) and follows the in-process
store's rules (memory.py, usage_rows.py, window.py) to the bucket and the micro-dollar.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import orjson

from gateway.state.base import (
    WINDOW_BUCKETS,
    AdmissionRequest,
    Counted,
    DeploymentQuota,
    UsageRecord,
    bucket_index,
    to_micro,
    utc_day,
    utc_month,
)
from gateway.state.facts import (
    FACT_KEY_LENGTH,
    FACT_RETENTION_DAYS,
    FactKey,
    tally_facts,
)
from gateway.state.memory import _excess, _tenant_reason
from gateway.state.usage_rows import USAGE_RETENTION_DAYS, UsageKey, tally_usage

Subject = tuple[str, str]  # (kind, name): ("tenant", "team-a"), ("deployment", "qwen-plus")


# --- one admission, as memory.MemoryStateStore.admit does it, on the database ---


def admit(db: sqlite3.Connection, request: AdmissionRequest) -> Counted:
    tenant: Subject = ("tenant", request.tenant)
    bucket, day, month = bucket_index(request.now), utc_day(request.now), utc_month(request.now)
    cost = to_micro(request.est_cost_usd)
    read = window_read(db, tenant, bucket)
    _, _, requests, used = read
    spent_day, spent_month = periods(db, request.tenant, day, month)
    reason = _tenant_reason(request, requests, used, spent_day + cost, spent_month + cost)
    chosen: DeploymentQuota | None = None
    saturated: tuple[DeploymentQuota, ...] = ()
    passes_at = 0
    if reason is None:
        chosen, saturated = walk(db, request.deployments, request.tokens, bucket)
        if request.deployments and chosen is None:
            reason = "deployments_saturated"
            passes_at = min(deployment_passes_at(db, q, request.tokens, bucket) for q in saturated)
    elif reason in ("tenant_rpm", "tenant_tpm"):
        excess_requests = _excess(request.tenant_rpm, requests, 1)
        passes_at = window_passes_at(
            db, tenant, bucket, excess_requests, _excess(request.tenant_tpm, used, request.tokens)
        )
    if reason is None:
        requests, used = window_add(db, tenant, bucket, 1, request.tokens, read)
        spent_day, spent_month = periods_add(db, request.tenant, day, month, cost, (spent_day, spent_month))
        if chosen is not None:
            count_deployment(db, chosen, request.tokens, bucket)
    return Counted(
        allowed=reason is None,
        reason=reason,
        deployment=chosen.name if chosen is not None else None,
        saturated=tuple(q.name for q in saturated),
        rpm_used=requests,
        tpm_used=used,
        spent_day_micro=spent_day,
        spent_month_micro=spent_month,
        passes_at_bucket=passes_at,
    )


def walk(
    db: sqlite3.Connection, quotas: Iterable[DeploymentQuota], tokens: int, bucket: int
) -> tuple[DeploymentQuota | None, tuple[DeploymentQuota, ...]]:
    chosen: DeploymentQuota | None = None
    saturated: list[DeploymentQuota] = []
    for q in quotas:
        if q.rpm is None and q.tpm is None:
            if chosen is None:
                chosen = q
            continue
        requests, used = window(db, ("deployment", q.name), bucket)
        if (q.rpm is not None and requests + 1 > q.rpm) or (q.tpm is not None and used + tokens > q.tpm):
            saturated.append(q)
        elif chosen is None:
            chosen = q
    return chosen, tuple(saturated)


def deployment_passes_at(db: sqlite3.Connection, quota: DeploymentQuota, tokens: int, bucket: int) -> int:
    subject: Subject = ("deployment", quota.name)
    requests, used = window(db, subject, bucket)
    return window_passes_at(db, subject, bucket, _excess(quota.rpm, requests, 1), _excess(quota.tpm, used, tokens))


def count_deployment(db: sqlite3.Connection, quota: DeploymentQuota, tokens: int, bucket: int) -> None:
    if quota.rpm is not None or quota.tpm is not None:
        window_add(db, ("deployment", quota.name), bucket, 1, tokens)


# --- sliding windows (window.py's rules): one row per subject and one-second bucket ---
#
# window.py keeps `lo`, the oldest bucket still counted, which only moves forward; here it is derived from the newest
# bucket stored, so that a worker whose clock runs behind still counts (and writes at or above) what the others see.


# The floor, the oldest bucket stored and the sums of a subject's window, in one statement (the floor as window_floor
# computes it; ?3 is the current bucket, ?4 WINDOW_BUCKETS - 1).
_WINDOW_READ = (
    "SELECT f.lo, f.oldest, coalesce(sum(w.requests), 0), coalesce(sum(w.tokens), 0) FROM"
    " (SELECT max(?3, coalesce(max(bucket), ?3)) - ?4 AS lo, min(bucket) AS oldest FROM window"
    " WHERE kind = ?1 AND name = ?2) AS f"
    " LEFT JOIN window AS w ON w.kind = ?1 AND w.name = ?2 AND w.bucket >= f.lo"
)
WindowRead = tuple[int, int | None, int, int]  # (floor, oldest bucket stored or None, requests, tokens)


def window_floor(db: sqlite3.Connection, subject: Subject, bucket: int) -> int:
    newest = db.execute("SELECT max(bucket) FROM window WHERE kind = ? AND name = ?", subject).fetchone()[0]
    return max(bucket, bucket if newest is None else int(newest)) - WINDOW_BUCKETS + 1


def window_read(db: sqlite3.Connection, subject: Subject, bucket: int) -> WindowRead:
    lo, oldest, requests, tokens = db.execute(_WINDOW_READ, (*subject, bucket, WINDOW_BUCKETS - 1)).fetchone()
    return int(lo), None if oldest is None else int(oldest), int(requests), int(tokens)


def window(db: sqlite3.Connection, subject: Subject, bucket: int) -> tuple[int, int]:
    _, _, requests, tokens = window_read(db, subject, bucket)
    return requests, tokens


def window_add(
    db: sqlite3.Connection,
    subject: Subject,
    bucket: int,
    requests: int,
    tokens: int,
    read: WindowRead | None = None,
) -> tuple[int, int]:
    """Count more (negative tokens: give them back, oldest bucket first); returns the window's new sums.

    `read`: what window_read returned for this subject and bucket earlier in the same transaction.
    """
    lo, oldest, held_requests, held_tokens = window_read(db, subject, bucket) if read is None else read
    if oldest is not None and oldest < lo:
        db.execute("DELETE FROM window WHERE kind = ? AND name = ? AND bucket < ?", (*subject, lo))
    add_requests, add_tokens = max(requests, 0), max(tokens, 0)
    if add_requests or add_tokens:
        # At or above the floor, which adding there does not move: the sums grow by what is added.
        db.execute(
            "INSERT INTO window VALUES (?, ?, ?, ?, ?) ON CONFLICT (kind, name, bucket) DO UPDATE"
            " SET requests = requests + excluded.requests, tokens = tokens + excluded.tokens",
            (*subject, max(bucket, lo), add_requests, add_tokens),
        )
    if tokens >= 0:
        return held_requests + add_requests, held_tokens + add_tokens
    amount = -tokens
    rows = db.execute(
        "SELECT bucket, tokens FROM window WHERE kind = ? AND name = ? AND tokens > 0 ORDER BY bucket", subject
    ).fetchall()
    for at, held in rows:
        if amount <= 0:
            break
        taken = min(amount, held)
        db.execute(
            "UPDATE window SET tokens = ? WHERE kind = ? AND name = ? AND bucket = ?", (held - taken, *subject, at)
        )
        amount -= taken
    return window(db, subject, bucket)


def window_passes_at(
    db: sqlite3.Connection, subject: Subject, bucket: int, excess_requests: int, excess_tokens: int
) -> int:
    rows = db.execute(
        "SELECT bucket, requests, tokens FROM window WHERE kind = ? AND name = ? AND bucket BETWEEN ? AND ?"
        " ORDER BY bucket",
        (*subject, window_floor(db, subject, bucket), bucket),
    )
    for at, requests, tokens in rows:
        excess_requests -= requests
        excess_tokens -= tokens
        if excess_requests <= 0 and excess_tokens <= 0:
            return int(at) + WINDOW_BUCKETS
    return bucket + WINDOW_BUCKETS


# --- budgets: integer counters that start from zero when their period (day, month) changes ---


def periods(db: sqlite3.Connection, tenant: str, day: str, month: str) -> tuple[int, int]:
    """What `tenant` spent this day and this month (micro-dollars), in one statement."""
    spent_day = spent_month = 0
    rows = db.execute(
        "SELECT kind, period, value FROM counter WHERE kind IN ('usd_day', 'usd_month') AND name = ?", (tenant,)
    )
    for kind, period, value in rows:
        if kind == "usd_day" and period == day:
            spent_day = int(value)
        elif kind == "usd_month" and period == month:
            spent_month = int(value)
    return spent_day, spent_month


def periods_add(
    db: sqlite3.Connection, tenant: str, day: str, month: str, delta: int, spent: tuple[int, int] | None = None
) -> tuple[int, int]:
    """Add `delta` to both periods (never below zero); `spent`: what periods() returned earlier in the transaction."""
    spent_day, spent_month = periods(db, tenant, day, month) if spent is None else spent
    if not delta:
        return spent_day, spent_month
    spent_day, spent_month = max(0, spent_day + delta), max(0, spent_month + delta)
    db.execute(
        "INSERT OR REPLACE INTO counter VALUES ('usd_day', ?1, ?2, ?3), ('usd_month', ?1, ?4, ?5)",
        (tenant, day, spent_day, month, spent_month),
    )
    return spent_day, spent_month


# --- usage rows and routing facts ---


def record_usage(db: sqlite3.Connection, records: Sequence[UsageRecord], facts_per_day: int, forgotten: str) -> str:
    """Add the records to the usage rows and routing facts; returns the day retention now runs up to.

    Rows past retention are deleted once per day a worker writes (`forgotten`: the day it last did), not per batch.
    """
    for day, rows in tally_usage(records).items():
        for key, counts in rows.items():
            text = orjson.dumps(key).decode()
            db.executemany(
                "INSERT INTO usage VALUES (?, ?, ?, ?) ON CONFLICT (day, key, counter) DO UPDATE"
                " SET value = value + excluded.value",
                [(day, text, name, value) for name, value in counts.items()],
            )
    for day, facts in tally_facts(records).items():
        stored = int(db.execute("SELECT count(*) FROM fact WHERE day = ?", (day,)).fetchone()[0])
        for fact, sums in facts.items():
            text = orjson.dumps(fact).decode()
            updated = db.execute(
                "UPDATE fact SET requests = requests + ?, input_tokens = input_tokens + ?,"
                " output_tokens = output_tokens + ?, cost_micro_usd = cost_micro_usd + ?, latency_us = latency_us + ?"
                " WHERE day = ? AND key = ?",
                (*sums, day, text),
            ).rowcount
            if updated:
                continue
            if stored >= facts_per_day:
                db.execute(
                    "INSERT INTO fact_dropped VALUES (?, ?) ON CONFLICT (day) DO UPDATE SET n = n + excluded.n",
                    (day, sums[0]),
                )
            else:
                db.execute("INSERT INTO fact VALUES (?, ?, ?, ?, ?, ?, ?)", (day, text, *sums))
                stored += 1
    today = max(utc_day(r.ts) for r in records)
    if today > forgotten:
        forget_old(db, today)
        return today
    return forgotten


def forget_old(db: sqlite3.Connection, today: str) -> None:
    start = datetime.strptime(today, "%Y-%m-%d").replace(tzinfo=UTC)
    db.execute(
        "DELETE FROM usage WHERE day < ?", ((start - timedelta(days=USAGE_RETENTION_DAYS)).strftime("%Y-%m-%d"),)
    )
    cutoff = (start - timedelta(days=FACT_RETENTION_DAYS)).strftime("%Y-%m-%d")
    db.execute("DELETE FROM fact WHERE day < ?", (cutoff,))
    db.execute("DELETE FROM fact_dropped WHERE day < ?", (cutoff,))


def usage_key(text: str) -> UsageKey:
    a, b, c, d, e, f, g = orjson.loads(text)
    return (a, b, c, d, e, f, g)


def fact_key(text: str) -> FactKey:
    parts = orjson.loads(text)
    if len(parts) != FACT_KEY_LENGTH:
        raise sqlite3.DataError("a stored routing fact has the wrong shape")
    return tuple(parts)
