"""Load a policy: read YAML (a file or a directory), expand `${VAR}`, validate, compile the frozen runtime table."""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from gateway.errors import PolicyError
from gateway.policy.checks import check_policy
from gateway.policy.describe import describe_policy
from gateway.policy.parse_spec import NAMED_SECTIONS, Loc, Problem, key_hash, parse_policy, version_problem
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

__all__ = ["CurrencyRates", "describe_policy", "load_policy", "load_policy_text"]


def load_policy(path: Path, env: Mapping[str, str], *, fx: CurrencyRates) -> PolicyTable:
    """Load a policy file, or every `*.yaml`/`*.yml` in a directory merged in name order; raise PolicyError."""
    source = str(path)
    documents: list[tuple[str | None, str]]
    try:
        if path.is_dir():
            files = sorted((p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()), key=str)
            if not files:
                raise PolicyError(["no *.yaml or *.yml files in this directory"], source)
            documents = [(p.name, p.read_text(encoding="utf-8")) for p in files]
        else:
            documents = [(None, path.read_text(encoding="utf-8"))]
    except OSError as exc:
        raise PolicyError([f"cannot read {exc.filename or path}: {exc.strerror}"], source) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError([f"not UTF-8 text ({exc.reason} at byte {exc.start})"], source) from exc
    return _load(documents, env, fx, source)


def load_policy_text(
    text: str, env: Mapping[str, str], *, fx: CurrencyRates, source: str = "<string>"
) -> PolicyTable:
    """Load a policy from YAML text; `source` names it in errors and in the table."""
    return _load([(None, text)], env, fx, source)


def _load(
    documents: list[tuple[str | None, str]], env: Mapping[str, str], fx: CurrencyRates, source: str
) -> PolicyTable:
    trees: list[tuple[str | None, object]] = []
    syntax: list[Problem] = []
    for name, text in documents:
        try:
            trees.append((name, yaml.load(text, Loader=_PolicyYamlLoader)))  # a SafeLoader: no arbitrary objects
        except yaml.YAMLError as exc:
            syntax.append(Problem((), _yaml_error(exc), name))
    if syntax:  # nothing else is worth reporting about a document we could not read
        raise PolicyError([p.render() for p in syntax], source)
    merged = _merge(trees)
    env_problems: list[Problem] = []
    tree = _expand(merged.tree, env, (), env_problems)
    parsed = parse_policy(tree)
    failed = [p.loc for p in env_problems]  # a value that could not be expanded has no other problem worth telling
    problems = env_problems + [p for p in check_policy(parsed) if not any(p.loc[: len(f)] == f for f in failed)]
    problems = merged.problems + [merged.locate(p) for p in problems]
    if problems:
        raise PolicyError([p.render() for p in problems], source)
    return _compile(parsed.spec, fx, source)


# --- YAML -------------------------------------------------------------------------------------------------------

_BOOL_TAG = "tag:yaml.org,2002:bool"


