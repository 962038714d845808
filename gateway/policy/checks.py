"""Checks that span policy entries (references between sections, names, consistent fields), each at its YAML path."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date

from gateway.policy.parse_spec import SECTIONS, Loc, ParsedPolicy, Problem, key_hash
from gateway.policy.schema import (
    AliasSpec,
    DeploymentSpec,
    FallbackSpec,
    PriceSpec,
    ProviderSpec,
    RuleSpec,
    TenantSpec,
)
from gateway.policy.table import METRICLESS_ENGINES, Protocol, Strategy


def check_policy(parsed: ParsedPolicy) -> list[Problem]:
    """Every problem of a parsed policy, schema ones included, in the order of the file (section, then entry)."""
    spec = parsed.spec
    names = {section: frozenset(written) for section, written in parsed.names.items()}
    found = _check_names(parsed.names)
    found += _check_providers(spec.providers)
    found += _check_deployments(spec.deployments, names["providers"], names["deployments"])
    found += _check_aliases(spec.aliases, names["deployments"])
    found += _check_kinds(spec.deployments, spec.providers, spec.aliases)
    found += _check_audio_providers(spec.deployments, spec.providers)
    found += _check_rules(dict(zip(parsed.rule_index, spec.rules, strict=True)), names)
    found += _check_fallback(spec.fallback)
    found += _check_tenants(spec.tenants, names["aliases"])
    # A field that already failed validation needs no second message (about its default, say).
    failed_fields = {p.loc[:3] for p in parsed.problems}
    problems = list(parsed.problems) + [p for p in found if len(p.loc) < 3 or p.loc[:3] not in failed_fields]
    section_rank = {name: index for index, name in enumerate(SECTIONS)}
    entry_rank = {(section, name): i for section, written in parsed.names.items() for i, name in enumerate(written)}

    def position(problem: Problem) -> tuple[int, int]:
        if not problem.loc:
            return (-2, 0)
        section = str(problem.loc[0])
        entry = problem.loc[1] if len(problem.loc) > 1 else -1
        index = entry if isinstance(entry, int) else entry_rank.get((section, entry), -1)
        return (section_rank.get(section, -1), index)

    return sorted(problems, key=position)


# Names end up in HTTP headers, metrics labels and the `model` field clients send.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
_NAME_RULE = "a name may use letters, digits and . _ - : / @ + (starting with a letter or digit)"


def _check_names(names: Mapping[str, tuple[str, ...]]) -> list[Problem]:
    return [Problem((s, n), _NAME_RULE) for s, ns in names.items() for n in sorted(ns) if not _NAME.match(n)]


def _check_providers(providers: Mapping[str, ProviderSpec]) -> list[Problem]:
    problems: list[Problem] = []
    for name, p in providers.items():
        loc: Loc = ("providers", name)
        if p.type in ("openai", "dashscope") and p.base_url is None:
            problems.append(Problem((*loc, "base_url"), f"required for a{'n' if p.type == 'openai' else ''} "
                                                         f"{p.type} provider"))
        if p.type == "litellm" and not p.litellm_prefix:
            problems.append(Problem((*loc, "litellm_prefix"), "required for a litellm provider (e.g. anthropic)"))
        if p.type != "litellm" and p.litellm_prefix is not None:
            problems.append(Problem((*loc, "litellm_prefix"), "only used by litellm providers"))
        problems += _check_protocols(p, loc)
        if p.engine not in METRICLESS_ENGINES and p.metrics_url is None and p.base_url is None:
            problems.append(Problem((*loc, "metrics_url"), f"required for engine {p.engine.value} without base_url"))
        if p.metrics_url is not None and p.engine in METRICLESS_ENGINES:
            problems.append(Problem((*loc, "metrics_url"), f"engine {p.engine.value} has no metrics to read"))
    return problems


def _check_protocols(p: ProviderSpec, loc: Loc) -> list[Problem]:
    """`chat` is the protocol every request can be translated to, so every provider must speak it."""
    problems: list[Problem] = []
    if Protocol.CHAT not in p.protocols:
        problems.append(Problem((*loc, "protocols"), "must include chat (every provider serves Chat Completions)"))
    seen: set[Protocol] = set()
    for index, protocol in enumerate(p.protocols):
        if protocol in seen:
            problems.append(Problem((*loc, "protocols", index), f"{protocol.value} is listed twice"))
        seen.add(protocol)
        if p.type == "litellm" and protocol is not Protocol.CHAT:
            problems.append(
                Problem((*loc, "protocols", index), "a litellm provider speaks only chat (polyroute translates)")
            )
    for name in p.base_urls:
        if Protocol(name) not in seen:
            problems.append(Problem((*loc, "base_urls", name), f"{name} is not listed in protocols"))
    return problems


def _check_price(price: PriceSpec, loc: Loc) -> list[Problem]:
    token = {"input_per_mtok": price.input_per_mtok, "output_per_mtok": price.output_per_mtok}
    gpu = {"gpu_hour": price.gpu_hour, "tokens_per_second": price.tokens_per_second}
    extras = (price.cached_input_per_mtok, price.cache_write_per_mtok, price.thinking_output_per_mtok)
    has_token = any(v is not None for v in (*token.values(), *extras))
    if price.tiers is None and (price.audio_input_per_mtok is not None or price.audio_output_per_mtok is not None):
        has_token = True  # audio token prices (which apply to every tier) come with text token prices
    if not has_token and price.tiers is None and all(v is None for v in gpu.values()) and (
        price.per_second is not None or price.per_mchar is not None
    ):
        return []  # a transcription or speech deployment's price: per second of audio, per million characters
    if price.per_image is not None and not has_token and price.tiers is None and price.gpu_hour is None:
        return [Problem((*loc, "per_image"), "give at least one price")] if price.per_image == {} else []
    if price.tiers is not None:
        if has_token or any(v is not None for v in gpu.values()):
            return [Problem((*loc, "tiers"), "give the prices inside tiers, not beside them")]
        return _check_tiers(price, (*loc, "tiers"))
    if has_token and any(v is not None for v in gpu.values()):
        return [Problem(loc, "give either input_per_mtok/output_per_mtok or gpu_hour/tokens_per_second, not both")]
    group = token if has_token else gpu
    if all(v is None for v in group.values()):
        return [Problem(loc, "give input_per_mtok and output_per_mtok, tiers, or gpu_hour and tokens_per_second")]
    given = " and ".join(k for k, v in group.items() if v is not None) or "a cache, thinking or audio price"
    return [Problem((*loc, k), f"required with {given}") for k, v in group.items() if v is None]


def _check_tiers(price: PriceSpec, loc: Loc) -> list[Problem]:
    tiers = price.tiers or []
    if not tiers:
        return [Problem(loc, "give at least one tier")]
    problems: list[Problem] = []
    last_bound = 0
    for index, tier in enumerate(tiers):
        bound = tier.max_input_tokens
        if bound is None and index != len(tiers) - 1:
            problems.append(Problem((*loc, index, "max_input_tokens"), "only the last tier may leave it out"))
        elif bound is not None and bound <= last_bound:
            problems.append(Problem((*loc, index, "max_input_tokens"), f"must be above the previous {last_bound}"))
        last_bound = bound or last_bound
    return problems


def _check_price_book(price: PriceSpec | list[PriceSpec], loc: Loc) -> list[Problem]:
    if not isinstance(price, list):
        return _check_price(price, loc)
    if not price:
        return [Problem(loc, "give at least one price entry")]
    problems: list[Problem] = []
    seen: set[date | None] = set()
    for index, entry in enumerate(price):
        problems += _check_price(entry, (*loc, index))
        if entry.effective_from in seen:
            what = entry.effective_from.isoformat() if entry.effective_from else "no effective_from"
            problems.append(Problem((*loc, index, "effective_from"), f"two entries with {what}"))
        seen.add(entry.effective_from)
    return problems


def _check_deployments(
    deployments: Mapping[str, DeploymentSpec], providers: frozenset[str], names: frozenset[str]
) -> list[Problem]:
    problems: list[Problem] = []
    for name, d in deployments.items():
        loc: Loc = ("deployments", name)
        if d.provider not in providers:
            problems.append(Problem((*loc, "provider"), f"unknown provider {d.provider!r}"))
        if d.price is not None:
            problems += _check_price_book(d.price, (*loc, "price"))
        if d.replaced_by is not None and (d.replaced_by not in names or d.replaced_by == name):
            problems.append(Problem((*loc, "replaced_by"), f"unknown deployment {d.replaced_by!r}"))
        if d.max_output_tokens and d.context_window and d.max_output_tokens > d.context_window:
            problems.append(Problem((*loc, "max_output_tokens"), "larger than context_window"))
        if d.image_api is not None and d.kind != "image":
            problems.append(Problem((*loc, "image_api"), "only used by `kind: image` deployments"))
    return problems


def _check_kinds(
    deployments: Mapping[str, DeploymentSpec], providers: Mapping[str, ProviderSpec],
    aliases: Mapping[str, AliasSpec],
) -> list[Problem]:
    """An alias serves one kind of request (chat, image, ...): its targets may not mix kinds, and a dashscope
    provider (Model Studio's native image API) serves image deployments only."""
    problems: list[Problem] = []
    for name, d in deployments.items():
        provider = providers.get(d.provider)
        if provider is not None and provider.type == "dashscope" and d.kind != "image":
            problems.append(Problem(("deployments", name, "kind"),
                                    f"provider {d.provider!r} is a dashscope provider: it serves `kind: image` only"))
    for name, a in aliases.items():
        kinds = {target: deployments[target].kind for target in a.targets if target in deployments}
        first = next(iter(kinds.values()), "chat")
        for index, target in enumerate(a.shadow.targets if a.shadow else ()):
            if target in deployments and deployments[target].kind != first:
                problems.append(Problem(("aliases", name, "shadow", "targets", index),
                                        f"deployment {target!r} is of kind {deployments[target].kind}, not {first}"))
        for index, target in enumerate(a.targets):
            if kinds.get(target, first) != first:
                problems.append(Problem(
                    ("aliases", name, "targets", index),
                    f"deployment {target!r} is of kind {kinds[target]}, the alias's first target of kind {first}: "
                    "an alias serves one kind of request",
                ))
    return problems


def _check_audio_providers(
    deployments: Mapping[str, DeploymentSpec], providers: Mapping[str, ProviderSpec]
) -> list[Problem]:
    """Transcription and speech are relayed to OpenAI-compatible servers; litellm's translation is chat-only here."""
    return [
        Problem(("deployments", name, "kind"), f"{d.kind} is served only by a provider of type openai")
        for name, d in deployments.items()
        if d.kind in ("transcription", "speech") and d.provider in providers and providers[d.provider].type != "openai"
    ]


def _check_aliases(aliases: Mapping[str, AliasSpec], deployments: frozenset[str]) -> list[Problem]:
    problems: list[Problem] = []
    for name, a in aliases.items():
        loc: Loc = ("aliases", name)
        if not a.targets:
            problems.append(Problem((*loc, "targets"), "an alias needs at least one target"))
        for index, target in enumerate(a.targets):
            if target not in deployments:
                problems.append(Problem((*loc, "targets", index), f"unknown deployment {target!r}"))
            elif target in a.targets[:index]:
                problems.append(Problem((*loc, "targets", index), f"deployment {target!r} is listed twice"))
        weighted = a.strategy is Strategy.WEIGHTED
        if weighted and a.weights is None:
            problems.append(Problem((*loc, "weights"), "required when strategy is weighted (one per target)"))
        elif weighted and a.weights is not None and len(a.weights) != len(a.targets):
            problems.append(Problem((*loc, "weights"), f"{len(a.weights)} weights for {len(a.targets)} targets"))
        elif not weighted and a.weights is not None:
            problems.append(Problem((*loc, "weights"), "only used with strategy weighted"))
        problems += _check_spill_tiers(a, loc)
        if a.shadow is not None:
            for index, target in enumerate(a.shadow.targets):
                if target not in deployments:
                    problems.append(Problem((*loc, "shadow", "targets", index), f"unknown deployment {target!r}"))
            if not a.shadow.targets:
                problems.append(Problem((*loc, "shadow", "targets"), "shadowing needs at least one target"))
    return problems


def _check_spill_tiers(a: AliasSpec, loc: Loc) -> list[Problem]:
    """Explicit spill-over tiers list every target once; the marks keep `low` under `high` (else it would flap)."""
    problems: list[Problem] = []
    if a.tiers is not None:
        seen: list[str] = [t for tier in a.tiers for t in tier]
        for index, tier in enumerate(a.tiers):
            if not tier:
                problems.append(Problem((*loc, "tiers", index), "a tier needs at least one target"))
            for target in tier:
                if target not in a.targets:
                    problems.append(Problem((*loc, "tiers", index), f"{target!r} is not one of the alias's targets"))
                elif seen.count(target) > 1:
                    problems.append(Problem((*loc, "tiers", index), f"{target!r} is in more than one tier"))
        missing = [t for t in a.targets if t not in seen]
        if missing:
            problems.append(Problem((*loc, "tiers"), f"targets in no tier: {', '.join(missing)}"))
    s = a.spillover
    if s is not None:
        for key in ("queue", "kv"):
            high, low = getattr(s.high, key), getattr(s.low, key)
            if high is not None and low is not None and low > high:
                problems.append(Problem((*loc, "spillover", "low", key), f"{low} is above high.{key} {high}"))
    return problems


def _unknown(values: list[str] | None, known: frozenset[str], what: str, loc: Loc) -> list[Problem]:
    return [Problem((*loc, i), f"unknown {what} {v!r}") for i, v in enumerate(values or ()) if v not in known]


def _check_rules(rules: Mapping[int, RuleSpec], names: Mapping[str, frozenset[str]]) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, rule in rules.items():
        loc: Loc = ("rules", index)
        if not _NAME.match(rule.name):
            problems.append(Problem((*loc, "name"), _NAME_RULE))
        elif rule.name in seen:
            problems.append(Problem((*loc, "name"), f"duplicate rule name {rule.name!r}"))
        seen.add(rule.name)
        if rule.require is None and rule.route is None:
            problems.append(Problem(loc, "a rule needs `require`, `route` or both"))
        if rule.route is not None and rule.route not in names["aliases"]:
            problems.append(Problem((*loc, "route"), f"unknown alias {rule.route!r}"))
        when = rule.when
        for key in ("data_class", "tenant", "alias", "tags"):
            if getattr(when, key) == []:
                problems.append(Problem((*loc, "when", key), "an empty list never matches; leave the key out"))
        problems += _unknown(when.alias, names["aliases"], "alias", (*loc, "when", "alias"))
        if when.prompt_tokens is not None and not when.prompt_tokens.model_fields_set:
            problems.append(Problem((*loc, "when", "prompt_tokens"), "give at least one of gt, gte, lt, lte"))
        if rule.require is not None:
            req: Loc = (*loc, "require")
            if not rule.require.model_fields_set:
                problems.append(Problem(req, "empty; give at least one constraint"))
            for key in ("jurisdiction", "vendor", "deployments"):
                if getattr(rule.require, key) == []:
                    problems.append(Problem((*req, key), "an empty list excludes every deployment"))
            problems += _unknown(rule.require.deployments, names["deployments"], "deployment", (*req, "deployments"))
    return problems


def _check_fallback(fallback: FallbackSpec) -> list[Problem]:
    problems: list[Problem] = []
    if fallback.retries.backoff > fallback.retries.max_backoff:
        problems.append(Problem(("fallback", "retries", "max_backoff"), "shorter than backoff"))
    for key in ("connect", "first_token"):
        if getattr(fallback.timeouts, key) > fallback.timeouts.total:
            problems.append(Problem(("fallback", "timeouts", key), "longer than total"))
    return problems


def _check_tenants(tenants: Mapping[str, TenantSpec], aliases: frozenset[str]) -> list[Problem]:
    problems: list[Problem] = []
    owners: dict[str, str] = {}
    anonymous: str | None = None
    for name, tenant in tenants.items():
        loc: Loc = ("tenants", name)
        problems += _unknown(tenant.models, aliases, "alias", (*loc, "models"))
        if not tenant.api_keys and not tenant.anonymous:
            problems.append(Problem((*loc, "api_keys"), "a tenant needs at least one key, or `anonymous: true`"))
        seen: set[str] = set()
        for index, entry in enumerate(tenant.api_keys):
            try:
                digest = key_hash(entry)
            except ValueError as exc:
                problems.append(Problem((*loc, "api_keys", index), str(exc)))
                continue
            owner = owners.setdefault(digest, name)
            if owner != name or digest in seen:  # never echo the key itself
                message = f"the same key is already given to tenant {owner!r}"
                problems.append(Problem((*loc, "api_keys", index), message))
            seen.add(digest)
        if tenant.anonymous and anonymous is not None:
            problems.append(Problem((*loc, "anonymous"), f"only one tenant may be anonymous; {anonymous!r} already is"))
        elif tenant.anonymous:
            anonymous = name
    return problems
