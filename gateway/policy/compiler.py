"""Compile a validated policy spec into the frozen runtime table the server routes on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

from gateway.policy.parse_spec import key_hash
from gateway.policy.pricing import CurrencyRates, resolve_price
from gateway.policy.schema import (
    AliasSpec,
    PolicySpec,
    ProviderSpec,
    RequireSpec,
    ShadowSpec,
    ThinkingSpec,
    WhenSpec,
)
from gateway.policy.table import (
    METRICLESS_ENGINES,
    Alias,
    Budget,
    CircuitBreakerPolicy,
    Condition,
    Deployment,
    FallbackPolicy,
    Hosting,
    IntRange,
    Limits,
    LoadMark,
    PolicyTable,
    Protocol,
    Provider,
    Requirement,
    Retries,
    Rule,
    Shadow,
    Spillover,
    Strategy,
    Tenant,
    Thinking,
    Timeouts,
)


def compile_policy(spec: PolicySpec, fx: CurrencyRates, source: str) -> PolicyTable:
    """The frozen runtime table of a policy spec that has no problems; `source` names where it was read."""
    providers = {
        name: Provider(
            name=name,
            type=p.type,
            hosting=p.hosting,
            jurisdiction=p.jurisdiction.lower(),  # `CN` and `cn` must be the same place for `jurisdiction_not`
            vendor=p.vendor.lower(),
            base_url=None if p.base_url is None else p.base_url.rstrip("/"),
            api_key=p.api_key or None,
            litellm_prefix=p.litellm_prefix,
            headers=tuple(p.headers.items()),
            max_connections=p.max_connections,
            protocols=frozenset(p.protocols),
            native_urls=native_urls(p),
            engine=p.engine,
            metrics_url=metrics_url(p),
            poll_s=p.poll,
        )
        for name, p in spec.providers.items()
    }
    deployments = {
        name: Deployment(
            name=name,
            provider=providers[d.provider],
            model=d.model,
            context_window=d.context_window,
            price=resolve_price(d, providers[d.provider], fx),
            rpm=d.rpm,
            tpm=d.tpm,
            capabilities=frozenset(d.capabilities),
            max_output_tokens=d.max_output_tokens,
            thinking=_thinking(d.thinking),
            retires_on=d.retires_on,
            replaced_by=d.replaced_by,
            kind=d.kind,
            image_api=d.image_api,
        )
        for name, d in spec.deployments.items()
    }
    aliases = {
        name: Alias(
            name=name,
            targets=tuple(a.targets),
            strategy=a.strategy,
            weights=tuple(a.weights or ()),
            critical=a.critical,
            tiers=_tiers(a, providers, spec) if a.strategy is Strategy.SPILLOVER else (),
            spillover=_spillover(a) if a.strategy is Strategy.SPILLOVER else None,
            shadow=_shadow(a.shadow) if a.shadow is not None else None,
            kind=deployments[a.targets[0]].kind if a.targets else "chat",
        )
        for name, a in spec.aliases.items()
    }
    rules = tuple(
        Rule(name=r.name, when=_condition(r.when), require=_requirement(r.require), route=r.route) for r in spec.rules
    )
    f, breaker = spec.fallback, spec.fallback.circuit_breaker
    fallback = FallbackPolicy(
        on=frozenset(error_class.value for error_class in f.on),
        retries=Retries(f.retries.attempts, f.retries.backoff, f.retries.max_backoff),
        timeouts=Timeouts(f.timeouts.connect, f.timeouts.first_token, f.timeouts.total),
        circuit_breaker=CircuitBreakerPolicy(breaker.failures, breaker.window, breaker.cooldown),
    )
    tenants = {
        name: Tenant(
            name=name,
            key_hashes=frozenset(key_hash(entry) for entry in t.api_keys),  # the plaintext stops here
            models=_frozen(t.models),
            limits=Limits(rpm=t.limits.rpm, tpm=t.limits.tpm),
            budget=Budget(usd_per_day=t.budget.usd_per_day, usd_per_month=t.budget.usd_per_month),
            anonymous=t.anonymous,
        )
        for name, t in spec.tenants.items()
    }
    return PolicyTable(
        providers=providers,
        deployments=deployments,
        aliases=aliases,
        rules=rules,
        fallback=fallback,
        tenants=tenants,
        source=source,
        key_index={digest: t.name for t in tenants.values() for digest in t.key_hashes},
        sensitive_data_classes=frozenset(spec.sensitive_data_classes),
    )


# What each protocol's SDK appends to the base URL it is given (`base_urls`), and what is appended to `base_url`
# (an OpenAI-style `.../v1`) when a provider speaks the protocol at the same root, as vLLM and Ollama do.
_SDK_PATHS = {Protocol.RESPONSES: "/responses", Protocol.MESSAGES: "/v1/messages"}
_SAME_ROOT_PATHS = {Protocol.RESPONSES: "/responses", Protocol.MESSAGES: "/messages"}


def native_urls(p: ProviderSpec) -> tuple[tuple[Protocol, str], ...]:
    """The URL of each non-chat protocol a provider speaks natively (see README, "Coding agents")."""
    urls: list[tuple[Protocol, str]] = []
    for protocol in sorted(set(p.protocols) - {Protocol.CHAT}):
        given = p.base_urls.get(protocol.value)  # type: ignore[call-overload]
        if given is not None:
            urls.append((protocol, given.rstrip("/") + _SDK_PATHS[protocol]))
        elif p.base_url is not None:
            urls.append((protocol, p.base_url.rstrip("/") + _SAME_ROOT_PATHS[protocol]))
    return tuple(urls)


def metrics_url(p: ProviderSpec) -> str | None:
    """Where an engine's Prometheus metrics are read: `metrics_url`, else the base URL's origin + `/metrics`."""
    if p.engine in METRICLESS_ENGINES:
        return None
    if p.metrics_url is not None:
        return p.metrics_url
    if p.base_url is None:
        return None
    parts = urlsplit(p.base_url)
    return urlunsplit((parts.scheme, parts.netloc, "/metrics", "", ""))


def _tiers(a: AliasSpec, providers: Mapping[str, Provider], spec: PolicySpec) -> tuple[tuple[str, ...], ...]:
    """Explicit tiers as written; by default self-hosted targets first, then cloud ones (empty tiers dropped)."""
    if a.tiers is not None:
        return tuple(tuple(tier) for tier in a.tiers)
    hosting = {t: providers[spec.deployments[t].provider].hosting for t in a.targets}
    local = tuple(t for t in a.targets if hosting[t] is Hosting.SELF_HOSTED)
    cloud = tuple(t for t in a.targets if hosting[t] is not Hosting.SELF_HOSTED)
    return tuple(tier for tier in (local, cloud) if tier)


def _spillover(a: AliasSpec) -> Spillover:
    s, d = a.spillover, Spillover()
    if s is None:
        return Spillover(on_saturation=a.on_saturation or d.on_saturation)
    return Spillover(
        high=LoadMark(queue=_or(s.high.queue, d.high.queue), kv=_or(s.high.kv, d.high.kv)),
        low=LoadMark(queue=_or(s.low.queue, d.low.queue), kv=_or(s.low.kv, d.low.kv)),
        dwell_s=s.dwell,
        on_saturation=a.on_saturation or d.on_saturation,
        max_wait_s=s.max_wait,
        balance=s.balance,
    )


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _frozen(values: list[str] | None, normalize: Callable[[str], str] = str) -> frozenset[str] | None:
    return None if values is None else frozenset(normalize(v) for v in values)


def _thinking(spec: ThinkingSpec | None) -> Thinking | None:
    if spec is None:
        return None
    return Thinking(
        default_on=spec.default, stream_only=spec.stream_only, max_budget=spec.max_budget, preserve=spec.preserve
    )


def _condition(when: WhenSpec) -> Condition:
    r = when.prompt_tokens
    return Condition(
        data_class=_frozen(when.data_class, str.lower),
        tenant=_frozen(when.tenant),
        alias=_frozen(when.alias),
        tags_any=_frozen(when.tags, str.lower),
        prompt_tokens=None if r is None else IntRange(gt=r.gt, gte=r.gte, lt=r.lt, lte=r.lte),
        stream=when.stream,
    )


def _requirement(require: RequireSpec | None) -> Requirement | None:
    if require is None:
        return None
    return Requirement(
        hosting=require.hosting,
        jurisdiction=_frozen(require.jurisdiction, str.lower),
        jurisdiction_not=frozenset(v.lower() for v in require.jurisdiction_not),
        vendor=_frozen(require.vendor, str.lower),
        vendor_not=frozenset(v.lower() for v in require.vendor_not),
        deployments=_frozen(require.deployments),
        min_context_window=require.min_context_window,
    )


def _shadow(s: ShadowSpec) -> Shadow:
    return Shadow(
        targets=tuple(s.targets), sample=s.sample, max_concurrency=s.max_concurrency,
        budget_usd_per_day=s.budget_usd_per_day, record=s.record,
    )
