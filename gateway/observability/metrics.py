"""Prometheus metrics of one polyroute process: bounded label values, O(1) updates, one- or many-process exposition."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final, Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from gateway.observability import names
from gateway.observability.catalog import (
    CONNECTION_WAIT_BUCKETS,
    DURATION_BUCKETS,
    HELP,
    OVERHEAD_BUCKETS,
    RATIO_BUCKETS,
    SIMILARITY_BUCKETS,
    TTFT_BUCKETS,
)
from gateway.observability.labels import (
    BUDGET_PERIODS,
    CURRENCIES,
    HOSTINGS,
    LOCKIN_SHARE_BY,
    POLICY_RELOAD_RESULTS,
    RATE_LIMIT_REASONS,
    SHADOW_RESULTS,
    STATE_STORE_OPS,
    UPSTREAM_ERROR_CLASSES,
    UPSTREAM_OUTCOMES,
    Children,
    KnownLabels,
    bounded,
    clamp,
    flag_label,
    status_class,
)
from gateway.observability.multiprocess import check_files_land_in, check_multiprocess_mode, merged_registry

# Text format 0.0.4 is what generate_latest writes and what every Prometheus version scrapes.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

_IDENTITY_CACHE: Final = 4096
_TOKEN_TYPES: Final = ("input", "output", "cached", "reasoning", "audio_input", "audio_output")
_SPAN_DROP_REASONS: Final = ("queue_full", "export_failed", "exporter_exited")

_HOSTINGS: Final = bounded(HOSTINGS)
_OUTCOMES: Final = bounded(UPSTREAM_OUTCOMES)
_ERROR_CLASSES: Final = bounded(UPSTREAM_ERROR_CLASSES)
_RATE_LIMIT_REASONS: Final = bounded(RATE_LIMIT_REASONS)
_SHADOW_RESULTS: Final = bounded(SHADOW_RESULTS)
_BUDGET_PERIODS: Final = bounded(BUDGET_PERIODS)
_RELOAD_RESULTS: Final = bounded(POLICY_RELOAD_RESULTS)
_STATE_STORE_OPS: Final = bounded(STATE_STORE_OPS)
_CURRENCIES: Final = bounded(CURRENCIES)


_GaugeMode = Literal["livemax", "livesum", "mostrecent"]


class Metrics:
    """Every polyroute metric, registered in a registry this instance owns.

    With `multiprocess_dir`, each worker writes its values to files in that directory and `render` merges the
    files of all workers, so a scrape of any worker sees the whole server.
    """

    def __init__(self, *, multiprocess_dir: Path | None = None) -> None:
        check_multiprocess_mode(multiprocess_dir)
        self._known = KnownLabels()
        self._identities: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._registry = r = CollectorRegistry()

        def counter(name: str, *labels: str) -> Children[Counter]:
            return Children(Counter(name, HELP[name], labels, registry=r))

        def histogram(name: str, buckets: tuple[float, ...], *labels: str) -> Children[Histogram]:
            return Children(Histogram(name, HELP[name], labels, buckets=buckets, registry=r))

        def gauge(name: str, mode: _GaugeMode, *labels: str) -> Children[Gauge]:
            return Children(Gauge(name, HELP[name], labels, multiprocess_mode=mode, registry=r))

        identity = ("alias", "deployment", "provider", "vendor", "hosting", "tenant")
        self._requests = counter(names.REQUESTS_TOTAL, *identity, "status_class")
        self._duration = histogram(names.REQUEST_DURATION_SECONDS, DURATION_BUCKETS, "alias", "deployment", "stream")
        self._ttft = histogram(names.TIME_TO_FIRST_TOKEN_SECONDS, TTFT_BUCKETS, "alias", "deployment")
        self._overhead = Histogram(
            names.OVERHEAD_SECONDS, HELP[names.OVERHEAD_SECONDS], buckets=OVERHEAD_BUCKETS, registry=r
        )
        self._upstream = counter(names.UPSTREAM_REQUESTS_TOTAL, "deployment", "provider", "outcome")
        self._tokens = counter(names.TOKENS_TOTAL, *identity, "type", "estimated")
        self._cost = counter(names.COST_USD_TOTAL, *identity)
        self._images = counter(names.IMAGES_TOTAL, *identity)
        self._cost_native = counter(names.COST_TOTAL, *identity, "currency")
        self._retirement = gauge(names.DEPLOYMENT_DAYS_TO_RETIREMENT, "mostrecent", "deployment")
        self._retiring: frozenset[str] = frozenset()
        self._fallbacks = counter(names.FALLBACKS_TOTAL, "from", "to", "reason")
        # How worker files merge: a dead worker's circuits and in-flight requests stop counting (live*); the budget
        # left belongs to the tenant, not the worker, so the latest write of any worker wins.
        self._circuit = gauge(names.CIRCUIT_OPEN, "livemax", "deployment")
        self._inflight = gauge(names.INFLIGHT_REQUESTS, "livesum", "alias")
        self._budget = gauge(names.BUDGET_REMAINING_USD, "mostrecent", "tenant", "period")
        self._rate_limited = counter(names.RATE_LIMITED_TOTAL, "tenant", "reason")
        self._reloads = counter(names.POLICY_RELOADS_TOTAL, "result")
        self._state_errors = counter(names.STATE_STORE_ERRORS_TOTAL, "op")
        self._spans_dropped = counter(names.TRACE_SPANS_DROPPED_TOTAL, "reason")
        self._connection_wait = histogram(names.UPSTREAM_CONNECTION_WAIT_SECONDS, CONNECTION_WAIT_BUCKETS, "provider")
        # Computed from the shared usage by any worker: the latest computation wins.
        self._vendor_share = gauge(names.VENDOR_SHARE, "mostrecent", "by", "vendor")
        self._vendor_hhi = gauge(names.VENDOR_HHI, "mostrecent", "by")
        self._stranded = gauge(names.ALIAS_STRANDED_SHARE, "mostrecent", "alias")
        self._portable = gauge(names.ALIAS_PORTABLE, "mostrecent", "alias", "critical")
        self._engine = {
            key: gauge(name, "mostrecent", "deployment")
            for key, name in (
                ("queue", names.ENGINE_QUEUE),
                ("running", names.ENGINE_RUNNING),
                ("kv", names.ENGINE_KV_USAGE),
                ("age", names.ENGINE_SIGNAL_AGE_SECONDS),
                ("fallback", names.ENGINE_SIGNAL_FALLBACK),
            )
        }
        self._spill_active = gauge(names.SPILL_ACTIVE, "livemax", "alias")
        self._spills = counter(names.SPILLS_TOTAL, "alias", "from_tier", "to_tier")
        self._affinity = counter(names.AFFINITY_TOTAL, "alias", "result")
        self._shadow = counter(names.SHADOW_REQUESTS_TOTAL, "alias", "target", "result")
        self._shadow_similarity = histogram(names.SHADOW_SIMILARITY, SIMILARITY_BUCKETS, "alias", "target")
        self._shadow_latency = histogram(names.SHADOW_LATENCY_RATIO, RATIO_BUCKETS, "alias", "target")
        self._shadow_cost = histogram(names.SHADOW_COST_RATIO, RATIO_BUCKETS, "alias", "target")
        # Series that alerts use with rate() or increase() must exist before their first event.
        for result in sorted(POLICY_RELOAD_RESULTS):
            self._reloads(result)
        for op in sorted(STATE_STORE_OPS):
            self._state_errors(op)

        if multiprocess_dir is None:
            self._exposed = self._registry
        else:
            check_files_land_in(multiprocess_dir)
            self._exposed = merged_registry(multiprocess_dir)

    def set_known(
        self,
        *,
        aliases: Iterable[str],
        deployments: Iterable[str],
        providers: Iterable[str],
        vendors: Iterable[str],
        tenants: Iterable[str],
    ) -> None:
        """Declare the label values the policy defines; any other value is recorded as "other"."""
        previous = self._known
        known = KnownLabels(
            aliases=bounded(aliases),
            deployments=bounded(deployments),
            providers=bounded(providers),
            vendors=bounded(vendors),
            tenants=bounded(tenants),
        )
        self._known = known
        self._identities = {}
        for deployment in known.deployments.keys() - previous.deployments.keys():
            self._circuit(deployment)  # show every deployment, closed until told otherwise
        for deployment in previous.deployments.keys() - known.deployments.keys():
            self._circuit(deployment).set(0.0)  # a removed deployment is no longer routed to

    def request_done(
        self,
        *,
        alias: str,
        deployment: str,
        provider: str,
        vendor: str,
        hosting: str,
        tenant: str,
        status: int,
        duration_s: float,
        overhead_s: float,
        ttft_s: float | None,
        stream: bool,
    ) -> None:
        """Record one finished client request (any status, streamed or not)."""
        identity = self._identity(alias, deployment, provider, vendor, hosting, tenant)
        self._requests(*identity, status_class(status)).inc()
        self._duration(identity[0], identity[1], flag_label(stream)).observe(duration_s)
        self._overhead.observe(overhead_s)
        if ttft_s is not None:
            self._ttft(identity[0], identity[1]).observe(ttft_s)

    def _identity(
        self, alias: str, deployment: str, provider: str, vendor: str, hosting: str, tenant: str
    ) -> tuple[str, ...]:
        """The clamped identity labels, remembered: every request of a route repeats the same six values."""
        raw = (alias, deployment, provider, vendor, hosting, tenant)
        found = self._identities.get(raw)
        if found is None:
            k = self._known
            found = (
                clamp(alias, k.aliases),
                clamp(deployment, k.deployments),
                clamp(provider, k.providers),
                clamp(vendor, k.vendors),
                clamp(hosting, _HOSTINGS),
                clamp(tenant, k.tenants),
            )
            if len(self._identities) >= _IDENTITY_CACHE:
                self._identities.clear()  # what clients send is unbounded; the cache must not be
            self._identities[raw] = found
        return found

    def upstream_attempt(self, *, deployment: str, provider: str, outcome: str) -> None:
        """Record one attempt against an upstream: "success" or its error class."""
        k = self._known
        self._upstream(
            clamp(deployment, k.deployments), clamp(provider, k.providers), clamp(outcome, _OUTCOMES)
        ).inc()

    def tokens(
        self,
        *,
        alias: str,
        deployment: str,
        provider: str,
        vendor: str,
        hosting: str,
        tenant: str,
        input: int,  # shadows the builtin on purpose: the gen_ai.token.type name
        output: int,
        cached: int,
        reasoning: int,
        estimated: bool,
        audio_input: int = 0,
        audio_output: int = 0,
    ) -> None:
        """Add one request's token usage; zero counts create no series."""
        identity = self._identity(alias, deployment, provider, vendor, hosting, tenant)
        flag = flag_label(estimated)
        counts = (input, output, cached, reasoning, audio_input, audio_output)
        for token_type, count in zip(_TOKEN_TYPES, counts, strict=True):
            if count > 0:
                self._tokens(*identity, token_type, flag).inc(count)

    def images(
        self, *, alias: str, deployment: str, provider: str, vendor: str, hosting: str, tenant: str, count: int
    ) -> None:
        """Add the images one request returned."""
        if count > 0:
            self._images(*self._identity(alias, deployment, provider, vendor, hosting, tenant)).inc(count)

    def cost(
        self, *, alias: str, deployment: str, provider: str, vendor: str, hosting: str, tenant: str, usd: float
    ) -> None:
        """Add one request's cost in US dollars; zero, negative or NaN amounts are ignored."""
        if not usd > 0:
            return
        self._cost(*self._identity(alias, deployment, provider, vendor, hosting, tenant)).inc(usd)

    def cost_in_currency(
        self,
        *,
        alias: str,
        deployment: str,
        provider: str,
        vendor: str,
        hosting: str,
        tenant: str,
        amount: float,
        currency: str,
    ) -> None:
        """Add one request's cost in its price's own currency; zero, negative or NaN amounts are ignored."""
        if not amount > 0:
            return
        identity = self._identity(alias, deployment, provider, vendor, hosting, tenant)
        self._cost_native(*identity, clamp(currency, _CURRENCIES)).inc(amount)

    def days_to_retirement(self, days: Mapping[str, int]) -> None:
        """Set each retiring deployment's days left (the policy's `retires_on`); a deployment no longer retiring (a
        reload removed its date or the deployment) loses its series."""
        labels = {clamp(deployment, self._known.deployments): left for deployment, left in days.items()}
        for gone in self._retiring - labels.keys():
            self._retirement.remove(gone)
        for label, left in labels.items():
            self._retirement(label).set(left)
        self._retiring = frozenset(labels)

    def fallback(self, *, from_deployment: str, to_deployment: str, reason: str) -> None:
        """Record a move to the next deployment after an attempt failed with error class `reason`."""
        k = self._known
        self._fallbacks(
            clamp(from_deployment, k.deployments),
            clamp(to_deployment, k.deployments),
            clamp(reason, _ERROR_CLASSES),
        ).inc()

    def lockin(
        self,
        *,
        vendor_shares: Mapping[tuple[str, str], float],
        hhi: Mapping[str, float],
        stranded: Mapping[str, float],
        portable: Mapping[str, bool],
        critical: frozenset[str] = frozenset(),
    ) -> None:
        """Publish the lock-in report's numbers: vendor shares keyed (by, vendor), HHI by `by`, per-alias values
        (`critical` names the aliases a vendor drill must not strand: the label alerts select on)."""
        for (by, vendor), share in vendor_shares.items():
            if by in LOCKIN_SHARE_BY:
                self._vendor_share(by, clamp(vendor, self._known.vendors)).set(share)
        for by, value in hhi.items():
            if by in LOCKIN_SHARE_BY:
                self._vendor_hhi(by).set(value)
        for alias, share in stranded.items():
            self._stranded(clamp(alias, self._known.aliases)).set(share)
        for alias, ok in portable.items():
            label = clamp(alias, self._known.aliases)
            is_critical = alias in critical
            self._portable.remove(label, flag_label(not is_critical))  # the flag changed with a reload
            self._portable(label, flag_label(is_critical)).set(1.0 if ok else 0.0)

    def circuit(self, *, deployment: str, is_open: bool) -> None:
        """Record that a deployment's circuit breaker opened or closed."""
        self._circuit(clamp(deployment, self._known.deployments)).set(1.0 if is_open else 0.0)

    def inflight(self, *, alias: str, delta: int) -> None:
        """Add `delta` (+1 on arrival, -1 when the response ends) to the in-flight count of an alias."""
        self._inflight(clamp(alias, self._known.aliases)).inc(delta)

    def engine_load(
        self, *, deployment: str, queue: float, running: float, kv: float | None, age_s: float | None, fallback: bool
    ) -> None:
        """Publish one deployment's engine signals (kv and age left out when unknown)."""
        label = clamp(deployment, self._known.deployments)
        g = self._engine
        g["queue"](label).set(queue)
        g["running"](label).set(running)
        g["fallback"](label).set(1.0 if fallback else 0.0)
        if kv is not None:
            g["kv"](label).set(kv)
        if age_s is not None:
            g["age"](label).set(age_s)

    def spill(self, *, alias: str, from_tier: int, to_tier: int) -> None:
        """Record a spill-over alias moving its new requests from one tier to another."""
        label = clamp(alias, self._known.aliases)
        self._spill_active(label).set(1.0 if to_tier > 0 else 0.0)
        if from_tier != to_tier:
            self._spills(label, str(min(from_tier, 9)), str(min(to_tier, 9))).inc()

    def affinity(self, *, alias: str, hit: bool) -> None:
        """Record whether a request with an affinity key reached the deployment its key hashes to."""
        self._affinity(clamp(alias, self._known.aliases), "hit" if hit else "miss").inc()

    def shadow(self, *, alias: str, target: str, result: str) -> None:
        """Count one shadow copy by result (see SHADOW_RESULTS)."""
        labels = clamp(alias, self._known.aliases), clamp(target, self._known.deployments)
        self._shadow(*labels, clamp(result, _SHADOW_RESULTS)).inc()

    def shadow_compared(
        self, *, alias: str, target: str, similarity: float, latency_ratio: float | None, cost_ratio: float | None
    ) -> None:
        """Record one compared pair's agreement and its latency and cost relative to the primary."""
        labels = clamp(alias, self._known.aliases), clamp(target, self._known.deployments)
        self._shadow_similarity(*labels).observe(similarity)
        if latency_ratio is not None:
            self._shadow_latency(*labels).observe(latency_ratio)
        if cost_ratio is not None:
            self._shadow_cost(*labels).observe(cost_ratio)

    def rate_limited(self, *, tenant: str, reason: str) -> None:
        """Record a request refused with 429."""
        self._rate_limited(clamp(tenant, self._known.tenants), clamp(reason, _RATE_LIMIT_REASONS)).inc()

    def budget_remaining(self, *, tenant: str, period: str, usd: float) -> None:
        """Set what a tenant may still spend in `period` ("day" or "month")."""
        self._budget(clamp(tenant, self._known.tenants), clamp(period, _BUDGET_PERIODS)).set(usd)

    def policy_reload(self, *, result: str) -> None:
        """Record a policy reload: "success" or "error" (rejected, the previous policy kept)."""
        self._reloads(clamp(result, _RELOAD_RESULTS)).inc()

    def state_store_error(self, *, op: str) -> None:
        """Record a failed state store operation."""
        self._state_errors(clamp(op, _STATE_STORE_OPS)).inc()

    def upstream_connection_wait(self, provider: str, seconds: float) -> None:
        """Record a request that waited `seconds` for a free connection of `provider` (none free at once)."""
        self._connection_wait(clamp(provider, self._known.providers)).observe(seconds)

    def spans_dropped(self, *, reason: str, count: int) -> None:
        """Record trace spans that were never exported: "queue_full", "export_failed" or "exporter_exited"."""
        self._spans_dropped(reason if reason in _SPAN_DROP_REASONS else "export_failed").inc(count)

    def render(self) -> tuple[bytes, str]:
        """The Prometheus text exposition of this process, or of all workers in multi-process mode."""
        return generate_latest(self._exposed), CONTENT_TYPE
