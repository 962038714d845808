"""The resolved policy table as text for humans (`polyroute policy check`); never shows provider or client keys."""

from __future__ import annotations

from urllib.parse import urlsplit

from gateway.policy.durations import format_duration
from gateway.policy.table import Condition, FallbackPolicy, PolicyTable, Price, Rule, Thinking

_API = {"dashscope": "Model Studio native image API"}


def describe_policy(table: PolicyTable) -> str:
    """The resolved table for humans (`polyroute policy check`); never shows provider or client keys."""
    lines = [f"policy: {table.source}", "", f"providers ({len(table.providers)}):"]
    for p in table.providers.values():
        where = _public_url(p.base_url) if p.base_url else "litellm default endpoint"
        extra = f", headers: {', '.join(sorted(k for k, _ in p.headers))}" if p.headers else ""
        key = "api key set" if p.api_key else "no api key"
        lines.append(
            f"  {p.name}: {p.type} ({p.litellm_prefix or _API.get(p.type, 'openai-compatible')}), {p.hosting.value}, "
            f"jurisdiction {p.jurisdiction}, vendor {p.vendor}, {where}, {key}{extra}"
        )
        lines += [f"    speaks {protocol.value} natively at {_public_url(url)}" for protocol, url in p.native_urls]
        if p.metrics_url is not None:
            where = _public_url(p.metrics_url)
            lines.append(f"    engine {p.engine.value}: load read from {where} every {p.poll_s:g}s")
    lines += ["", f"deployments ({len(table.deployments)}):"]
    for d in table.deployments.values():
        context = f"context {d.context_window:,}" if d.context_window else "context unknown"
        limits = "".join(f", {value:,} {unit}" for value, unit in ((d.rpm, "rpm"), (d.tpm, "tpm")) if value)
        caps = f", capabilities {', '.join(sorted(d.capabilities))}" if d.capabilities else ""
        caps += _thinking(d.thinking) if d.thinking else ""
        if d.kind != "chat":
            api = f" ({d.image_api} API)" if d.image_api else ""
            caps += f", kind {d.kind}{api}"
        lines.append(f"  {d.name}: {d.provider.name} / {d.model}, {context}, {_price(d.price)}{limits}{caps}")
    lines += ["", f"aliases ({len(table.aliases)}):"]
    for a in table.aliases.values():
        targets = ", ".join(
            f"{t} x{w:g}" for t, w in zip(a.targets, a.weights, strict=True)
        ) if a.weights else ", ".join(a.targets)
        kind = f" ({a.kind})" if a.kind != "chat" else ""
        lines.append(f"  {a.name}{kind}: {a.strategy.value} -> {targets}")
        if a.spillover is not None:
            s = a.spillover
            tiers = " | ".join(", ".join(tier) for tier in a.tiers)
            lines.append(
                f"    tiers: {tiers}; spill above queue {s.high.queue:g} or kv {s.high.kv:g}, back after "
                f"{s.dwell_s:g}s under queue {s.low.queue:g} and kv {s.low.kv:g}; when saturated: "
                f"{s.on_saturation.value}"
            )
    lines += ["", f"rules ({len(table.rules)}, top to bottom):"]
    lines += [f"  {i}. {r.name}: when {_when(r.when)} -> {_then(r)}" for i, r in enumerate(table.rules, 1)]
    lines += ["", *_fallback(table.fallback), "", f"tenants ({len(table.tenants)}):"]
    if table.open_access:
        lines.append("  none declared: every caller is served as one anonymous tenant, with any or no key")
    for t in table.tenants.values():
        models = ", ".join(sorted(t.models)) if t.models is not None else "all aliases"
        keys = f"{len(t.key_hashes)} key{'s' if len(t.key_hashes) != 1 else ''}"
        limits = ", ".join(f"{v:,} {u}" for v, u in ((t.limits.rpm, "rpm"), (t.limits.tpm, "tpm")) if v) or "no limits"
        spend = ((t.budget.usd_per_day, "day"), (t.budget.usd_per_month, "month"))
        budget = ", ".join(f"${v:g}/{u}" for v, u in spend if v is not None) or "no budget"
        anonymous = ", anonymous (no key needed)" if t.anonymous else ""
        lines.append(f"  {t.name}: {keys}, models {models}, {limits}, {budget}{anonymous}")
    return "\n".join(lines) + "\n"


