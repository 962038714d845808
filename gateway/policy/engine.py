"""The routing engine: a pure function from request facts, policy table and health to a RoutePlan with its trace."""

from __future__ import annotations

from functools import partial

from gateway.error_classes import CONTEXT_LENGTH_EXCEEDED
from gateway.errors import (
    UNSUPPORTED_CAPABILITY,
    AllCircuitsOpenError,
    BadRequestError,
    NoEligibleTargetError,
    NotFoundError,
    PermissionDeniedError,
)
from gateway.policy.plan import NO_LOAD, Exclusion, HealthSnapshot, LoadSnapshot, RequestFacts, RoutePlan
from gateway.policy.spillover import SpillChoice, spill_order
from gateway.policy.strategies import estimated_cost, order
from gateway.policy.table import Alias, Condition, Deployment, PolicyTable, Requirement, Rule, Strategy
from gateway.policy.trace_load import load_lines, saturation_error

_RULE_REASON = "rule "
_WINDOW_REASON = "context window "
_CAPABILITY_REASON = "capabilities "
# The kind of alias each endpoint needs (RequestFacts.endpoint); every endpoint not named here needs `chat`.
ENDPOINT_KINDS = {"image": "image", "image_edit": "image", "transcription": "transcription", "speech": "speech"}


def decide(
    facts: RequestFacts, table: PolicyTable, health: HealthSnapshot, load: LoadSnapshot = NO_LOAD
) -> RoutePlan:
    """Resolve the alias, apply every matching rule's constraints, filter eligibility, then order by strategy."""
    alias = table.aliases.get(facts.alias)
    if alias is None:
        raise NotFoundError(
            f"The model '{facts.alias}' does not exist: it is not an alias in this gateway's policy.",
            param="model",
        )
    if facts.allowed_aliases is not None and facts.alias not in facts.allowed_aliases:
        raise PermissionDeniedError(
            f"Tenant '{facts.tenant}' may not use the model '{facts.alias}'.", param="model"
        )
    kind = ENDPOINT_KINDS.get(facts.endpoint, "chat")
    if alias.kind != kind:
        raise _kind_mismatch(alias, kind)
    applied: list[Rule] = []
    route_alias = alias
    route_name = f"alias:{alias.name}"
    for rule in table.rules:
        if not matches(rule.when, facts):
            continue
        applied.append(rule)
        # A rule routes only requests of its alias's kind (an image request never goes to a chat alias).
        if rule.route is not None and route_name.startswith("alias:") and table.aliases[rule.route].kind == kind:
            route_alias = table.aliases[rule.route]
            route_name = rule.name

    eligible: list[Deployment] = []
    excluded: list[Exclusion] = []
    for name in route_alias.targets:
        deployment = table.deployments[name]
        reason = exclusion_reason(deployment, facts, applied, health)
        if reason is None:
            eligible.append(deployment)
        else:
            excluded.append(Exclusion(name, reason))

    if not eligible:
        detail = "; ".join(f"{e.deployment}: excluded by {e.reason}" for e in excluded)
        if excluded and all(e.reason == "circuit open" for e in excluded):
            raise AllCircuitsOpenError(f"No target for model '{facts.alias}' is available: {detail}")
        too_small = _windows_too_small(excluded, table)
        if too_small:
            # The client can act on this one (compact or shorten the prompt): said as upstreams say it.
            err = NoEligibleTargetError(
                f"The prompt is too long for every target of model '{facts.alias}': {detail}",
                param="messages",
                code=CONTEXT_LENGTH_EXCEEDED,
            )
            err.context_window = max(too_small)
            raise err
        if excluded and all(e.reason.startswith(_CAPABILITY_REASON) for e in excluded):
            missing = _unsupported(facts.needs, route_alias, table)
            raise NoEligibleTargetError(
                f"no target of alias {route_alias.name} supports {', '.join(missing)} ({detail})",
                param="model",
                code=UNSUPPORTED_CAPABILITY,
            )
        raise NoEligibleTargetError(
            f"No deployment may serve this request for model '{facts.alias}': {detail}", param="model"
        )

    spill: SpillChoice | None = None
    if route_alias.strategy is Strategy.SPILLOVER:
        spill = spill_order(route_alias, eligible, facts, health, load)
        if spill.saturated:
            raise saturation_error(route_alias, spill.tier)
        ordered = spill.ordered
    else:
        ordered = order(route_alias, eligible, facts, health)
    costs = {d.name: c for d in ordered if (c := estimated_cost(d, facts)) is not None}
    return RoutePlan(
        alias=facts.alias,
        route=route_name,
        attempts=tuple(ordered),
        excluded=tuple(excluded),
        applied_rules=tuple(r.name for r in applied),
        strategy=route_alias.strategy.value,
        timeouts=table.fallback.timeouts,
        explain=partial(_trace, facts, tuple(applied), route_alias, tuple(excluded), tuple(ordered), spill, load),
        estimated_cost_usd=costs,
        affinity_hit=None if spill is None else spill.affinity_hit,
    )


def _unsupported(needs: frozenset[str], alias: Alias, table: PolicyTable) -> list[str]:
    """The capabilities the request needs that no target of the alias declares (else every one some target lacks)."""
    declared = [table.deployments[name].capabilities for name in alias.targets]
    nowhere = sorted(need for need in needs if not any(need in caps for caps in declared))
    return nowhere or sorted(need for need in needs if any(need not in caps for caps in declared))


def _kind_mismatch(alias: Alias, kind: str) -> BadRequestError:
    return BadRequestError(
        f"The model '{alias.name}' is an alias of kind {alias.kind}: it cannot serve {kind} requests. "
        f"Send {kind} requests to an alias of kind {kind}.",
        param="model", code="model_kind_mismatch",
    )


