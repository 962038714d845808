"""Every Prometheus metric name polyroute exports (DESIGN.md §3), declared once."""

from __future__ import annotations

from typing import Final

REQUESTS_TOTAL: Final = "polyroute_requests_total"
REQUEST_DURATION_SECONDS: Final = "polyroute_request_duration_seconds"
TIME_TO_FIRST_TOKEN_SECONDS: Final = "polyroute_time_to_first_token_seconds"
OVERHEAD_SECONDS: Final = "polyroute_overhead_seconds"
UPSTREAM_REQUESTS_TOTAL: Final = "polyroute_upstream_requests_total"
TOKENS_TOTAL: Final = "polyroute_tokens_total"
COST_USD_TOTAL: Final = "polyroute_cost_usd_total"
IMAGES_TOTAL: Final = "polyroute_images_total"
COST_TOTAL: Final = "polyroute_cost_total"
DEPLOYMENT_DAYS_TO_RETIREMENT: Final = "polyroute_deployment_days_to_retirement"
FALLBACKS_TOTAL: Final = "polyroute_fallbacks_total"
CIRCUIT_OPEN: Final = "polyroute_circuit_open"
INFLIGHT_REQUESTS: Final = "polyroute_inflight_requests"
RATE_LIMITED_TOTAL: Final = "polyroute_rate_limited_total"
BUDGET_REMAINING_USD: Final = "polyroute_budget_remaining_usd"
POLICY_RELOADS_TOTAL: Final = "polyroute_policy_reloads_total"
STATE_STORE_ERRORS_TOTAL: Final = "polyroute_state_store_errors_total"
VENDOR_SHARE: Final = "polyroute_vendor_share"
VENDOR_HHI: Final = "polyroute_vendor_hhi"
ALIAS_STRANDED_SHARE: Final = "polyroute_alias_stranded_share"
ALIAS_PORTABLE: Final = "polyroute_alias_portable"
ENGINE_QUEUE: Final = "polyroute_engine_queue"
ENGINE_RUNNING: Final = "polyroute_engine_running"
ENGINE_KV_USAGE: Final = "polyroute_engine_kv_usage"
ENGINE_SIGNAL_AGE_SECONDS: Final = "polyroute_engine_signal_age_seconds"
ENGINE_SIGNAL_FALLBACK: Final = "polyroute_engine_signal_fallback"
SPILL_ACTIVE: Final = "polyroute_spill_active"
SPILLS_TOTAL: Final = "polyroute_spills_total"
AFFINITY_TOTAL: Final = "polyroute_affinity_total"
SHADOW_REQUESTS_TOTAL: Final = "polyroute_shadow_requests_total"
SHADOW_SIMILARITY: Final = "polyroute_shadow_similarity"
SHADOW_LATENCY_RATIO: Final = "polyroute_shadow_latency_ratio"
SHADOW_COST_RATIO: Final = "polyroute_shadow_cost_ratio"
TRACE_SPANS_DROPPED_TOTAL: Final = "polyroute_trace_spans_dropped_total"
UPSTREAM_CONNECTION_WAIT_SECONDS: Final = "polyroute_upstream_connection_wait_seconds"

ALL: Final[tuple[str, ...]] = (
    REQUESTS_TOTAL,
    REQUEST_DURATION_SECONDS,
    TIME_TO_FIRST_TOKEN_SECONDS,
    OVERHEAD_SECONDS,
    UPSTREAM_REQUESTS_TOTAL,
    TOKENS_TOTAL,
    COST_USD_TOTAL,
    IMAGES_TOTAL,
    COST_TOTAL,
    DEPLOYMENT_DAYS_TO_RETIREMENT,
    FALLBACKS_TOTAL,
    CIRCUIT_OPEN,
    INFLIGHT_REQUESTS,
    RATE_LIMITED_TOTAL,
    BUDGET_REMAINING_USD,
    POLICY_RELOADS_TOTAL,
    STATE_STORE_ERRORS_TOTAL,
    VENDOR_SHARE,
    VENDOR_HHI,
    ALIAS_STRANDED_SHARE,
    ALIAS_PORTABLE,
    ENGINE_QUEUE,
    ENGINE_RUNNING,
    ENGINE_KV_USAGE,
    ENGINE_SIGNAL_AGE_SECONDS,
    ENGINE_SIGNAL_FALLBACK,
    SPILL_ACTIVE,
    SPILLS_TOTAL,
    AFFINITY_TOTAL,
    SHADOW_REQUESTS_TOTAL,
    SHADOW_SIMILARITY,
    SHADOW_LATENCY_RATIO,
    SHADOW_COST_RATIO,
    TRACE_SPANS_DROPPED_TOTAL,
    UPSTREAM_CONNECTION_WAIT_SECONDS,
)

# Histograms are exposed as <name>_bucket, <name>_sum and <name>_count series.
HISTOGRAMS: Final[frozenset[str]] = frozenset(
    {REQUEST_DURATION_SECONDS, TIME_TO_FIRST_TOKEN_SECONDS, OVERHEAD_SECONDS, SHADOW_SIMILARITY, SHADOW_LATENCY_RATIO,
     SHADOW_COST_RATIO, UPSTREAM_CONNECTION_WAIT_SECONDS}
)
