"""Recorded routing facts put back through the routing engine, once per distinct fact."""

from __future__ import annotations

from dataclasses import dataclass, replace

from gateway.errors import PolyrouteError
from gateway.policy.engine import decide, exclusion_reason, matches
from gateway.policy.plan import HealthSnapshot, RequestFacts
from gateway.policy.table import Alias, Deployment, PolicyTable, Rule
from gateway.state.base import RoutingFactRow

# No open circuits, no saturation: what the rules allow, not what happened to be up. A fixed draw makes a weighted
# alias replay to its heaviest eligible target every time, so that two runs of a report agree.
REPLAY_HEALTH = HealthSnapshot(random_seed=0.5)


def request_facts(row: RoutingFactRow) -> RequestFacts:
    """The facts routing saw, as recorded (the tenant's allowed models are not: a drill asks where, not whether)."""
    return RequestFacts(
        alias=row.alias,
        tenant=row.tenant,
        endpoint=row.endpoint,
        stream=row.stream,
        data_class=row.data_class,
        tags=frozenset(row.tags),
        prompt_tokens=row.prompt_tokens,
        max_output_tokens=row.max_output_tokens,
        needs=frozenset(row.needs),
    )


@dataclass(frozen=True)
class Replayed:
    """Where the engine would send a request now: its eligible deployments in order, or why none may serve it."""

    eligible: tuple[Deployment, ...]
    refused_by: str | None = None  # the rules or checks that excluded every target, when none is eligible


class Replayer:
    """Decides each distinct fact once against one policy table (identical facts are common)."""

    def __init__(self, table: PolicyTable) -> None:
        self.table = table
        self._seen: dict[RequestFacts, Replayed] = {}

    def replay(self, row: RoutingFactRow) -> Replayed:
        facts = request_facts(row)
        found = self._seen.get(facts)
        if found is None:
            found = self._seen[facts] = self._decide(facts)
        return found

    def _decide(self, facts: RequestFacts) -> Replayed:
        try:
            plan = decide(facts, self.table, REPLAY_HEALTH)
        except PolyrouteError as err:
            return Replayed((), self._causes(facts) or err.message)
        return Replayed(plan.attempts)

    def _causes(self, facts: RequestFacts) -> str | None:
        """Why no target is eligible, by rule or check name, from the engine's own `matches`/`exclusion_reason`."""
        alias = self.table.aliases.get(facts.alias)
        if alias is None:
            return "alias not in the policy"
        applied: list[Rule] = [rule for rule in self.table.rules if matches(rule.when, facts)]
        routed = next((r.route for r in applied if r.route is not None), None)  # as decide: the first route wins
        targets = self.table.aliases[routed].targets if routed is not None else alias.targets
        if not targets:
            return "no target left"
        causes = set()
        for name in targets:
            reason = exclusion_reason(self.table.deployments[name], facts, applied, REPLAY_HEALTH)
            if reason is not None:
                causes.add(reason.split(" (", 1)[0])
        return ", ".join(sorted(causes)) or None


def without_vendor(table: PolicyTable, vendor: str) -> PolicyTable:
    """The policy as if `vendor` were gone: its deployments removed from every alias (and from nothing else)."""
    gone = {name for name, d in table.deployments.items() if d.provider.vendor == vendor}
    aliases: dict[str, Alias] = {}
    for name, alias in table.aliases.items():
        kept = [(t, w) for t, w in zip(alias.targets, alias.weights or [1.0] * len(alias.targets), strict=True)
                if t not in gone]
        aliases[name] = replace(
            alias,
            targets=tuple(t for t, _ in kept),
            weights=tuple(w for _, w in kept) if alias.weights else (),
        )
    return replace(table, aliases=aliases)
