"""What a spill-over decision tells: the tier chosen and each target's load, and the error when every tier is full."""

from __future__ import annotations

from gateway.errors import SATURATED_CODE, LimitExceededError, PolyrouteError, TierSaturatedError
from gateway.policy.plan import AliasLoad, LoadSnapshot
from gateway.policy.spillover import SpillChoice
from gateway.policy.table import Alias, OnSaturation, Spillover


def saturation_error(alias: Alias, tier: int) -> PolyrouteError:
    """429 at once (`on_saturation: reject`) or a bounded wait then 503 (`queue`), both with Retry-After."""
    spill = alias.spillover or Spillover()
    message = (
        f"Every deployment this request may use for model '{alias.name}' is saturated (tier {tier} is above its "
        "spill-over mark and the rules keep this request off the next tier)."
    )
    if spill.on_saturation is OnSaturation.REJECT:
        return LimitExceededError(message, retry_after=1.0, code=SATURATED_CODE)
    return TierSaturatedError(message, alias=alias.name, tier=tier, max_wait_s=spill.max_wait_s)


def load_lines(alias: Alias, spill: SpillChoice, load: LoadSnapshot) -> list[str]:
    """`route explain` lines: the alias's tier state, each target's load and where it comes from, the tier chosen."""
    state = load.aliases.get(alias.name, AliasLoad())
    saturated = ",".join(str(t) for t in sorted(state.saturated)) or "none"
    roomy = ",".join(str(t) for t in sorted(state.roomy)) or "none"
    lines = [f"spillover: active tier {state.active_tier}, tiers above high: {saturated}, under low: {roomy}"]
    for index, tier in enumerate(alias.tiers):
        for name in tier:
            engine = load.engines.get(name)
            if engine is None or engine.source == "inflight":
                why = "no engine metrics" if engine is None or not engine.reason else engine.reason
                lines.append(f"  tier {index} {name}: load from polyroute's in-flight count ({why})")
            else:
                kv = "-" if engine.kv is None else f"{engine.kv:.2f}"
                slots = "unknown" if engine.slots is None else f"{engine.slots:g}"
                lines.append(
                    f"  tier {index} {name}: queue={engine.queue:g} running={engine.running:g} kv={kv}"
                    f" ({engine.source} metrics, {engine.age_s or 0.0:.2f}s old); slots {slots},"
                    f" {load.sent.get(name, 0)} placed since the read"
                )
    affinity = {None: "no affinity key", True: "hit", False: "miss (bounded load)"}[spill.affinity_hit]
    lines.append(f"spillover: request placed on tier {spill.tier}; affinity {affinity}")
    return lines
