"""What the engine takes in (RequestFacts, HealthSnapshot) and gives back (RoutePlan with its decision trace)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from gateway.policy.table import Deployment, Timeouts


# One per request: a frozen dataclass costs several times as much to build. Hashable (replay keys on it); never
# changed once built.
@dataclass(slots=True, unsafe_hash=True)
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
    session: str | None = None  # affinity key the client named: `x-polyroute-session` or `metadata.session_id`
    images: int = 0  # an image request: how many images it asks for (`n`), and at which `<size>/<quality>`
    image_variant: str = ""
    # Else the leading messages' hash, computed only when a spill-over alias places the request.
    leading_key: Callable[[], str] | None = field(default=None, compare=False, hash=False, repr=False)

    def affinity_key(self) -> str | None:
        if self.session is not None or self.leading_key is None:
            return self.session
        return self.leading_key()


@dataclass(slots=True)  # one per request: a frozen dataclass costs several times as much to build
class HealthSnapshot:
    """What the engine may know about live deployments: open circuits, latency EWMA, in-flight, saturation."""

    open_circuits: frozenset[str] = frozenset()
    latency_ewma_s: dict[str, float] = field(default_factory=dict)
    inflight: dict[str, int] = field(default_factory=dict)
    saturated: frozenset[str] = frozenset()  # at their own rpm/tpm
    random_seed: float | None = None  # for weighted choice; None = draw one


@dataclass(frozen=True)
class EngineLoad:
    """One deployment's load as its engine reports it; `source` says where the numbers come from.

    `source` is the engine's name when its metrics were read within three polls, else `inflight` (polyroute's own
    in-flight count stands in: the engine has no metrics, did not answer, or its signal went stale).
    """

    queue: float = 0.0  # waiting requests
    running: float = 0.0
    kv: float | None = None  # KV-cache use, 0-1; None when unknown
    source: str = "inflight"
    age_s: float | None = None  # since the last good read; None when never read
    reason: str = ""  # with source `inflight`: why the engine's own numbers are not used
    # The engine's slots (requests it runs at once), learned from readings where requests waited; None until then.
    slots: float | None = None


@dataclass(frozen=True)
class AliasLoad:
    """A spill-over alias's tier state, kept by the load tracker with hysteresis (the engine only reads it)."""

    active_tier: int = 0  # new requests start at this tier
    saturated: frozenset[int] = frozenset()  # tiers above their `high` mark right now
    roomy: frozenset[int] = frozenset()  # tiers under their `low` mark right now: they take new requests while spilled


@dataclass(frozen=True)
class LoadSnapshot:
    """Engine load beside the health snapshot: per deployment, and the tier state of each spill-over alias."""

    engines: dict[str, EngineLoad] = field(default_factory=dict)
    aliases: dict[str, AliasLoad] = field(default_factory=dict)
    # Requests polyroute placed on each deployment since its engine was last read, which the engine's numbers do not
    # show until the next poll. The load tracker's own dict, counted at placement and zeroed at each good read.
    sent: dict[str, int] = field(default_factory=dict)


NO_LOAD = LoadSnapshot()


@dataclass(slots=True)  # one per request: a frozen dataclass costs several times as much to build
class Exclusion:
    deployment: str
    reason: str  # names the rule or the check that excluded it


@dataclass  # one per request: a frozen dataclass costs several times as much to build
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
    affinity_hit: bool | None = None  # spillover: the session's preferred deployment was chosen; None = no affinity

    @cached_property
    def trace(self) -> tuple[str, ...]:
        return self.explain()

    def render(self) -> str:
        return "\n".join(self.trace)
