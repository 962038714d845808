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
    """A deployment's load as one number: the engine's waiting + running requests and what polyroute sent since it
    read them, else polyroute's in-flight count."""
    engine = load.engines.get(name)
    if engine is None or engine.source == "inflight":
        return float(health.inflight.get(name, 0))
    return engine.queue + engine.running + load.sent.get(name, 0)


def waiting(name: str, health: HealthSnapshot, load: LoadSnapshot, *, joining: int = 0) -> float:
    """Requests waiting at a deployment's engine as far as polyroute can tell now, with `joining` more sent: the
    queue at the last read, plus what polyroute sent since that found no free slot (slots are learned; until they
    are, only sends behind a queue count). Without engine signals: polyroute's in-flight count, as the marks read it."""
    engine = load.engines.get(name)
    if engine is None:
        return 0.0
    if engine.source == "inflight":
        return float(health.inflight.get(name, 0) + joining)
    sent = load.sent.get(name, 0) + joining
    if engine.slots is None:
        return engine.queue + (sent if engine.queue > 0 else 0.0)
    return max(0.0, engine.queue + engine.running + sent - engine.slots)


def above(mark: LoadMark, loads: Sequence[EngineLoad]) -> bool:
    """A tier is above a mark when its waiting requests per replica, or its mean KV-cache use, is."""
    if not loads:
        return False
    queue = sum(e.queue for e in loads) / len(loads)
    return queue > mark.queue or _kv_above(mark, loads)


def above_with(mark: LoadMark, tier: Sequence[Deployment], health: HealthSnapshot, load: LoadSnapshot) -> bool:
    """`above` for one more request: the waiting requests counted with what polyroute sent since the engines were
    read (signals lag by up to a poll, and a burst arrives within one) and with this request, which waits too unless
    a replica has a free slot."""
    names = [d.name for d in tier if d.name in load.engines]
    if not names:
        return False
    now = {n: waiting(n, health, load) for n in names}
    joins = min(waiting(n, health, load, joining=1) - now[n] for n in names)
    queue = (sum(now.values()) + joins) / len(names)
    return queue > mark.queue or _kv_above(mark, [load.engines[n] for n in names])


def _kv_above(mark: LoadMark, loads: Sequence[EngineLoad]) -> bool:
    kvs = [e.kv for e in loads if e.kv is not None]
    return bool(kvs) and sum(kvs) / len(kvs) > mark.kv


def spill_order(
    alias: Alias, eligible: Sequence[Deployment], facts: RequestFacts, health: HealthSnapshot, load: LoadSnapshot
) -> SpillChoice:
    """The first open tier (the active one or later, or an earlier one with room), then the later tiers, then the
    earlier ones (the last resort if a later tier fails)."""
    state = load.aliases.get(alias.name, AliasLoad())
    spill = alias.spillover or Spillover()
    by_name = {d.name: d for d in eligible}
    tiers = [[by_name[n] for n in tier if n in by_name] for tier in alias.tiers]
    usable = [i for i, tier in enumerate(tiers) if tier]
    # While spilled, an earlier tier still takes a new request when it was under `low` at the last tick and one of
    # its replicas has a free slot now: the own GPUs stay full and only the overflow goes on, but no request is sent
    # to wait in a queue while the next tier would start it at once (the alias comes back as a whole after `dwell`).
    open_tiers = [
        i
        for i in usable
        if i >= state.active_tier
        or (i in state.roomy and any(waiting(d.name, health, load, joining=1) == 0 for d in tiers[i]))
    ]
    # A tier that this request would take above `high`, counting polyroute's own sends since the last read, passes
    # the request on at once: the next tick would see the queue it makes. The tier state itself only moves on the
    # tracker's ticks (hysteresis), so a burst within a poll is split between tiers instead of queued.
    clear = [i for i in open_tiers if not above_with(spill.high, tiers[i], health, load)]
    earlier = [i for i in usable if i < state.active_tier]
    calm = [i for i in earlier if i not in state.saturated]
    # A request that may not use the active tier (a pii request while the alias spilled to the cloud) stays on an
    # earlier tier unless that tier is above `high` too.
    start = (clear or open_tiers or calm or earlier or [0])[0]
    ordering = [start, *(i for i in usable if i > start), *(i for i in usable if i < start)]
    ordered: list[Deployment] = []
    hit: bool | None = None
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
    # A request never waits in an engine's queue for its cache while another replica would start it sooner: a missed
    # prefix costs one prefill, a queue costs whole decodes. Counted with polyroute's own sends since the last read.
    wait = {d.name: _engine_wait(d.name, health, load) for d in tier}
    least_waiting = min(wait.values())
    chosen = next((d for d in ranked if loads[d.name] + 1 <= cap and wait[d.name] <= least_waiting), by_load[0])
    return [chosen, *(d for d in by_load if d is not chosen)], chosen is ranked[0]


def _engine_wait(name: str, health: HealthSnapshot, load: LoadSnapshot) -> float:
    """How long a queue this request would join (engine signals only: without them, affinity alone decides)."""
    engine = load.engines.get(name)
    return 0.0 if engine is None or engine.source == "inflight" else waiting(name, health, load, joining=1)




def _weight(session: str, deployment: str) -> int:
    digest = hashlib.blake2b(f"{session}\0{deployment}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
