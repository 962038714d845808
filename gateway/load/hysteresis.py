"""Which tier a spill-over alias sends new requests to: up a tier above `high`, back after `dwell` under `low`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.policy.plan import AliasLoad, EngineLoad
from gateway.policy.spillover import above
from gateway.policy.table import Alias, Spillover


@dataclass
class TierHysteresis:
    """One alias's tier state. `step` is called on every tick of the load tracker (and of the bench simulation)."""

    active_tier: int = 0
    calm_since: float | None = None  # when the tier below the active one went under `low`

    def step(self, alias: Alias, engines: Mapping[str, EngineLoad], now: float) -> AliasLoad:
        """Move at most one tier; tiers without self-hosted load signals are never above a mark."""
        spill = alias.spillover or Spillover()
        loads = [[engines[n] for n in tier if n in engines] for tier in alias.tiers]
        saturated = frozenset(i for i, tier in enumerate(loads) if above(spill.high, tier))
        roomy = frozenset(i for i, tier in enumerate(loads) if tier and not above(spill.low, tier))
        if self.active_tier in saturated and self.active_tier < len(loads) - 1:
            self.active_tier += 1  # one tier per tick: the next tier gets a chance to absorb the overflow
            self.calm_since = None
        elif self.active_tier > 0:
            below = loads[self.active_tier - 1]
            if below and above(spill.low, below):
                self.calm_since = None
            elif self.calm_since is None:
                self.calm_since = now
            elif now - self.calm_since >= spill.dwell_s:
                self.active_tier -= 1
                self.calm_since = None
        return AliasLoad(active_tier=self.active_tier, saturated=saturated, roomy=roomy)