def _yaml12_resolvers() -> dict[Any, Any]:
    """YAML 1.1 reads `on`, `off`, `yes`, `no` as booleans (so `fallback: {on: [...]}` would get the key True and
    the jurisdiction `no` would be False); accept only true/false, as YAML 1.2 does."""
    resolvers = {
        first: [(tag, regexp) for tag, regexp in entries if tag != _BOOL_TAG]
        for first, entries in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    for first in "tTfF":
        resolvers.setdefault(first, []).append((_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")))
    return resolvers


class _PolicyYamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans that rejects duplicate keys instead of keeping the last one."""

    yaml_implicit_resolvers = _yaml12_resolvers()

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` keys may be overridden on purpose
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            if isinstance(key, Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_error(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        context = f" ({exc.context})" if exc.context else ""
        return f"YAML syntax error: {where}{exc.problem or 'cannot parse'}{context}"
    return f"YAML syntax error: {exc}"


# --- merging the files of a directory ---------------------------------------------------------------------------

@dataclass
class _Merged:
    """Several documents as one tree, remembering which file each entry came from (to name it in errors)."""

    tree: dict[str, object] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    origin: dict[tuple[str, ...], str | None] = field(default_factory=dict)
    rule_origin: list[tuple[str | None, int]] = field(default_factory=list)

    def locate(self, problem: Problem) -> Problem:
        loc = problem.loc
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int) and loc[1] < len(self.rule_origin):
            file, index = self.rule_origin[loc[1]]
            return Problem(("rules", index, *loc[2:]), problem.message, file)
        key = tuple(str(part) for part in loc[:2])
        file = self.origin.get(key, self.origin.get(key[:1]))
        return Problem(loc, problem.message, file)


def _merge(documents: list[tuple[str | None, object]]) -> _Merged:
    merged = _Merged()
    sections: dict[str, dict[str, object]] = {}
    rules: list[object] = []
    for file, doc in documents:
        if not isinstance(doc, dict):
            message = "a policy must be a YAML mapping with `version: 1` at the top"
            if doc is None:
                message = "the policy is empty; it needs at least `version: 1`"
            merged.problems.append(Problem((), message, file))
            continue
        version = version_problem(doc.get("version"))
        if version is not None:
            merged.problems.append(Problem(("version",), version, file))
        for raw_key, value in doc.items():
            key = str(raw_key)
            if key == "version" or value is None:
                continue
            if key in NAMED_SECTIONS and not isinstance(value, dict):
                merged.problems.append(Problem((key,), "expected a mapping of names to entries", file))
            elif key in NAMED_SECTIONS:
                section = sections.setdefault(key, {})
                for raw_name, entry in value.items():
                    name = str(raw_name)
                    if (key, name) in merged.origin:
                        first = merged.origin[(key, name)]
                        merged.problems.append(Problem((key, name), f"already defined in {first}", file))
                    else:
                        merged.origin[(key, name)], section[name] = file, entry
            elif key == "rules" and not isinstance(value, list):
                merged.problems.append(Problem((key,), "expected a list of rules", file))
            elif key == "rules":
                merged.rule_origin += [(file, index) for index in range(len(value))]
                rules += value
            elif (key,) in merged.origin:
                merged.problems.append(Problem((key,), f"already defined in {merged.origin[(key,)]}", file))
            else:
                merged.origin[(key,)] = file
                merged.tree[key] = value
    merged.tree.update(sections)
    if rules:
        merged.tree["rules"] = rules
    merged.tree["version"] = 1  # each document's own version was checked above
    return merged


# --- ${VAR} expansion -------------------------------------------------------------------------------------------

_REFERENCE = re.compile(r"\$(\$?)\{([^}]*)\}")
_NAME_AND_DEFAULT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$", re.DOTALL)


def _expand(node: object, env: Mapping[str, str], loc: Loc, problems: list[Problem]) -> object:
    """Expand `${VAR}` / `${VAR:-default}` in every string value (never in keys); `$${X}` is a literal `${X}`."""
    if isinstance(node, str):
        return _expand_string(node, env, loc, problems) if "$" in node else node
    if isinstance(node, dict):
        return {str(k): _expand(v, env, (*loc, str(k)), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, env, (*loc, i), problems) for i, v in enumerate(node)]
    return node


def _expand_string(value: str, env: Mapping[str, str], loc: Loc, problems: list[Problem]) -> str:
    def substitute(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(0)[1:]
        reference = _NAME_AND_DEFAULT.match(match.group(2))
        if reference is None:
            problems.append(Problem(loc, f"bad reference {match.group(0)!r}: use ${{NAME}} or ${{NAME:-default}}"))
            return ""
        name, default = reference.groups()
        found = env.get(name)
        if default is not None and not found:  # as in the shell, `:-` also replaces an empty value
            return default
        if found is None:
            problems.append(Problem(loc, f"environment variable {name} is not set"))
            return ""
        return found

    if "${" in _REFERENCE.sub("", value):
        problems.append(Problem(loc, "unclosed '${' (write ${NAME}, or $${ for a literal '${')"))
        return value
    return _REFERENCE.sub(substitute, value)


# --- compiling ----------------------------------------------------------------------------------------------------


def _compile(spec: PolicySpec, fx: CurrencyRates, source: str) -> PolicyTable:
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
