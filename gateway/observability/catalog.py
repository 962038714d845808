"""What each metric is declared with: its HELP text (label meanings in OpenTelemetry GenAI terms) and its buckets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from gateway.observability import names

DURATION_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
TTFT_BUCKETS: Final = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 15.0, 30.0)
OVERHEAD_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
CONNECTION_WAIT_BUCKETS: Final = (0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
SIMILARITY_BUCKETS: Final = (0.1, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
RATIO_BUCKETS: Final = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 10.0)

_ALIAS = "alias = the model name the client sent (gen_ai.request.model as the client asked for it)"
_DEPLOYMENT = "deployment = gen_ai.request.model on gen_ai.provider.name, as named in the policy"
_PROVIDER = "provider = gen_ai.provider.name (policy entry); vendor and hosting come from that entry"

# HELP text of each metric; the label meanings follow OpenTelemetry GenAI attribute names.
HELP: Final[Mapping[str, str]] = {
    names.REQUESTS_TOTAL: f"Client requests finished, by HTTP status class. {_ALIAS}; {_DEPLOYMENT} "
    f"(none: no upstream reached); {_PROVIDER}.",
    names.REQUEST_DURATION_SECONDS: f"Client request duration from arrival to last byte. {_ALIAS}; {_DEPLOYMENT}.",
    names.TIME_TO_FIRST_TOKEN_SECONDS: "Time from request arrival to the first streamed token "
    f"(gen_ai.server.time_to_first_token). {_ALIAS}; {_DEPLOYMENT}.",
    names.OVERHEAD_SECONDS: "Time spent inside the gateway itself: request duration minus time waiting on upstreams.",
    names.UPSTREAM_REQUESTS_TOTAL: "Upstream attempts (a client request may make several), by outcome: success or "
    f"error class (error.type). {_DEPLOYMENT}; {_PROVIDER}.",
    names.TOKENS_TOTAL: "Tokens used; type = gen_ai.token.type (input, output; cached = the part of input served "
    "from cache, reasoning = the part of output spent reasoning, audio_input and audio_output = the audio part of "
    "input and output); estimated = true when the upstream reported no "
    f"usage. {_DEPLOYMENT}; {_PROVIDER}.",
    names.COST_USD_TOTAL: "Cost in US dollars: the deployment's policy price (CNY and EUR converted at "
    "POLYROUTE_USD_PER_CNY / POLYROUTE_USD_PER_EUR), its GPU-hour cost, or litellm's price map; from estimated "
    f"tokens when the upstream reported no usage. {_DEPLOYMENT}; {_PROVIDER}.",
    names.IMAGES_TOTAL: f"Images returned by the image endpoints (generations, edits). {_DEPLOYMENT}; {_PROVIDER}.",
    names.COST_TOTAL: "Cost in the currency of the deployment's price (currency = USD, CNY or EUR), unconverted, "
    f"so that an invoice in that currency reconciles without an exchange rate. {_DEPLOYMENT}; {_PROVIDER}.",
    names.DEPLOYMENT_DAYS_TO_RETIREMENT: "Days until the vendor retires a deployment's model (retires_on in the "
    f"policy; negative once past it). {_DEPLOYMENT}.",
    names.FALLBACKS_TOTAL: "Moves from one deployment (from) to the next (to) after an attempt failed with error "
    "class reason.",
    names.CIRCUIT_OPEN: f"1 while a deployment's circuit breaker is open (deployment skipped), else 0. {_DEPLOYMENT}.",
    names.INFLIGHT_REQUESTS: f"Client requests being served right now. {_ALIAS}.",
    names.RATE_LIMITED_TOTAL: "Requests refused with 429 by tenant limits or budgets, or because every deployment "
    "was saturated.",
    names.BUDGET_REMAINING_USD: "US dollars a tenant may still spend in the current budget period (day or month).",
    names.POLICY_RELOADS_TOTAL: "Policy reloads; a failed reload keeps the previous policy.",
    names.TRACE_SPANS_DROPPED_TOTAL: "Trace spans never exported (reason: queue_full = the batch queue was full, "
    "export_failed = the collector did not take them, exporter_exited = lost with a span exporter process that "
    "exited).",
    names.UPSTREAM_CONNECTION_WAIT_SECONDS: "How long requests that found all of a provider's max_connections in use "
    "waited for one (a stream holds its connection to the end; requests that did not wait are not counted; a wait "
    f"ended by the total timeout is). {_PROVIDER}.",
    names.STATE_STORE_ERRORS_TOTAL: "Failed state store operations (limits, budgets, shared circuits, usage records).",
    names.VENDOR_SHARE: "Each vendor's share (0-1) of the last day's requests, tokens or spend (by), from usage "
    "records; recomputed periodically.",
    names.VENDOR_HHI: "Vendor concentration of the last day's spend or tokens (by), as a Herfindahl-Hirschman index "
    "(0-10000; 10000 = one vendor).",
    names.ALIAS_STRANDED_SHARE: "Share (0-1) of an alias's recent traffic that no target outside its dominant vendor "
    f"may serve under the current rules. {_ALIAS}.",
    names.ALIAS_PORTABLE: "1 when the current rules let every recent request of an alias go to another vendor, "
    f"else 0; critical = the alias is marked critical in the policy. {_ALIAS}.",
    names.ENGINE_QUEUE: f"Requests waiting in a self-hosted engine, from its own metrics. {_DEPLOYMENT}.",
    names.ENGINE_RUNNING: f"Requests a self-hosted engine is running, from its own metrics. {_DEPLOYMENT}.",
    names.ENGINE_KV_USAGE: f"KV-cache use (0-1) a self-hosted engine reports. {_DEPLOYMENT}.",
    names.ENGINE_SIGNAL_AGE_SECONDS: f"Seconds since the engine's metrics were last read. {_DEPLOYMENT}.",
    names.ENGINE_SIGNAL_FALLBACK: "1 while routing uses polyroute's own in-flight count for a deployment (no engine "
    f"metrics, or older than three polls, or the engine did not answer), else 0. {_DEPLOYMENT}.",
    names.SPILL_ACTIVE: f"1 while a spill-over alias sends new requests past its first tier, else 0. {_ALIAS}.",
    names.SPILLS_TOTAL: f"Tier changes of a spill-over alias (from_tier, to_tier: 0 = first tier). {_ALIAS}.",
    names.AFFINITY_TOTAL: "Spill-over requests with an affinity key, by result: hit = sent to the deployment its "
    f"session hashes to, miss = moved off it (bounded load). Hit ratio = hit / (hit + miss). {_ALIAS}.",
    names.SHADOW_REQUESTS_TOTAL: "Shadow copies of sampled requests per alias and shadow target (a deployment), by "
    "result: compared, dropped_budget, dropped_concurrency, excluded (the request's rules exclude the target), error "
    "(the primary or the copy failed).",
    names.SHADOW_SIMILARITY: "Normalised text similarity (0-1) of a shadow target's answer to the primary's. "
    f"{_ALIAS}; target = the shadow deployment.",
    names.SHADOW_LATENCY_RATIO: "A shadow copy's latency divided by the primary's (non-stream copies: total time). "
    f"{_ALIAS}; target = the shadow deployment.",
    names.SHADOW_COST_RATIO: "A shadow copy's cost divided by the primary's. "
    f"{_ALIAS}; target = the shadow deployment.",
}
