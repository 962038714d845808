"""What the engine takes in (RequestFacts, HealthSnapshot) and gives back (RoutePlan with its decision trace)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from gateway.policy.table import Deployment, Timeouts


@dataclass(frozen=True)
class RequestFacts:
    """The few facts about one request that routing needs, read once from the body and headers."""

    alias: str
    tenant: str
    endpoint: str = "chat"  # chat | completion | embedding
    stream: bool = False
    data_class: str | None = None
    tags: frozenset[str] = frozenset()
    prompt_tokens: int = 0  # estimate
    max_output_tokens: int | None = None
    needs: frozenset[str] = frozenset()  # capabilities the body uses: tools, vision
    allowed_aliases: frozenset[str] | None = None  # None = every alias


@dataclass(frozen=True)
class HealthSnapshot:
    """What the engine may know about live deployments: open circuits, latency EWMA, in-flight, saturation."""

    open_circuits: frozenset[str] = frozenset()
    latency_ewma_s: dict[str, float] = field(default_factory=dict)
    inflight: dict[str, int] = field(default_factory=dict)
    saturated: frozenset[str] = frozenset()  # at their own rpm/tpm
    random_seed: float | None = None  # for weighted choice; None = draw one


@dataclass(frozen=True)
class Exclusion:
    deployment: str
    reason: str  # names the rule or the check that excluded it


@dataclass(frozen=True)
class RoutePlan:
    """An ordered list of deployments to try, the rules that shaped it, and a human-readable trace.

    The trace is written only when someone reads it (explain, the demo): a proxied request never pays for its text.
    """

    alias: str
    route: str  # the rule that chose the target set, or "alias:<name>"
    attempts: tuple[Deployment, ...]
    excluded: tuple[Exclusion, ...]
    applied_rules: tuple[str, ...]
    strategy: str
    timeouts: Timeouts
    explain: Callable[[], tuple[str, ...]] = field(default=tuple, repr=False, compare=False)
    estimated_cost_usd: dict[str, float] = field(default_factory=dict)

    @cached_property
    def trace(self) -> tuple[str, ...]:
        return self.explain()

    def render(self) -> str:
        return "\n".join(self.trace)