def _public_url(url: str) -> str:
    """A base URL without credentials or query (either may carry a secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    netloc += f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{netloc}{parts.path}" + ("?..." if parts.query else "")


def _price(price: Price) -> str:
    if price.source == "unknown":
        return "price unknown (costs count as $0)"
    if price.per_image:
        per_image = ", ".join(f"{key} ${usd:.4g}" for key, usd in price.per_image)
        return f"per image: {per_image} (USD, from {price.source})"
    cached = f", cached ${price.cached_input_per_mtok_usd:.4g}" if price.cached_input_per_mtok_usd is not None else ""
    text = (
        f"${price.input_per_mtok_usd:.4g} in / ${price.output_per_mtok_usd:.4g} out{cached} per 1M tokens "
        f"(USD, from {price.source})"
    )
    if len(price.tiers) > 1:
        bounds = ", ".join(f"<={t.max_input_tokens}" if t.max_input_tokens else "above" for t in price.tiers)
        text += f"; {len(price.tiers)} tiers by input tokens ({bounds}), the first shown"
    for entry in price.later:
        text += f"; {entry.entry}: ${entry.input_per_mtok_usd:.4g} in / ${entry.output_per_mtok_usd:.4g} out"
    return text


def _when(c: Condition) -> str:
    sets = (("data_class", c.data_class), ("tenant", c.tenant), ("alias", c.alias), ("tags", c.tags_any))
    parts = [f"{label} in [{', '.join(sorted(values))}]" for label, values in sets if values is not None]
    if c.prompt_tokens is not None:
        r = c.prompt_tokens
        ops = ((">", r.gt), (">=", r.gte), ("<", r.lt), ("<=", r.lte))
        parts.append("prompt_tokens " + " and ".join(f"{op} {v:,}" for op, v in ops if v is not None))
    if c.stream is not None:
        parts.append(f"stream is {str(c.stream).lower()}")
    return " and ".join(parts) or "always"


def _then(rule: Rule) -> str:
    parts = []
    if (r := rule.require) is not None:
        sets = (("jurisdiction", r.jurisdiction), ("vendor", r.vendor), ("deployment", r.deployments))
        excluded = (("jurisdiction", r.jurisdiction_not), ("vendor", r.vendor_not))
        parts += [f"hosting {r.hosting.value}"] if r.hosting is not None else []
        parts += [f"{label} in [{', '.join(sorted(v))}]" for label, v in sets if v is not None]
        parts += [f"{label} not in [{', '.join(sorted(v))}]" for label, v in excluded if v]
        parts += [f"context window >= {r.min_context_window:,}"] if r.min_context_window else []
    require = f"require {' and '.join(parts)}" if parts else ""
    route = f"route to alias {rule.route}" if rule.route else ""
    return "; ".join(p for p in (require, route) if p)


def _fallback(f: FallbackPolicy) -> list[str]:
    r, t, c = f.retries, f.timeouts, f.circuit_breaker
    return [
        "fallback:",
        f"  on: {', '.join(sorted(f.on))}",
        f"  retries: {r.attempts} (backoff {format_duration(r.backoff_s)}, at most {format_duration(r.max_backoff_s)})",
        (
            f"  timeouts: connect {format_duration(t.connect_s)}, first token {format_duration(t.first_token_s)}, "
            f"total {format_duration(t.total_s)}"
        ),
        (
            f"  circuit breaker: opens after {c.failures} failures in {format_duration(c.window_s)}, "
            f"cooldown {format_duration(c.cooldown_s)}"
        ),
    ]


def _thinking(t: Thinking) -> str:
    """How Messages requests translated for the deployment ask for thinking (its `thinking:` block)."""
    parts = [] if t.default_on is None else [f"default {'on' if t.default_on else 'off'}"]
    parts += ["stream only"] if t.stream_only else []
    parts += [f"max budget {t.max_budget:,}"] if t.max_budget else []
    parts += ["preserve"] if t.preserve else []
    return f", thinking: {', '.join(parts) or 'as asked'}"