def _windows_too_small(excluded: list[Exclusion], table: PolicyTable) -> list[int]:
    """The context windows that refused the prompt, when nothing but a rule or a too small window excluded a target
    (a rule's exclusion holds whatever the prompt's length); empty otherwise."""
    windows: list[int] = []
    for e in excluded:
        window = table.deployments[e.deployment].context_window
        if e.reason.startswith(_WINDOW_REASON) and window is not None:
            windows.append(window)
        elif not e.reason.startswith(_RULE_REASON):
            return []
    return windows


def _trace(
    facts: RequestFacts,
    applied: tuple[Rule, ...],
    route_alias: Alias,
    excluded: tuple[Exclusion, ...],
    ordered: tuple[Deployment, ...],
    spill: SpillChoice | None = None,
    load: LoadSnapshot = NO_LOAD,
) -> tuple[str, ...]:
    """The decision as a human reads it, one line per step, from what `decide` kept of it."""
    trace = [
        f"request: alias={facts.alias} tenant={facts.tenant} endpoint={facts.endpoint} stream={facts.stream}"
        f" data_class={facts.data_class or '-'} tags={','.join(sorted(facts.tags)) or '-'}"
        f" prompt_tokens~{facts.prompt_tokens}"
    ]
    routed = False
    for rule in applied:
        if rule.route is not None and not routed:
            routed = True
            trace.append(f"rule {rule.name}: matched, routes to alias {rule.route}")
        else:
            trace.append(f"rule {rule.name}: matched, requires {describe_requirement(rule.require)}")
    if not applied:
        trace.append("rules: none matched")
    reasons = {e.deployment: e.reason for e in excluded}
    for name in route_alias.targets:
        reason = reasons.get(name)
        trace.append(f"target {name}: eligible" if reason is None else f"target {name}: excluded by {reason}")
    if spill is not None:
        trace += load_lines(route_alias, spill, load)
    trace.append(f"strategy {route_alias.strategy.value}: " + " > ".join(d.name for d in ordered))
    return tuple(trace)


def matches(when: Condition, facts: RequestFacts) -> bool:
    """A rule matches when every condition it states holds for the request."""
    if when.data_class is not None and facts.data_class not in when.data_class:
        return False
    if when.tenant is not None and facts.tenant not in when.tenant:
        return False
    if when.alias is not None and facts.alias not in when.alias:
        return False
    if when.tags_any is not None and not (when.tags_any & facts.tags):
        return False
    if when.prompt_tokens is not None and not when.prompt_tokens.contains(facts.prompt_tokens):
        return False
    return when.stream is None or when.stream == facts.stream


def exclusion_reason(
    deployment: Deployment, facts: RequestFacts, rules: list[Rule], health: HealthSnapshot
) -> str | None:
    """Why a deployment may not serve the request, naming the rule or check; None when it may."""
    for rule in rules:
        if rule.require is not None:
            unmet = unmet_requirement(rule.require, deployment)
            if unmet is not None:
                return f"{_RULE_REASON}{rule.name} ({unmet})"
    window = deployment.context_window
    needed = facts.prompt_tokens + (facts.max_output_tokens or 0)
    if window is not None and needed > window:
        return f"{_WINDOW_REASON}({window} tokens < ~{needed} needed)"
    if deployment.capabilities:
        missing = facts.needs - deployment.capabilities
        if missing:
            return f"{_CAPABILITY_REASON}(lacks {', '.join(sorted(missing))})"
    if deployment.name in health.open_circuits:
        return "circuit open"
    return None


def unmet_requirement(req: Requirement, deployment: Deployment) -> str | None:
    provider = deployment.provider
    if req.hosting is not None and provider.hosting is not req.hosting:
        return f"hosting {provider.hosting.value} is not {req.hosting.value}"
    if req.jurisdiction is not None and provider.jurisdiction not in req.jurisdiction:
        return f"jurisdiction {provider.jurisdiction} not in {sorted(req.jurisdiction)}"
    if provider.jurisdiction in req.jurisdiction_not:
        return f"jurisdiction {provider.jurisdiction} is excluded"
    if req.vendor is not None and provider.vendor not in req.vendor:
        return f"vendor {provider.vendor} not in {sorted(req.vendor)}"
    if provider.vendor in req.vendor_not:
        return f"vendor {provider.vendor} is excluded"
    if req.deployments is not None and deployment.name not in req.deployments:
        return "deployment not in the rule's list"
    if req.min_context_window is not None and (deployment.context_window or 0) < req.min_context_window:
        return f"context window {deployment.context_window} < {req.min_context_window}"
    return None


def describe_requirement(req: Requirement | None) -> str:
    if req is None:
        return "nothing"
    parts: list[str] = []
    if req.hosting is not None:
        parts.append(f"hosting={req.hosting.value}")
    if req.jurisdiction is not None:
        parts.append(f"jurisdiction in {sorted(req.jurisdiction)}")
    if req.jurisdiction_not:
        parts.append(f"jurisdiction not in {sorted(req.jurisdiction_not)}")
    if req.vendor is not None:
        parts.append(f"vendor in {sorted(req.vendor)}")
    if req.vendor_not:
        parts.append(f"vendor not in {sorted(req.vendor_not)}")
    if req.deployments is not None:
        parts.append(f"deployment in {sorted(req.deployments)}")
    if req.min_context_window is not None:
        parts.append(f"context_window>={req.min_context_window}")
    return ", ".join(parts) or "nothing"
