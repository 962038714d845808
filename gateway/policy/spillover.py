"""Strategy `spillover`: tiers in order from the alias's active tier, and affinity with bounded load inside a tier."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.policy.plan import AliasLoad, EngineLoad, HealthSnapshot, LoadSnapshot, RequestFacts
from gateway.policy.table import Alias, Deployment, LoadMark, Spillover


@dataclass(frozen=True)
class SpillChoice:
    """The order to try, the tier the first attempt is in, and whether affinity held."""

    ordered: list[Deployment]
    tier: int
    saturated: bool  # every tier this request may use is above `high` (the alias's on_saturation applies)
    affinity_hit: bool | None  # None: no affinity key, or the first tier has one deployment only


def load_of(name: str, health: HealthSnapshot, load: LoadSnapshot) -> float:
    """A deployment's load as one number: the engine's waiting + running requests, else polyroute's in-flight."""
    engine = load.engines.get(name)
    if engine is None or engine.source == "inflight":
        return float(health.inflight.get(name, 0))
    return engine.queue + engine.running


def above(mark: LoadMark, loads: Sequence[EngineLoad]) -> bool:
    """A tier is above a mark when its waiting requests per replica, or its mean KV-cache use, is."""
    if not loads:
        return False
    queue = sum(e.queue for e in loads) / len(loads)
    kvs = [e.kv for e in loads if e.kv is not None]
    return queue > mark.queue or (bool(kvs) and sum(kvs) / len(kvs) > mark.kv)


def spill_order(
    alias: Alias, eligible: Sequence[Deployment], facts: RequestFacts, health: HealthSnapshot, load: LoadSnapshot
) -> SpillChoice:
    """The first open tier (the active one or later, or an earlier one under `low`), then the later tiers, then the
    earlier ones (the last resort if a later tier fails)."""
    state = load.aliases.get(alias.name, AliasLoad())
    by_name = {d.name: d for d in eligible}
    tiers = [[by_name[n] for n in tier if n in by_name] for tier in alias.tiers]
    usable = [i for i, tier in enumerate(tiers) if tier]
    # While spilled, an earlier tier still takes a new request whenever it is under `low`: the own GPUs stay full and
    # only the overflow goes on (the alias comes back as a whole after `dwell` under `low`).
    open_tiers = [i for i in usable if i >= state.active_tier or i in state.roomy]
    earlier = [i for i in usable if i < state.active_tier]
    calm = [i for i in earlier if i not in state.saturated]
    # A request that may not use the active tier (a pii request while the alias spilled to the cloud) stays on an
    # earlier tier unless that tier is above `high` too.
    start = open_tiers[0] if open_tiers else (calm[0] if calm else (earlier[0] if earlier else 0))
    ordering = [start, *(i for i in usable if i > start), *(i for i in usable if i < start)]
    ordered: list[Deployment] = []
    hit: bool | None = None
    spill = alias.spillover or Spillover()
    session = facts.affinity_key() if any(len(tiers[i]) > 1 for i in ordering) else None
    for index in ordering:
        placed, tier_hit = place(tiers[index], session, health, load, spill.balance)
        if index == start:
            hit = tier_hit
        ordered += placed
    saturated = not open_tiers and not calm and bool(earlier)
    return SpillChoice(ordered=ordered, tier=start, saturated=saturated, affinity_hit=hit)


def place(
    tier: list[Deployment], session: str | None, health: HealthSnapshot, load: LoadSnapshot, balance: float
) -> tuple[list[Deployment], bool | None]:
    """Order one tier: the session's consistent-hash choice first unless its load is over (1 + balance) x the
    average (bounded load), then the least loaded. Without a session: least loaded first, listed order on ties."""
    loads = {d.name: load_of(d.name, health, load) for d in tier}
    by_load = sorted(tier, key=lambda d: loads[d.name])
    if session is None or len(tier) < 2:
        return by_load, None
    # Rendezvous hashing: a replica that leaves moves only its own sessions; the others keep theirs.
    ranked = sorted(tier, key=lambda d: _weight(session, d.name), reverse=True)
    cap = math.ceil((1.0 + balance) * (sum(loads.values()) + 1) / len(tier))
    # A request never waits in an engine's queue for its cache while another replica has none waiting: a missed
    # prefix costs one prefill, a queue costs whole decodes.
    waiting = {d.name: _waiting(d.name, load) for d in tier}
    least_waiting = min(waiting.values())
    chosen = next(
        (d for d in ranked if loads[d.name] + 1 <= cap and waiting[d.name] <= least_waiting), by_load[0]
    )
    return [chosen, *(d for d in by_load if d is not chosen)], chosen is ranked[0]


def _waiting(name: str, load: LoadSnapshot) -> float:
    engine = load.engines.get(name)
    return 0.0 if engine is None or engine.source == "inflight" else engine.queue


def _weight(session: str, deployment: str) -> int:
    digest = hashlib.blake2b(f"{session}\0{deployment}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
